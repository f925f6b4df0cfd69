"""Chip Authentication (ICAO Doc 9303 part 11 §6.2; BSI TR-03110 CA version 1 with AES): clone detection
with the chip's static key agreement key from DG14.

After Passive Authentication proved DG14, the reader sends an ephemeral public key on the chip's domain
parameters (MSE:Set AT, then GENERAL AUTHENTICATE with DO'80'), both sides derive new session keys
from ECDH(ephemeral, chip static) with the 9303-11 KDF, and secure messaging restarts with them and
SSC = 0. Only a chip holding the private key can answer the next protected command: a copied chip
(which cannot read its private key out of the original) fails there.

Only ECDH with AES (id-CA-ECDH-AES-CBC-CMAC-128/192/256) is done; DH and 3DES variants (which use
MSE:Set KAT) are reported as offered but not done. Curves may be named (secp256r1, brainpoolP256r1,
...) or given explicitly, as many passports do; every point is checked to lie on the curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from asn1crypto import keys as akeys

from egate.drivers.chip import crypto
from egate.drivers.chip.apdu import SW_OK, Channel
from egate.drivers.chip.ec import BRAINPOOL_P256R1, NIST_P256, Curve, PointError
from egate.drivers.chip.pace import KeySource, random_scalar
from egate.drivers.chip.sm import SecureMessaging
from egate.drivers.chip.tlv import TlvError, encode, parse_one

ID_CA_ECDH = bytes.fromhex("04007F000702020302")  # 0.4.0.127.0.7.2.2.3.2 (+ .1 3DES, .2/.3/.4 AES)
ID_PK_ECDH = bytes.fromhex("04007F000702020102")  # 0.4.0.127.0.7.2.2.1.2
AES_BY_SUFFIX: dict[int, Literal["aes128", "aes192", "aes256"]] = {2: "aes128", 3: "aes192", 4: "aes256"}
NAMED_CURVES: dict[str, Curve] = {"secp256r1": NIST_P256, "brainpoolp256r1": BRAINPOOL_P256R1}


class ChipAuthenticationError(Exception):
    """The chip did not complete Chip Authentication: a cloned chip is suspected."""


@dataclass(frozen=True)
class CaInfo:
    """ChipAuthenticationInfo (9303-11 §9.2.5)."""

    oid: bytes
    version: int
    key_id: int | None

    @property
    def supported(self) -> bool:
        return len(self.oid) == 10 and self.oid[:9] == ID_CA_ECDH and self.oid[9] in AES_BY_SUFFIX

    @property
    def cipher(self) -> Literal["aes128", "aes192", "aes256"]:
        return AES_BY_SUFFIX[self.oid[9]]


@dataclass(frozen=True)
class CaPublicKey:
    """ChipAuthenticationPublicKeyInfo (9303-11 §9.2.6) with an EC key."""

    curve: Curve
    point: tuple[int, int]
    key_id: int | None


@dataclass(frozen=True)
class Dg14:
    infos: tuple[CaInfo, ...]
    keys: tuple[CaPublicKey, ...]

    def choose(self) -> tuple[CaInfo, CaPublicKey] | None:
        """The first supported CA variant with its key (matched by keyId when the chip gives several)."""
        for info in self.infos:
            if not info.supported:
                continue
            for key in self.keys:
                if info.key_id is None or key.key_id is None or info.key_id == key.key_id:
                    return info, key
        return None

    @property
    def offered(self) -> bool:
        return bool(self.infos)


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _curve_of(spki: bytes) -> tuple[Curve, tuple[int, int]]:
    """The curve and point of an EC SubjectPublicKeyInfo, named or with explicit domain parameters."""
    try:
        info = akeys.PublicKeyInfo.load(spki)
        algorithm = info["algorithm"]
        if algorithm["algorithm"].native != "ec":
            raise ChipAuthenticationError(f"DG14 key is {algorithm['algorithm'].native}, not EC")
        params = algorithm["parameters"]
        if params.name == "named":
            name = params.chosen.native
            curve = NAMED_CURVES.get(str(name).lower())
            if curve is None:
                raise ChipAuthenticationError(f"DG14 key on curve {name}, not supported")
        elif params.name == "specified":
            spec = params.chosen
            p = int(spec["field_id"]["parameters"].native)
            a = _int(spec["curve"]["a"].native)
            b = _int(spec["curve"]["b"].native)
            base = bytes(spec["base"].native)
            size = (p.bit_length() + 7) // 8
            if len(base) != 1 + 2 * size or base[0] != 0x04:
                raise ChipAuthenticationError("DG14 explicit curve base point is not uncompressed")
            gx, gy = _int(base[1 : 1 + size]), _int(base[1 + size :])
            curve = Curve("explicit", p, a, b, gx, gy, int(spec["order"].native))
            if not curve.contains(curve.generator):
                raise ChipAuthenticationError("DG14 explicit curve base point is not on the curve")
        else:
            raise ChipAuthenticationError("DG14 key has implicit domain parameters")
        point = curve.decode(bytes(info["public_key"].native))
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto parse errors, PointError
        raise ChipAuthenticationError(f"DG14 public key does not parse: {exc}") from None
    return curve, point


def parse_dg14(data: bytes) -> Dg14:
    """ChipAuthenticationInfo and ChipAuthenticationPublicKeyInfo from DG14 (tag 6E, SET OF SecurityInfo);
    other SecurityInfos are ignored. Raises TlvError or ChipAuthenticationError when malformed."""
    outer, _end = parse_one(data)
    if outer.tag != 0x6E:
        raise TlvError("DG14 does not start with tag 6E")
    children = outer.children()
    if len(children) != 1 or children[0].tag != 0x31:
        raise TlvError("DG14 is not a SET OF SecurityInfo")
    security_infos = children[0]
    infos: list[CaInfo] = []
    keys: list[CaPublicKey] = []
    for item in security_infos.children():
        fields = item.children() if item.tag == 0x30 else []
        if len(fields) < 2 or fields[0].tag != 0x06:
            raise TlvError("SecurityInfo without protocol OID")
        oid = fields[0].value
        key_id = _int(fields[2].value) if len(fields) > 2 and fields[2].tag == 0x02 else None
        if oid.startswith(ID_CA_ECDH) or oid.startswith(bytes.fromhex("04007F000702020301")):  # ECDH or DH
            if fields[1].tag != 0x02:
                raise TlvError("ChipAuthenticationInfo version is not an INTEGER")
            infos.append(CaInfo(oid, _int(fields[1].value), key_id))
        elif oid == ID_PK_ECDH:
            raw = encode(0x30, fields[1].value) if fields[1].tag == 0x30 else b""
            curve, point = _curve_of(raw)
            keys.append(CaPublicKey(curve, point, key_id))
    return Dg14(tuple(infos), tuple(keys))


def perform_ca(
    channel: Channel, info: CaInfo, key: CaPublicKey, key_source: KeySource = random_scalar
) -> SecureMessaging:
    """Run CA within the current secure messaging; returns the new one (to install on `channel`)."""
    curve = key.curve
    sk = key_source(curve)
    pk = curve.encode(curve.multiply(sk, curve.generator))
    mse = encode(0x80, info.oid)
    key_id = info.key_id if info.key_id is not None else key.key_id
    if key_id is not None:  # several chip keys: name the one used (9303-11 §6.2.4.1)
        mse += encode(0x84, key_id.to_bytes(max(1, (key_id.bit_length() + 7) // 8), "big"))
    _data, sw = channel.command(0x00, 0x22, 0x41, 0xA4, mse)
    if sw != SW_OK:
        raise ChipAuthenticationError(f"MSE:Set AT for Chip Authentication refused with status {sw:04X}")
    _data, sw = channel.command(0x00, 0x86, 0x00, 0x00, encode(0x7C, encode(0x80, pk)), 256)
    if sw != SW_OK:
        raise ChipAuthenticationError(f"GENERAL AUTHENTICATE (Chip Authentication) refused with status {sw:04X}")
    try:
        shared = curve.multiply(sk, key.point)
    except PointError as exc:
        raise ChipAuthenticationError(str(exc)) from None
    if shared is None:
        raise ChipAuthenticationError("shared secret is the point at infinity")
    x = shared[0].to_bytes(curve.size, "big")
    return SecureMessaging("aes", crypto.kdf(x, "enc", info.cipher), crypto.kdf(x, "mac", info.cipher), 0)
