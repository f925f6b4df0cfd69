"""Secure messaging of ICAO Doc 9303 part 11 §9.8: 3DES (after BAC) or AES (after PACE).

A protected command carries DO'87' (padding indicator 01 + cryptogram), DO'97' (Le) and DO'8E' (MAC
over the send sequence counter, the masked header and those objects); a protected response carries
DO'87', DO'99' (status) and DO'8E'. The SSC is incremented before every command and every response,
and kept at the cipher's block size (a counter that wraps inside 8 bytes must stay 8 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from egate.drivers.chip import crypto
from egate.drivers.chip.tlv import TlvError, encode, parse_all

SmCipher = Literal["3des", "aes"]


class SecureMessagingError(Exception):
    """A response's MAC or layout was wrong: the session is over (the chip drops its keys too)."""


@dataclass
class SecureMessaging:
    cipher: SmCipher
    ks_enc: bytes
    ks_mac: bytes
    ssc: int

    @property
    def block(self) -> int:
        return 8 if self.cipher == "3des" else 16

    def _ssc_bytes(self) -> bytes:
        return (self.ssc % (1 << (8 * self.block))).to_bytes(self.block, "big")

    def _increment(self) -> None:
        self.ssc = (self.ssc + 1) % (1 << (8 * self.block))

    def _mac(self, data: bytes) -> bytes:
        padded = crypto.pad(self._ssc_bytes() + data, self.block)
        if self.cipher == "3des":
            return crypto.retail_mac(self.ks_mac, padded)
        return crypto.aes_cmac(self.ks_mac, padded)[:8]

    def _encrypt(self, data: bytes) -> bytes:
        padded = crypto.pad(data, self.block)
        if self.cipher == "3des":
            return crypto.des3_cbc(self.ks_enc, padded)
        iv = crypto.aes_ecb(self.ks_enc, self._ssc_bytes())
        return crypto.aes_cbc(self.ks_enc, padded, iv=iv)

    def _decrypt(self, data: bytes) -> bytes:
        if len(data) % self.block:
            raise SecureMessagingError("cryptogram is not a whole number of blocks")
        if self.cipher == "3des":
            plain = crypto.des3_cbc(self.ks_enc, data, decrypt=True)
        else:
            iv = crypto.aes_ecb(self.ks_enc, self._ssc_bytes())
            plain = crypto.aes_cbc(self.ks_enc, data, decrypt=True, iv=iv)
        try:
            return crypto.unpad(plain)
        except ValueError:
            raise SecureMessagingError("bad padding inside DO'87'") from None

    def wrap(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """The protected APDU for a plain command (`le` 256 / 65536 mean 'as much as possible')."""
        header = bytes([cla | 0x0C, ins, p1, p2])
        self._increment()
        body = b""
        if data:
            body += encode(0x87, b"\x01" + self._encrypt(data))
        extended = le is not None and le > 256
        if le is not None:
            if extended:
                body += encode(0x97, (le % 65536).to_bytes(2, "big"))
            else:
                body += encode(0x97, bytes([le % 256]))
        mac = self._mac(crypto.pad(header, self.block) + body)
        body += encode(0x8E, mac)
        if extended or len(body) > 255:
            return header + b"\x00" + len(body).to_bytes(2, "big") + body + b"\x00\x00"
        return header + bytes([len(body)]) + body + b"\x00"

    def unwrap(self, response: bytes, sw: int) -> tuple[bytes, int]:
        """Check and decrypt a protected response; returns (plain data, status word)."""
        self._increment()
        if not response:
            # Errors of the SM layer itself (6987, 6988) come back unprotected: the channel is gone.
            if sw in (0x6987, 0x6988) or sw == 0x9000:
                raise SecureMessagingError(f"chip answered {sw:04X} without secure messaging")
            return b"", sw
        try:
            objects = parse_all(response)
        except TlvError as exc:
            raise SecureMessagingError(f"protected response is not TLV: {exc}") from None
        do87 = next((o for o in objects if o.tag == 0x87), None)
        do99 = next((o for o in objects if o.tag == 0x99), None)
        do8e = next((o for o in objects if o.tag == 0x8E), None)
        if do8e is None:
            raise SecureMessagingError("protected response without DO'8E'")
        covered = b""
        if do87 is not None:
            covered += encode(0x87, do87.value)
        if do99 is not None:
            covered += encode(0x99, do99.value)
        if self._mac(covered) != do8e.value:
            raise SecureMessagingError("response MAC does not verify")
        inner_sw = int.from_bytes(do99.value, "big") if do99 is not None and len(do99.value) == 2 else sw
        if do87 is None:
            return b"", inner_sw
        if not do87.value or do87.value[0] != 0x01:
            raise SecureMessagingError("DO'87' without padding indicator 01")
        return self._decrypt(do87.value[1:]), inner_sw
