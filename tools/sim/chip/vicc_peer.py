"""vsmartcard's virtual ePassport (`vicc -t ePass`) as an independent peer for our chip reader.

vicc's own card generator cannot run unattended (it prompts, and puts EF.SOD at the wrong file id),
so this launcher builds the ePassport file system from our test passport and runs vicc's ISO 7816
card OS and its BAC `PassportSAM` behind our vpcd connection. vicc's package is imported at run time
from the Debian install; nothing of it is copied here. Its BAC and secure messaging logic is kept,
only the methods that mix `str` and `bytes` under Python 3 are replaced:

- the unwrapping of protected commands and the TLV encoding inside it (every MAC came out wrong),
- the wrapping of responses (which also gains DO'99' and a MAC on warnings, as Doc 9303 requires),
- the session key seed XOR at EXTERNAL AUTHENTICATE (it crashed),
- the send sequence counter, which must stay 8 bytes wide in the MAC input (not its minimal length).

Run as a process: `python -m egate.tools.sim.chip.vicc_peer --port 35963 --csca-out csca.der`
prints `ready` once the card is in the reader and serves until SIGTERM/SIGINT (or, with
`--exit-on-stdin-eof`, until its stdin closes).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from egate.tools.sim.chip.passport import VirtualPassport, build_passport, make_pki, synthetic_face
from egate.tools.sim.chip.vpcd import VPCD_PORT, VpcdCard

# The directory Debian installs vicc's `virtualsmartcard` package into (it is not on sys.path).
VICC_SITE = "/usr/lib/python3/site-packages/virtualsmartcard"
LDS_AID = bytes.fromhex("A0000002471001")
SW_SM_INCORRECT = 0x6988
SW_OK = 0x9000


def vicc_available() -> bool:
    return Path(VICC_SITE, "virtualsmartcard", "cards", "ePass.py").is_file()


def _import_vicc() -> dict[str, Any]:
    """vicc's modules, from the Debian package (which is not on sys.path)."""
    if VICC_SITE not in sys.path:
        sys.path.append(VICC_SITE)
    import virtualsmartcard.CryptoUtils as crypto
    import virtualsmartcard.SmartcardFilesystem as fs
    from virtualsmartcard.cards.ePass import PassportSAM, ePass_SE
    from virtualsmartcard.SmartcardSAM import SAM
    from virtualsmartcard.SWutils import SW, SwError
    from virtualsmartcard.utils import C_APDU
    from virtualsmartcard.VirtualSmartcard import Iso7816OS

    return {
        "crypto": crypto,
        "fs": fs,
        "PassportSAM": PassportSAM,
        "ePass_SE": ePass_SE,
        "SAM": SAM,
        "SW": SW,
        "SwError": SwError,
        "C_APDU": C_APDU,
        "Iso7816OS": Iso7816OS,
    }


def _tlv(tag: int, value: bytes) -> bytes:
    """One BER-TLV object with a one-byte tag (all SM data objects have one)."""
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x100:
        length = bytes([0x81, n])
    else:
        length = bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + value


def _parse_objects(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, value, the object's encoding) for each one-byte-tag BER-TLV object in `data`."""
    objects = []
    i = 0
    while i < len(data):
        start = i
        tag = data[i]
        n = data[i + 1]
        i += 2
        if n & 0x80:
            width = n & 0x7F
            n = int.from_bytes(data[i : i + width], "big")
            i += width
        value = data[i : i + n]
        if len(value) != n:
            raise ValueError("truncated SM data object")
        i += n
        objects.append((tag, value, data[start:i]))
    return objects


def make_card_os(passport: VirtualPassport) -> Any:
    """vicc's Iso7816OS with an ePassport file system holding `passport`'s files and a BAC SAM."""
    v = _import_vicc()
    crypto, fs, SW, SwError = v["crypto"], v["fs"], v["SW"], v["SwError"]

    se_base: Any = v["ePass_SE"]
    sam_base: Any = v["PassportSAM"]

    class PassportSE(se_base):  # type: ignore[misc]
        ssc: int  # vicc keeps the send sequence counter as an int

        def compute_cryptographic_checksum(self, p1: int, p2: int, data: bytes) -> bytes:
            if p1 != 0x8E or p2 != 0x80:
                raise SwError(SW["ERR_INCORRECTP1P2"])
            self.ssc = (self.ssc + 1) % (1 << 64)
            mac_input = self.ssc.to_bytes(8, "big") + data
            return bytes(crypto.crypto_checksum(self.cct.algorithm, self.cct.key, mac_input, self.cct.iv))

        def _mac(self, data: bytes) -> bytes:
            return self.compute_cryptographic_checksum(0x8E, 0x80, crypto.append_padding(self.cct.blocklength, data))

        def parse_SM_CAPDU(self, capdu: Any, authenticate_header: int) -> Any:
            header = bytes([capdu.cla, capdu.ins, capdu.p1, capdu.p2])
            covered = crypto.append_padding(self.cct.blocklength, header) if authenticate_header else b""
            data = b""
            le: int | None = None
            mac: bytes | None = None
            for tag, value, encoded in _parse_objects(bytes(capdu.data)):
                if tag == 0x8E:
                    mac = value
                    continue
                if tag % 2 == 1:
                    covered += encoded
                if tag == 0x87:  # padding indicator + cryptogram
                    plain = self.decipher(tag, 0x80, value[1:])
                    data = crypto.strip_padding(self.ct.blocklength, plain, value[0])
                elif tag == 0x85:
                    data = crypto.strip_padding(self.ct.blocklength, self.decipher(tag, 0x80, value))
                elif tag == 0x97:
                    le = int.from_bytes(value, "big") or (65536 if len(value) > 1 else 256)
            if mac is None or self._mac(covered) != mac:
                raise SwError(SW["ERR_SECMESSOBJECTSINCORRECT"])
            plain_cla = capdu.cla & ~0x0C
            return v["C_APDU"](cla=plain_cla, ins=capdu.ins, p1=capdu.p1, p2=capdu.p2, le=le, data=bytes(data))

        def protect_response(self, sw: int, result: bytes) -> tuple[int, bytes]:
            body = b""
            if result:
                body += _tlv(0x87, b"\x01" + self.encipher(0x82, 0x80, bytes(result)))
            body += _tlv(0x99, sw.to_bytes(2, "big"))
            return sw, body + _tlv(0x8E, self._mac(body))

    class BacSAM(sam_base):  # type: ignore[misc]
        last_challenge: bytes | None  # set by vicc's GET CHALLENGE

        def __init__(self, mf: Any, mrz_information: bytes) -> None:
            # vicc's own constructor reads DG1 through a str path; the key seed only needs the MRZ
            # information (document number, birth, expiry, each with its check digit).
            v["SAM"].__init__(self, None, None, mf, default_se=PassportSE)
            self.KSeed = hashlib.sha1(mrz_information).digest()[:16]  # noqa: S324 - BAC's key seed is SHA-1 by design
            self.KEnc = self.derive_key(self.KSeed, 1)
            self.KMac = self.derive_key(self.KSeed, 2)

        def external_authenticate(self, p1: int, p2: int, resp_data: bytes) -> tuple[int, bytes]:
            rnd_icc = self.last_challenge
            if rnd_icc is None or len(resp_data) != 40:
                raise SwError(SW["ERR_SECMESSOBJECTSINCORRECT"])
            e_ifd, m_ifd = bytes(resp_data[:32]), bytes(resp_data[32:])
            if crypto.crypto_checksum("CC", self.KMac, crypto.append_padding(8, e_ifd)) != m_ifd:
                raise SwError(SW["ERR_SECMESSOBJECTSINCORRECT"])
            plain = crypto.decrypt("DES3-CBC", self.KEnc, e_ifd)
            if plain[8:16] != rnd_icc:
                raise SwError(SW["WARN_NOINFO63"])
            self.last_challenge = None
            rnd_ifd, k_ifd = plain[:8], plain[16:32]
            k_icc = os.urandom(16)
            e_icc = crypto.encrypt("DES3-CBC", self.KEnc, rnd_icc + rnd_ifd + k_icc)
            m_icc = crypto.crypto_checksum("CC", self.KMac, crypto.append_padding(8, e_icc))
            seed = bytes(a ^ b for a, b in zip(k_icc, k_ifd, strict=True))
            se = self.current_SE
            se.ct.key = self.derive_key(seed, 1)
            se.cct.key = self.derive_key(seed, 2)
            se.ssc = int.from_bytes(rnd_icc[-4:] + rnd_ifd[-4:], "big")
            return SW["NORMAL"], e_icc + m_icc

    mf = fs.MF()
    df = fs.DF(parent=mf, fid=4, dfname=LDS_AID, bertlv_data=[])
    for fid, content in sorted(passport.files.items()):
        df.append(fs.TransparentStructureEF(parent=df, fid=fid, filedescriptor=0, data=content))
    mf.append(df)
    sam = BacSAM(mf, passport.key.mrz_information().encode("ascii"))
    return v["Iso7816OS"](mf, sam, extended_length=True)


class ViccCard:
    """vicc's card OS seen through the interface our vpcd connection drives."""

    def __init__(self, card_os: Any) -> None:
        self._os = card_os

    def atr(self) -> bytes:
        return bytes(self._os.getATR())

    def reset(self) -> None:
        self._os.reset()

    def process(self, apdu: bytes) -> bytes:
        return bytes(self._os.execute(apdu))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=VPCD_PORT, help="vpcd's TCP port for the reader")
    parser.add_argument("--csca-out", type=Path, required=True, help="where to write the test CSCA (DER)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes (under a test)")
    args = parser.parse_args(argv)
    if not vicc_available():
        print(f"vicc is not installed under {VICC_SITE} (python3-virtualsmartcard)", file=sys.stderr)
        return 2
    pki = make_pki(datetime.now(timezone.utc))
    face, size = synthetic_face(20_000)
    passport = build_passport(pki, face, size, pace_parameter_id=None)
    card = ViccCard(make_card_os(passport))
    args.csca_out.write_bytes(pki.csca_der())
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if args.exit_on_stdin_eof:
        # A parent that dies without stopping us closes our stdin: leave with it, never linger.
        def wait_for_eof() -> None:
            sys.stdin.read()
            done.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
    with VpcdCard(card, port=args.port):
        print("ready", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
