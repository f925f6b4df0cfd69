"""The chip side of an eMRTD: file system, BAC, PACE-ECDH-GM and secure messaging (ICAO Doc 9303
parts 10 and 11), answering one command APDU at a time.

Written apart from the reader's code on purpose: the ciphers and MACs come from pycryptodome (the
reader uses `cryptography`), APDUs and data objects are parsed here on their own, and the test
suite checks this card against the ICAO worked examples, so reader and card are not one mirror.
Only the elliptic-curve point arithmetic is shared (it is itself checked against `cryptography`
and the worked example).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from Crypto.Cipher import AES, DES, DES3
from Crypto.Hash import CMAC

from egate.drivers.chip.ec import CURVES_BY_PARAMETER_ID, Curve, PointError
from egate.drivers.chip.lds import EF_CARD_ACCESS, EMRTD_AID

SW_OK = b"\x90\x00"
SW_EOF = b"\x62\x82"
SW_AUTH_FAILED = b"\x63\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_SECURITY = b"\x69\x82"
SW_CONDITIONS = b"\x69\x85"
SW_SM_WRONG = b"\x69\x88"
SW_NOT_FOUND = b"\x6a\x82"
SW_WRONG_P1P2 = b"\x6b\x00"
SW_INS = b"\x6d\x00"
SW_CLA = b"\x6e\x00"
SW_DATA = b"\x6a\x80"


# ---- byte helpers (kept local: this module must not lean on the reader's) -------------------------


def _pad(data: bytes, block: int) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % block)


def _unpad(data: bytes) -> bytes:
    i = len(data) - 1
    while i >= 0 and data[i] == 0:
        i -= 1
    if i < 0 or data[i] != 0x80:
        raise ValueError("padding")
    return data[:i]


def _tlv(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(2, "big") if tag > 0xFF else bytes([tag])
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = b"\x81" + bytes([n])
    else:
        length = b"\x82" + n.to_bytes(2, "big")
    return tag_bytes + length + value


def _objects(data: bytes) -> list[tuple[int, bytes]]:
    """Flat BER objects (tags of one or two bytes)."""
    out = []
    i = 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag & 0x1F == 0x1F:
            tag = (tag << 8) | data[i]
            i += 1
        n = data[i]
        i += 1
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(data[i : i + k], "big")
            i += k
        if i + n > len(data):
            raise ValueError("object runs past the data")
        out.append((tag, data[i : i + n]))
        i += n
    return out


def _retail_mac(key: bytes, data: bytes) -> bytes:
    state = DES.new(key[:8], DES.MODE_CBC, iv=bytes(8)).encrypt(data)[-8:]  # noqa: S304 - BAC's retail MAC is DES by definition
    state = DES.new(key[8:16], DES.MODE_ECB).decrypt(state)  # noqa: S304 - BAC's retail MAC is DES by definition
    return DES.new(key[:8], DES.MODE_ECB).encrypt(state)  # noqa: S304 - BAC's retail MAC is DES by definition


def _kdf(secret: bytes, counter: int, aes_bits: int | None) -> bytes:
    data = secret + counter.to_bytes(4, "big")
    if aes_bits is None or aes_bits == 128:
        return hashlib.sha1(data).digest()[:16]  # noqa: S324 - mandated by ICAO 9303-11 §9.7.1
    digest = hashlib.sha256(data).digest()
    return digest[: aes_bits // 8]


def _des3(key: bytes) -> bytes:
    return key[:16] + key[:8]


@dataclass
class _Sm:
    aes: bool
    ks_enc: bytes
    ks_mac: bytes
    ssc: int

    @property
    def block(self) -> int:
        return 16 if self.aes else 8

    def ssc_bytes(self) -> bytes:
        return (self.ssc % (1 << (8 * self.block))).to_bytes(self.block, "big")

    def bump(self) -> None:
        self.ssc = (self.ssc + 1) % (1 << (8 * self.block))

    def mac(self, data: bytes) -> bytes:
        padded = _pad(self.ssc_bytes() + data, self.block)
        if self.aes:
            return CMAC.new(self.ks_mac, padded, ciphermod=AES).digest()[:8]
        return _retail_mac(self.ks_mac, padded)

    def _iv(self) -> bytes:
        if self.aes:
            return AES.new(self.ks_enc, AES.MODE_ECB).encrypt(self.ssc_bytes())
        return bytes(8)

    def encrypt(self, data: bytes) -> bytes:
        padded = _pad(data, self.block)
        if self.aes:
            return AES.new(self.ks_enc, AES.MODE_CBC, iv=self._iv()).encrypt(padded)
        return DES3.new(_des3(self.ks_enc), DES3.MODE_CBC, iv=bytes(8)).encrypt(padded)

    def decrypt(self, data: bytes) -> bytes:
        if self.aes:
            return _unpad(AES.new(self.ks_enc, AES.MODE_CBC, iv=self._iv()).decrypt(data))
        return _unpad(DES3.new(_des3(self.ks_enc), DES3.MODE_CBC, iv=bytes(8)).decrypt(data))


@dataclass
class Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le; 0 in a short APDU means 256, in an extended one 65536
    extended: bool


def parse_command(apdu: bytes) -> Command:
    if len(apdu) < 4:
        raise ValueError("APDU shorter than its header")
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if not body:
        return Command(cla, ins, p1, p2, b"", None, False)
    if len(body) == 1:
        return Command(cla, ins, p1, p2, b"", body[0] or 256, False)
    if body[0] != 0:
        n = body[0]
        data = body[1 : 1 + n]
        rest = body[1 + n :]
        if len(data) != n or len(rest) > 1:
            raise ValueError("short APDU length mismatch")
        le = (rest[0] or 256) if rest else None
        return Command(cla, ins, p1, p2, data, le, False)
    # Extended length (ISO 7816-4 §5.1): 00 then 2-byte Lc and/or 2-byte Le.
    if len(body) == 3:
        return Command(cla, ins, p1, p2, b"", int.from_bytes(body[1:3], "big") or 65536, True)
    n = int.from_bytes(body[1:3], "big")
    data = body[3 : 3 + n]
    rest = body[3 + n :]
    if len(data) != n or len(rest) not in (0, 2):
        raise ValueError("extended APDU length mismatch")
    le = (int.from_bytes(rest, "big") or 65536) if rest else None
    return Command(cla, ins, p1, p2, data, le, True)


@dataclass
class CardSecrets:
    """Fixed 'random' values, so the card can replay a worked example; None means draw at random."""

    rnd_ic: bytes | None = None
    k_ic: bytes | None = None
    nonce: bytes | None = None
    sk_map: int | None = None
    sk_dh: int | None = None


@dataclass
class PassportCard:
    """One eMRTD chip. `mrz_information` is the key material (number, birth, expiry with checks)."""

    files: dict[int, bytes]
    mrz_information: str
    extended_length: bool = True
    secrets_: CardSecrets = field(default_factory=CardSecrets)
    # Called with every command before it runs; lets tests make the chip vanish or fall silent.
    before_command: Callable[[Command], None] | None = None
    # Active Authentication key (the private half of DG15's public key); None: no AA.
    aa_private_key: Any = None
    # Chip Authentication key (`cryptography` EC private key, the private half of DG14's key) and the
    # ChipAuthenticationInfo OID it answers to; None: no CA.
    ca_private_key: Any = None
    ca_oid: bytes | None = None
    # Counters visible to tests: failed authentications (a retry storm shows here).
    failed_authentications: int = 0
    _app: bool = False
    _file: int | None = None
    _sm: _Sm | None = None
    _challenge: bytes | None = None
    _pace: dict[str, object] = field(default_factory=dict)
    _ca_ready: bool = False
    _next_sm: _Sm | None = None

    def atr(self) -> bytes:
        """A contactless-style ATR whose historical bytes say whether extended Lc/Le work (tag 73)."""
        caps = bytes([0x00, 0x00, 0xC0 if self.extended_length else 0x80])
        hist = b"\x80" + bytes([0x73]) + caps
        t0 = 0x80 | len(hist)
        atr = bytes([0x3B, t0, 0x01]) + hist  # TD1 = 01: T=1 follows, no more interface bytes
        tck = 0
        for b in atr[1:]:
            tck ^= b
        return atr + bytes([tck])

    def reset(self) -> None:
        self._app = False
        self._file = None
        self._sm = None
        self._challenge = None
        self._pace = {}
        self._ca_ready = False
        self._next_sm = None

    # ---- keys -----------------------------------------------------------------------------------------

    def _bac_keys(self) -> tuple[bytes, bytes]:
        seed = hashlib.sha1(self.mrz_information.encode()).digest()[:16]  # noqa: S324 - ICAO 9303-11 §4.3.2
        return _kdf(seed, 1, None), _kdf(seed, 2, None)

    # ---- entry point ---------------------------------------------------------------------------------

    def process(self, apdu: bytes) -> bytes:
        try:
            cmd = parse_command(apdu)
        except ValueError:
            return SW_WRONG_LENGTH
        if self.before_command is not None:
            self.before_command(cmd)
        if cmd.cla & 0x0C == 0x0C:
            return self._secure(cmd)
        if self._sm is not None:
            # A plain command ends secure messaging (9303-11 §9.8.6).
            self._sm = None
            self._app = self._app and cmd.ins == 0xA4
        data, sw = self._dispatch(cmd, secured=False)
        return data + sw

    def _secure(self, cmd: Command) -> bytes:
        sm = self._sm
        if sm is None:
            return SW_SM_WRONG
        sm.bump()
        try:
            objects = _objects(cmd.data)
            do87 = next((v for t, v in objects if t == 0x87), None)
            do97 = next((v for t, v in objects if t == 0x97), None)
            do8e = next((v for t, v in objects if t == 0x8E), None)
            if do8e is None:
                raise ValueError("no MAC")
            header = _pad(bytes([cmd.cla, cmd.ins, cmd.p1, cmd.p2]), sm.block)
            covered = (
                header
                + (_tlv(0x87, do87) if do87 is not None else b"")
                + (_tlv(0x97, do97) if do97 is not None else b"")
            )
            if sm.mac(covered) != do8e:
                raise ValueError("MAC")
            data = sm.decrypt(do87[1:]) if do87 is not None else b""
        except (ValueError, IndexError, KeyError):
            self._sm = None
            return SW_SM_WRONG
        le = None
        if do97 is not None:
            le = int.from_bytes(do97, "big") or (256 if len(do97) == 1 else 65536)
        plain = Command(cmd.cla & ~0x0C & 0xFF, cmd.ins, cmd.p1, cmd.p2, data, le, do97 is not None and len(do97) == 2)
        out, sw = self._dispatch(plain, secured=True)
        sm.bump()
        body = b""
        if out:
            body += _tlv(0x87, b"\x01" + sm.encrypt(out))
        body += _tlv(0x99, sw)
        body += _tlv(0x8E, sm.mac(body))
        if self._next_sm is not None:
            # Chip Authentication: its answer still goes out under the old keys, then the new ones hold.
            self._sm, self._next_sm = self._next_sm, None
        return body + SW_OK

    def _dispatch(self, cmd: Command, *, secured: bool) -> tuple[bytes, bytes]:
        if cmd.cla not in (0x00, 0x10):
            return b"", SW_CLA
        handlers = {
            0xA4: self._select,
            0xB0: self._read_binary,
            0x84: self._get_challenge,
            0x82: self._external_authenticate,
            0x22: self._mse,
            0x86: self._general_authenticate,
            0x88: self._internal_authenticate,
        }
        handler = handlers.get(cmd.ins)
        if handler is None:
            return b"", SW_INS
        return handler(cmd, secured)

    # ---- files ---------------------------------------------------------------------------------------

    def _select(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if cmd.p1 == 0x04:
            if cmd.data != EMRTD_AID:
                return b"", SW_NOT_FOUND
            self._app = True
            self._file = None
            return b"", SW_OK
        if cmd.p1 == 0x00 and cmd.data in (b"", b"\x3f\x00"):
            self._app = False
            self._file = None
            return b"", SW_OK
        if cmd.p1 != 0x02 or len(cmd.data) != 2:
            return b"", SW_WRONG_P1P2
        fid = int.from_bytes(cmd.data, "big")
        if fid == EF_CARD_ACCESS and not self._app:
            if fid not in self.files:
                return b"", SW_NOT_FOUND
            self._file = fid
            return b"", SW_OK
        if not secured:
            return b"", SW_SECURITY
        if fid not in self.files or fid == EF_CARD_ACCESS:
            return b"", SW_NOT_FOUND
        self._file = fid
        return b"", SW_OK

    def _read_binary(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if self._file is None:
            return b"", SW_CONDITIONS
        if self._file != EF_CARD_ACCESS and not secured:
            return b"", SW_SECURITY
        if cmd.p1 & 0x80:
            return b"", SW_WRONG_P1P2  # short EF identifiers are not offered by this card
        if cmd.le is None:
            return b"", SW_WRONG_LENGTH
        if cmd.le > 256 and not self.extended_length:
            return b"", SW_WRONG_LENGTH
        content = self.files[self._file]
        offset = (cmd.p1 << 8) | cmd.p2
        if offset > len(content):
            return b"", SW_WRONG_P1P2
        chunk = content[offset : offset + cmd.le]
        return chunk, (SW_OK if len(chunk) == cmd.le else SW_EOF)

    # ---- Active Authentication (9303-11 §6.1) -------------------------------------------------------

    def _internal_authenticate(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if not secured or self.aa_private_key is None:
            return b"", SW_CONDITIONS
        if len(cmd.data) != 8:
            return b"", SW_DATA
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(self.aa_private_key.sign(cmd.data, ec.ECDSA(hashes.SHA256())))
        size = (self.aa_private_key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big"), SW_OK

    # ---- BAC (9303-11 §4.3) --------------------------------------------------------------------------

    def _get_challenge(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if cmd.le != 8:
            return b"", SW_WRONG_LENGTH
        self._challenge = self.secrets_.rnd_ic or os.urandom(8)
        return self._challenge, SW_OK

    def _external_authenticate(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        challenge, self._challenge = self._challenge, None
        if not self._app or challenge is None or len(cmd.data) != 40:
            return b"", SW_CONDITIONS
        k_enc, k_mac = self._bac_keys()
        if _retail_mac(k_mac, _pad(cmd.data[:32], 8)) != cmd.data[32:]:
            self.failed_authentications += 1
            return b"", SW_AUTH_FAILED
        plain = DES3.new(_des3(k_enc), DES3.MODE_CBC, iv=bytes(8)).decrypt(cmd.data[:32])
        rnd_ifd, echoed, k_ifd = plain[:8], plain[8:16], plain[16:32]
        if echoed != challenge:
            self.failed_authentications += 1
            return b"", SW_AUTH_FAILED
        k_ic = self.secrets_.k_ic or os.urandom(16)
        answer = DES3.new(_des3(k_enc), DES3.MODE_CBC, iv=bytes(8)).encrypt(challenge + rnd_ifd + k_ic)
        answer += _retail_mac(k_mac, _pad(answer, 8))
        seed = bytes(a ^ b for a, b in zip(k_ifd, k_ic, strict=True))
        self._sm = _Sm(
            False, _kdf(seed, 1, None), _kdf(seed, 2, None), int.from_bytes(challenge[4:] + rnd_ifd[4:], "big")
        )
        return answer, SW_OK

    # ---- PACE-ECDH-GM (9303-11 §4.4) -----------------------------------------------------------------

    def _pace_offer(self) -> tuple[bytes, int] | None:
        raw = self.files.get(EF_CARD_ACCESS)
        if raw is None:
            return None
        ((_, content),) = _objects(raw)
        ((_, info),) = _objects(content)
        fields = _objects(info)
        return fields[0][1], int.from_bytes(fields[2][1], "big")

    def _mse(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if cmd.p1 == 0x41 and cmd.p2 == 0xA4:
            return self._mse_ca(cmd, secured)
        offer = self._pace_offer()
        if cmd.p1 != 0xC1 or cmd.p2 != 0xA4 or offer is None:
            return b"", SW_WRONG_P1P2
        try:
            dos = dict(_objects(cmd.data))
        except ValueError:
            return b"", SW_DATA
        oid, param = offer
        if dos.get(0x80) != oid or dos.get(0x83) != b"\x01" or (0x84 in dos and dos[0x84] != bytes([param])):
            return b"", SW_DATA
        self._pace = {
            "step": 1,
            "oid": oid,
            "curve": CURVES_BY_PARAMETER_ID[param],
            "bits": {2: 128, 3: 192, 4: 256}[oid[-1]],
        }
        self._sm = None
        return b"", SW_OK

    # ---- Chip Authentication (9303-11 §6.2) ----------------------------------------------------------

    def _mse_ca(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if not secured or self.ca_private_key is None:
            return b"", SW_CONDITIONS
        try:
            dos = dict(_objects(cmd.data))
        except ValueError:
            return b"", SW_DATA
        if dos.get(0x80) != self.ca_oid:
            return b"", SW_DATA
        self._ca_ready = True
        return b"", SW_OK

    def _chip_authenticate(self, cmd: Command) -> tuple[bytes, bytes]:
        """Key agreement with `cryptography` (not the reader's EC code): ECDH(chip static, terminal ephemeral)."""
        from cryptography.hazmat.primitives.asymmetric import ec

        self._ca_ready = False
        try:
            ((tag, inner),) = _objects(cmd.data)
            dos = dict(_objects(inner)) if tag == 0x7C else {}
            terminal = ec.EllipticCurvePublicKey.from_encoded_point(self.ca_private_key.curve, dos[0x80])
        except (ValueError, KeyError):
            return b"", SW_DATA
        shared = self.ca_private_key.exchange(ec.ECDH(), terminal)
        bits = {2: 128, 3: 192, 4: 256}[self.ca_oid[-1]]  # type: ignore[index]
        self._next_sm = _Sm(True, _kdf(shared, 1, bits), _kdf(shared, 2, bits), 0)
        return _tlv(0x7C, b""), SW_OK

    def _general_authenticate(self, cmd: Command, secured: bool) -> tuple[bytes, bytes]:
        if self._ca_ready and secured:
            return self._chip_authenticate(cmd)
        st = self._pace
        if not st:
            return b"", SW_CONDITIONS
        try:
            ((tag, inner),) = _objects(cmd.data)
            if tag != 0x7C:
                raise ValueError("not 7C")
            dos = dict(_objects(inner))
        except ValueError:
            self._pace = {}
            return b"", SW_DATA
        curve: Curve = st["curve"]  # type: ignore[assignment]
        bits: int = st["bits"]  # type: ignore[assignment]
        step = st["step"]
        chained = cmd.cla == 0x10
        try:
            if step == 1 and chained and not dos:
                k = hashlib.sha1(self.mrz_information.encode()).digest()  # noqa: S324 - ICAO 9303-11 §4.4.1
                k_pi = _kdf(k, 3, bits)
                nonce = self.secrets_.nonce or os.urandom(16)
                st["s"] = int.from_bytes(nonce, "big")
                z = AES.new(k_pi, AES.MODE_CBC, iv=bytes(16)).encrypt(nonce)
                st["step"] = 2
                return _tlv(0x7C, _tlv(0x80, z)), SW_OK
            if step == 2 and chained and 0x81 in dos:
                pk_ifd = curve.decode(dos[0x81])
                sk = self.secrets_.sk_map or secrets.randbelow(curve.n - 1) + 1
                h = curve.multiply(sk, pk_ifd)
                g = curve.add(curve.multiply(st["s"], curve.generator), h)  # type: ignore[arg-type]
                st["g"] = g
                st["step"] = 3
                return _tlv(0x7C, _tlv(0x82, curve.encode(curve.multiply(sk, curve.generator)))), SW_OK
            if step == 3 and chained and 0x83 in dos:
                pk_ifd_raw = dos[0x83]
                pk_ifd = curve.decode(pk_ifd_raw)
                sk = self.secrets_.sk_dh or secrets.randbelow(curve.n - 1) + 1
                pk_ic_raw = curve.encode(curve.multiply(sk, st["g"]))  # type: ignore[arg-type]
                if pk_ic_raw == pk_ifd_raw:
                    raise PointError("terminal sent the chip's own key")
                shared = curve.multiply(sk, pk_ifd)
                if shared is None:
                    raise PointError("infinity")
                x = shared[0].to_bytes(curve.size, "big")
                st.update(step=4, pk_ifd=pk_ifd_raw, pk_ic=pk_ic_raw, enc=_kdf(x, 1, bits), mac=_kdf(x, 2, bits))
                return _tlv(0x7C, _tlv(0x84, pk_ic_raw)), SW_OK
            if step == 4 and not chained and 0x85 in dos:

                def token(public: bytes) -> bytes:
                    data = _tlv(0x7F49, _tlv(0x06, st["oid"]) + _tlv(0x86, public))  # type: ignore[arg-type]
                    return CMAC.new(st["mac"], data, ciphermod=AES).digest()[:8]  # type: ignore[arg-type]

                if dos[0x85] != token(st["pk_ic"]):  # type: ignore[arg-type]
                    self.failed_authentications += 1
                    self._pace = {}
                    return b"", SW_AUTH_FAILED
                self._sm = _Sm(True, st["enc"], st["mac"], 0)  # type: ignore[arg-type]
                self._pace = {}
                self._app = False
                return _tlv(0x7C, _tlv(0x86, token(st["pk_ifd"]))), SW_OK  # type: ignore[arg-type]
        except (PointError, ValueError):
            self._pace = {}
            return b"", SW_DATA
        self._pace = {}
        return b"", SW_CONDITIONS


class DirectTransport:
    """The reader's `Transport` straight onto a card object, without PC/SC (fuzzing, unit tests)."""

    def __init__(self, card: PassportCard) -> None:
        self.card = card

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        answer = self.card.process(apdu)
        return answer[:-2], int.from_bytes(answer[-2:], "big")

    def close(self) -> None:
        pass
