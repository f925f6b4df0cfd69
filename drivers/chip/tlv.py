"""A small, bounded BER-TLV reader for LDS files and secure-messaging responses (ISO/IEC 7816-4 §5.2).

Every input comes from the chip, so nothing here trusts a length: a length that runs past the data,
an indefinite length, a tag longer than 3 bytes or nesting deeper than `MAX_DEPTH` raise `TlvError`.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 8


class TlvError(ValueError):
    """The chip's data is not well-formed BER-TLV."""


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes
    constructed: bool

    def children(self, depth: int = 1) -> list[Tlv]:
        if not self.constructed:
            raise TlvError(f"tag {self.tag:X} is primitive, it has no children")
        if depth > MAX_DEPTH:
            raise TlvError(f"TLV nesting deeper than {MAX_DEPTH}")
        return parse_all(self.value)

    def find(self, tag: int) -> Tlv | None:
        """First child with `tag` (one level down)."""
        for child in self.children():
            if child.tag == tag:
                return child
        return None

    def require(self, tag: int) -> Tlv:
        found = self.find(tag)
        if found is None:
            raise TlvError(f"tag {tag:X} missing inside {self.tag:X}")
        return found


def read_header(data: bytes, offset: int = 0) -> tuple[int, bool, int, int]:
    """(tag, constructed, value_length, value_offset) of the TLV at `offset`."""
    end = len(data)
    if offset >= end:
        raise TlvError("no TLV left to read")
    first = data[offset]
    constructed = bool(first & 0x20)
    tag = first
    pos = offset + 1
    if first & 0x1F == 0x1F:
        for count in range(3):
            if pos >= end:
                raise TlvError("tag runs past the end of the data")
            byte = data[pos]
            tag = (tag << 8) | byte
            pos += 1
            if not byte & 0x80:
                break
            if count == 2:
                raise TlvError("tag longer than 4 bytes")
    if pos >= end:
        raise TlvError("length missing")
    length = data[pos]
    pos += 1
    if length == 0x80:
        raise TlvError("indefinite length is not allowed in DER/LDS data")
    if length > 0x80:
        count = length & 0x7F
        if count > 4 or pos + count > end:
            raise TlvError("length field too long or truncated")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, constructed, length, pos


def parse_one(data: bytes, offset: int = 0) -> tuple[Tlv, int]:
    """The TLV at `offset` and the offset just after it."""
    tag, constructed, length, pos = read_header(data, offset)
    if pos + length > len(data):
        raise TlvError(f"tag {tag:X} claims {length} bytes, only {len(data) - pos} left")
    return Tlv(tag, bytes(data[pos : pos + length]), constructed), pos + length


def parse_all(data: bytes) -> list[Tlv]:
    items: list[Tlv] = []
    offset = 0
    while offset < len(data):
        # Padding between objects (00 or FF) is allowed by ISO 7816-4 and some chips use it.
        if data[offset] in (0x00, 0xFF):
            offset += 1
            continue
        item, offset = parse_one(data, offset)
        items.append(item)
    return items


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def encode(tag: int, value: bytes) -> bytes:
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big") + encode_length(len(value)) + value


def total_length(prefix: bytes) -> int:
    """Length of the whole TLV whose first bytes are `prefix` (to size a file read from its header)."""
    _tag, _constructed, length, pos = read_header(prefix)
    return pos + length
