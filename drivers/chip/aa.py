"""Active Authentication (ICAO Doc 9303 part 11 §6.1): the chip signs a fresh challenge with the
private key whose public half is in DG15 (hashed in EF.SOD), which a copied chip cannot do.

ECDSA signatures come in the plain r||s format (BSI TR-03111); RSA uses ISO/IEC 9796-2 digital
signature scheme 1 (message recovery, trailer BC for SHA-1 or xxCC naming the hash).
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from egate.drivers.chip.access import RandomSource
from egate.drivers.chip.apdu import SW_OK, Channel
from egate.drivers.chip.lds import LdsError
from egate.drivers.chip.tlv import TlvError, parse_one

# ISO/IEC 10118-3 hash identifiers used in the 9796-2 trailer (xx CC).
_TRAILER_HASHES = {0x33: "sha1", 0x34: "sha256", 0x35: "sha512", 0x36: "sha384", 0x38: "sha224"}


class ActiveAuthenticationFailed(Exception):
    """The chip's answer to INTERNAL AUTHENTICATE does not verify with DG15's key: a clone or a fault."""


def parse_dg15(data: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    try:
        top, _ = parse_one(data)
        if top.tag != 0x6F:
            raise LdsError("DG15 does not start with tag 6F")
        key = serialization.load_der_public_key(top.value)
    except (TlvError, ValueError) as exc:
        raise LdsError(f"DG15 malformed: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise LdsError("DG15 key is neither RSA nor EC")
    return key


def _verify_rsa_9796_2(key: rsa.RSAPublicKey, signature: bytes, challenge: bytes) -> None:
    numbers = key.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    m = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(k, "big")
    if m[-1] == 0xBC:
        name, trailer = "sha1", 1
    elif m[-1] == 0xCC and m[-2] in _TRAILER_HASHES:
        name, trailer = _TRAILER_HASHES[m[-2]], 2
    else:
        raise ActiveAuthenticationFailed("ISO 9796-2 trailer not recognised")
    digest_size = hashlib.new(name).digest_size
    if m[0] & 0xC0 != 0x40 or not m[0] & 0x20:
        raise ActiveAuthenticationFailed("ISO 9796-2 header is not 'partial recovery' (6A)")
    m1 = m[1 : len(m) - trailer - digest_size]
    digest = m[len(m) - trailer - digest_size : len(m) - trailer]
    if hashlib.new(name, m1 + challenge).digest() != digest:
        raise ActiveAuthenticationFailed("ISO 9796-2 digest does not match the challenge")


def perform_aa(
    channel: Channel,
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    random: RandomSource = os.urandom,
) -> None:
    """INTERNAL AUTHENTICATE with an 8-byte challenge; raises ActiveAuthenticationFailed."""
    challenge = random(8)
    signature, sw = channel.command(0x00, 0x88, 0x00, 0x00, challenge, 256)
    if sw != SW_OK or not signature:
        raise ActiveAuthenticationFailed(f"INTERNAL AUTHENTICATE answered {sw:04X}")
    if isinstance(key, rsa.RSAPublicKey):
        _verify_rsa_9796_2(key, signature, challenge)
        return
    half = len(signature) // 2
    der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
    algorithm: hashes.HashAlgorithm = hashes.SHA256() if key.curve.key_size <= 256 else hashes.SHA384()
    try:
        key.verify(der, challenge, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise ActiveAuthenticationFailed("ECDSA signature over the challenge does not verify") from None
