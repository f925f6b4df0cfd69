"""LDS files of the eMRTD application (ICAO Doc 9303 part 10): EF.COM, DG1, DG2 and the face record.

The DG2 face image is decoded in memory (OpenCV); its bytes are never written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from egate.drivers.chip.tlv import Tlv, TlvError, parse_one

EMRTD_AID = bytes.fromhex("A0000002471001")
EF_CARD_ACCESS = 0x011C
EF_COM = 0x011E
EF_SOD = 0x011D

# Data group number -> (file id, LDS tag) (9303-10 §4.6.1).
DATA_GROUPS: dict[int, tuple[int, int]] = {
    1: (0x0101, 0x61),
    2: (0x0102, 0x75),
    3: (0x0103, 0x63),
    4: (0x0104, 0x76),
    5: (0x0105, 0x65),
    7: (0x0107, 0x67),
    11: (0x010B, 0x6B),
    12: (0x010C, 0x6C),
    14: (0x010E, 0x6E),
    15: (0x010F, 0x6F),
}
TAG_TO_DG = {tag: dg for dg, (_fid, tag) in DATA_GROUPS.items()}

MAX_FILE_BYTES = 256 * 1024  # a DG2 with one face is ~10-30 KB; anything far larger is refused


class LdsError(ValueError):
    """An LDS file does not have the structure 9303 part 10 requires."""


@dataclass(frozen=True)
class EfCom:
    lds_version: str
    unicode_version: str
    data_groups: tuple[int, ...]


def parse_ef_com(data: bytes) -> EfCom:
    try:
        top, _ = parse_one(data)
        if top.tag != 0x60:
            raise LdsError("EF.COM does not start with tag 60")
        lds = top.find(0x5F01)
        uni = top.find(0x5F36)
        tags = top.require(0x5C).value
    except TlvError as exc:
        raise LdsError(f"EF.COM malformed: {exc}") from None
    groups = tuple(sorted({TAG_TO_DG[t] for t in tags if t in TAG_TO_DG}))
    return EfCom(
        lds.value.decode("ascii", "replace") if lds else "", uni.value.decode("ascii", "replace") if uni else "", groups
    )


def parse_dg1(data: bytes) -> str:
    """The MRZ as one string of its lines joined (44+44 for TD3, 30*3 for TD1, 36*2 for TD2)."""
    try:
        top, _ = parse_one(data)
        if top.tag != 0x61:
            raise LdsError("DG1 does not start with tag 61")
        mrz = top.require(0x5F1F).value
    except TlvError as exc:
        raise LdsError(f"DG1 malformed: {exc}") from None
    text = mrz.decode("ascii", "replace")
    if len(text) not in (88, 90, 72) or any(not (c.isalnum() or c == "<") for c in text):
        raise LdsError(f"DG1 MRZ has {len(text)} characters or characters outside the MRZ set")
    return text


def split_mrz_lines(mrz: str) -> list[str]:
    width = {88: 44, 90: 30, 72: 36}[len(mrz)]
    return [mrz[i : i + width] for i in range(0, len(mrz), width)]


@dataclass(frozen=True)
class FaceImage:
    """The DG2 portrait, decoded (BGR) in memory; `encoded` stays in memory too (for re-hashing only)."""

    image_type: str  # "jpeg" or "jpeg2000"
    width: int
    height: int
    pixels: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)


def _face_record_image(bdb: bytes) -> tuple[int, bytes, int, int]:
    """(image data type, image bytes, width, height) of the first face in an ISO/IEC 19794-5:2005 record."""
    if len(bdb) < 14 or bdb[:4] != b"FAC\x00":
        raise LdsError("biometric data block is not an ISO/IEC 19794-5 face record ('FAC\\0')")
    record_length = int.from_bytes(bdb[8:12], "big")
    faces = int.from_bytes(bdb[12:14], "big")
    if faces < 1 or record_length > len(bdb):
        raise LdsError("face record length or face count is wrong")
    pos = 14
    block_length = int.from_bytes(bdb[pos : pos + 4], "big")
    feature_points = int.from_bytes(bdb[pos + 4 : pos + 6], "big")
    pos += 20 + 8 * feature_points
    if pos + 12 > len(bdb) or block_length < 20 + 8 * feature_points + 12:
        raise LdsError("face information block truncated")
    data_type = bdb[pos + 1]
    width = int.from_bytes(bdb[pos + 2 : pos + 4], "big")
    height = int.from_bytes(bdb[pos + 4 : pos + 6], "big")
    pos += 12
    end = 14 + block_length
    if end > len(bdb):
        raise LdsError("face image runs past the record")
    return data_type, bdb[pos:end], width, height


def parse_dg2(data: bytes) -> FaceImage:
    """First face of DG2: 75 / 7F61 / 7F60 / 5F2E (or 7F2E) -> 19794-5 record -> decoded image."""
    try:
        top, _ = parse_one(data)
        if top.tag != 0x75:
            raise LdsError("DG2 does not start with tag 75")
        group = top.require(0x7F61)
        template = group.require(0x7F60)
        bdb_tlv: Tlv | None = template.find(0x5F2E) or template.find(0x7F2E)
        if bdb_tlv is None:
            raise LdsError("DG2 biometric template without a data block (5F2E/7F2E)")
    except TlvError as exc:
        raise LdsError(f"DG2 malformed: {exc}") from None
    data_type, image, width, height = _face_record_image(bdb_tlv.value)
    if data_type not in (0, 1):
        raise LdsError(f"face image data type {data_type} is neither JPEG (0) nor JPEG 2000 (1)")
    pixels = cv2.imdecode(np.frombuffer(image, dtype=np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise LdsError("face image does not decode")
    return FaceImage("jpeg" if data_type == 0 else "jpeg2000", width, height, pixels)
