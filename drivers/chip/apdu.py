"""APDU layer: a transport that moves bytes to the card, and a channel that adds secure messaging,
SELECT and READ BINARY (ISO/IEC 7816-4), with counters for the benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from egate.drivers.chip.sm import SecureMessaging

SW_OK = 0x9000
SW_END_OF_FILE = 0x6282  # fewer bytes than Le: the file ended (ISO 7816-4 §5.6)
MAX_SHORT_OFFSET = 0x7FFF  # READ BINARY B0 addresses 15 bits


class ChipIOError(Exception):
    """The card could not be reached: removed, not answering, or no reader/pcscd."""


class CardStatusError(Exception):
    """The card answered a command with an error status word."""

    def __init__(self, what: str, sw: int) -> None:
        super().__init__(f"{what}: status {sw:04X}")
        self.sw = sw


class Transport(Protocol):
    """Moves one command APDU to the card and returns (response data, status word)."""

    def transmit(self, apdu: bytes) -> tuple[bytes, int]: ...

    def close(self) -> None: ...


@dataclass
class Counters:
    apdus: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    seconds: float = 0.0

    def snapshot(self) -> Counters:
        return Counters(self.apdus, self.bytes_out, self.bytes_in, self.seconds)

    def since(self, before: Counters) -> Counters:
        return Counters(
            self.apdus - before.apdus,
            self.bytes_out - before.bytes_out,
            self.bytes_in - before.bytes_in,
            self.seconds - before.seconds,
        )


def encode_apdu(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    """Short APDU when it fits, extended (ISO 7816-4 §5.1) when Lc > 255 or Le > 256."""
    header = bytes([cla, ins, p1, p2])
    extended = len(data) > 255 or (le is not None and le > 256)
    if not extended:
        out = header
        if data:
            out += bytes([len(data)]) + data
        if le is not None:
            out += bytes([le % 256])
        return out
    out = header + b"\x00"
    if data:
        out += len(data).to_bytes(2, "big") + data
    if le is not None:
        out += (le % 65536).to_bytes(2, "big")
    return out


@dataclass
class Channel:
    """Commands to the chip, protected once access control set `sm`."""

    transport: Transport
    sm: SecureMessaging | None = None
    counters: Counters = field(default_factory=Counters)

    def raw(self, apdu: bytes) -> tuple[bytes, int]:
        start = time.perf_counter()
        data, sw = self.transport.transmit(apdu)
        self.counters.apdus += 1
        self.counters.bytes_out += len(apdu)
        self.counters.bytes_in += len(data) + 2
        self.counters.seconds += time.perf_counter() - start
        return data, sw

    def command(
        self, cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None
    ) -> tuple[bytes, int]:
        if self.sm is None:
            return self.raw(encode_apdu(cla, ins, p1, p2, data, le))
        protected = self.sm.wrap(cla, ins, p1, p2, data, le)
        response, sw = self.raw(protected)
        return self.sm.unwrap(response, sw)

    def select_file(self, fid: int) -> None:
        _data, sw = self.command(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big"))
        if sw != SW_OK:
            raise CardStatusError(f"SELECT EF {fid:04X}", sw)

    def select_application(self, aid: bytes) -> None:
        _data, sw = self.command(0x00, 0xA4, 0x04, 0x0C, aid)
        if sw != SW_OK:
            raise CardStatusError(f"SELECT application {aid.hex().upper()}", sw)

    def read_binary(self, offset: int, length: int) -> bytes:
        if offset > MAX_SHORT_OFFSET:
            raise CardStatusError(f"READ BINARY offset {offset} beyond 32767 (odd INS B1 not used)", 0x6B00)
        data, sw = self.command(0x00, 0xB0, offset >> 8, offset & 0xFF, b"", length)
        if sw not in (SW_OK, SW_END_OF_FILE):
            raise CardStatusError(f"READ BINARY at {offset}", sw)
        return data
