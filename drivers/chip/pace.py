"""PACE with generic mapping on elliptic curves (ICAO Doc 9303 part 11 §4.4), MRZ password, AES SM.

Flow: MSE:Set AT, then four chained GENERAL AUTHENTICATE commands: encrypted nonce; mapping keys
(G' = s*G + H, H = SK_map * PK_map_other); ephemeral keys on G'; authentication tokens (CMAC over
the other side's public key data object 7F49).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from egate.drivers.chip import crypto
from egate.drivers.chip.access import ACCESS_DENIED_SW, AccessDenied, AccessKey
from egate.drivers.chip.apdu import SW_OK, Channel
from egate.drivers.chip.ec import CURVES_BY_PARAMETER_ID, Curve, PointError
from egate.drivers.chip.sm import SecureMessaging
from egate.drivers.chip.tlv import Tlv, TlvError, encode, parse_all, parse_one

ID_PACE = bytes.fromhex("04007F0007020204")  # 0.4.0.127.0.7.2.2.4
ECDH_GM = 0x02
AES_BY_SUFFIX: dict[int, Literal["aes128", "aes192", "aes256"]] = {2: "aes128", 3: "aes192", 4: "aes256"}


class PaceError(Exception):
    """PACE could not complete for a reason other than a wrong password (protocol or chip fault)."""


@dataclass(frozen=True)
class PaceInfo:
    """One PACEInfo of EF.CardAccess (9303-11 §9.2.1)."""

    oid: bytes
    version: int
    parameter_id: int | None

    @property
    def supported(self) -> bool:
        return (
            len(self.oid) == 10
            and self.oid[:8] == ID_PACE
            and self.oid[8] == ECDH_GM
            and self.oid[9] in AES_BY_SUFFIX
            and self.version == 2
            and self.parameter_id in CURVES_BY_PARAMETER_ID
        )

    @property
    def cipher(self) -> Literal["aes128", "aes192", "aes256"]:
        return AES_BY_SUFFIX[self.oid[9]]

    @property
    def curve(self) -> Curve:
        assert self.parameter_id is not None
        return CURVES_BY_PARAMETER_ID[self.parameter_id]


def parse_card_access(data: bytes) -> list[PaceInfo]:
    """Every PACEInfo in EF.CardAccess (other SecurityInfos are ignored); raises TlvError if malformed."""
    top, _end = parse_one(data)
    if top.tag != 0x31:
        raise TlvError("EF.CardAccess is not a SET OF SecurityInfo")
    infos: list[PaceInfo] = []
    for item in top.children():
        if item.tag != 0x30:
            raise TlvError("SecurityInfo is not a SEQUENCE")
        fields = item.children()
        if len(fields) < 2 or fields[0].tag != 0x06:
            raise TlvError("SecurityInfo without protocol OID")
        oid = fields[0].value
        if not oid.startswith(ID_PACE) or len(oid) != 10:
            continue
        if fields[1].tag != 0x02:
            raise TlvError("PACEInfo version is not an INTEGER")
        param = None
        if len(fields) > 2 and fields[2].tag == 0x02:
            param = int.from_bytes(fields[2].value, "big")
        infos.append(PaceInfo(oid, int.from_bytes(fields[1].value, "big"), param))
    return infos


def choose(infos: list[PaceInfo]) -> PaceInfo | None:
    """The first PACE variant this reader supports (the chip lists what it offers)."""
    return next((info for info in infos if info.supported), None)


def password_key(key: AccessKey, cipher: Literal["aes128", "aes192", "aes256"]) -> bytes:
    """K_pi = KDF_pi(SHA-1(MRZ information)) (9303-11 §4.4.1 and §9.7.3)."""
    return crypto.kdf(hashlib.sha1(key.mrz_information().encode("ascii")).digest(), "pace", cipher)  # noqa: S324 - ICAO 9303-11 mandates SHA-1 here


def auth_token(ks_mac: bytes, oid: bytes, curve: Curve, public: bytes) -> bytes:
    """T = MAC(KS_mac, public key data object of the other side) (9303-11 §4.4.3.4)."""
    del curve
    data = encode(0x7F49, encode(0x06, oid) + encode(0x86, public))
    return crypto.aes_cmac(ks_mac, data)[:8]


def map_generator(curve: Curve, nonce: int, sk_map: int, pk_map_other: tuple[int, int]) -> tuple[int, int]:
    """G' = s*G + H with H = SK_map * PK_map(other) (9303-11 §4.4.3.3.1)."""
    h = curve.multiply(sk_map, pk_map_other)
    mapped = curve.add(curve.multiply(nonce, curve.generator), h)
    if mapped is None:
        raise PaceError("mapped generator is the point at infinity")
    return mapped


def session_keys(shared_x: bytes, cipher: Literal["aes128", "aes192", "aes256"]) -> tuple[bytes, bytes]:
    return crypto.kdf(shared_x, "enc", cipher), crypto.kdf(shared_x, "mac", cipher)


KeySource = Callable[[Curve], int]


def random_scalar(curve: Curve) -> int:
    return secrets.randbelow(curve.n - 1) + 1


def _ga(channel: Channel, payload: bytes, last: bool, expect: int) -> bytes:
    cla = 0x00 if last else 0x10
    data, sw = channel.command(cla, 0x86, 0x00, 0x00, encode(0x7C, payload), 256)
    if sw in ACCESS_DENIED_SW:
        raise AccessDenied(f"PACE refused (status {sw:04X}): check the MRZ")
    if sw != SW_OK:
        raise PaceError(f"GENERAL AUTHENTICATE failed with status {sw:04X}")
    try:
        outer, _end = parse_one(data)
        if outer.tag != 0x7C:
            raise TlvError("dynamic authentication data is not tag 7C")
        inner: list[Tlv] = parse_all(outer.value)
    except TlvError as exc:
        raise PaceError(f"GENERAL AUTHENTICATE answer malformed: {exc}") from None
    found = next((t for t in inner if t.tag == expect), None)
    if found is None:
        raise PaceError(f"GENERAL AUTHENTICATE answer without tag {expect:02X}")
    return found.value


def perform_pace(
    channel: Channel, key: AccessKey, info: PaceInfo, key_source: KeySource = random_scalar
) -> SecureMessaging:
    """Run PACE-ECDH-GM with the MRZ password; returns the session's AES secure messaging."""
    curve = info.curve
    mse = encode(0x80, info.oid) + encode(0x83, b"\x01")
    if info.parameter_id is not None:
        mse += encode(0x84, bytes([info.parameter_id]))
    _data, sw = channel.command(0x00, 0x22, 0xC1, 0xA4, mse)
    if sw != SW_OK:
        raise PaceError(f"MSE:Set AT refused with status {sw:04X}")
    z = _ga(channel, b"", False, 0x80)
    if len(z) != 16:
        raise PaceError("encrypted nonce is not one AES block")
    k_pi = password_key(key, info.cipher)
    nonce = int.from_bytes(crypto.aes_cbc(k_pi, z, decrypt=True), "big")
    try:
        sk_map = key_source(curve)
        pk_map = curve.encode(curve.multiply(sk_map, curve.generator))
        pk_map_ic = curve.decode(_ga(channel, encode(0x81, pk_map), False, 0x82))
        mapped = map_generator(curve, nonce, sk_map, pk_map_ic)
        sk_dh = key_source(curve)
        pk_dh = curve.encode(curve.multiply(sk_dh, mapped))
        pk_dh_ic_raw = _ga(channel, encode(0x83, pk_dh), False, 0x84)
        pk_dh_ic = curve.decode(pk_dh_ic_raw)
        if pk_dh_ic_raw == pk_dh:
            raise PaceError("chip echoed the terminal's ephemeral key")
        shared = curve.multiply(sk_dh, pk_dh_ic)
    except PointError as exc:
        raise PaceError(f"chip sent a bad point: {exc}") from None
    if shared is None:
        raise PaceError("shared secret is the point at infinity")
    ks_enc, ks_mac = session_keys(shared[0].to_bytes(curve.size, "big"), info.cipher)
    t_ifd = auth_token(ks_mac, info.oid, curve, pk_dh_ic_raw)
    t_ic = _ga(channel, encode(0x85, t_ifd), True, 0x86)
    if t_ic != auth_token(ks_mac, info.oid, curve, pk_dh):
        # A wrong password gives a different generator, so the chip's token cannot match ours.
        raise AccessDenied("PACE chip token does not verify: check the MRZ")
    return SecureMessaging("aes", ks_enc, ks_mac, 0)
