"""The gallery payload inside a signed `gallery` bundle: templates of expected travellers.

Binary, so a gate loads a million templates without parsing them: a small JSON table of contents,
then raw little-endian sections at 64-byte aligned offsets that become numpy views without a copy.

    b"EGGP" | u32 LE meta_len | meta JSON (GalleryPayloadMeta) | zero pad to 64 | sections...

Sections (offsets relative to the payload start, each 64-byte aligned):
- `templates`        float32 LE, template_count x dim, row-major, rows grouped by subject in subject order
- `template_offsets` uint32 LE, subject_count + 1: subject i owns rows [off[i], off[i+1]) (>= 1 row)
- `subject_ids`      UTF-8, ids joined by b"\\n" (ids are opaque: no names, no document numbers)
- `valid_from`, `valid_until` (optional) int64 LE epoch seconds per subject; INT64_MIN/MAX = open
- `tags`             (optional) JSON {subject index: {"flights": [...], "lanes": [...]}}, sparse
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PAYLOAD_MAGIC = b"EGGP"
ALIGN = 64
MAX_META_BYTES = 1 << 20
SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}$"
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
OPEN_START = np.iinfo(np.int64).min
OPEN_END = np.iinfo(np.int64).max
_SUBJECT_ID_RE = re.compile(SUBJECT_ID_PATTERN)

SectionName = Literal["templates", "template_offsets", "subject_ids", "valid_from", "valid_until", "tags"]


class GalleryPayloadError(ValueError):
    """The gallery payload is malformed; the message names the part."""


class SectionRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = Field(..., ge=0, description="Byte offset from the payload start (64-aligned).")
    length: int = Field(..., ge=0, description="Byte length.")


class SubjectTags(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flights: list[str] = Field(default_factory=list, max_length=64, description="Flight tags (e.g. LH1234).")
    lanes: list[str] = Field(default_factory=list, max_length=64, description="Lane tags this subject may use.")


class GalleryPayloadMeta(BaseModel):
    """Table of contents of a gallery payload."""

    model_config = ConfigDict(extra="forbid")

    payload_version: Literal[1] = Field(1, description="Layout version of the gallery payload.")
    model_id: str = Field(..., min_length=1, max_length=200, description="Face model that made the templates.")
    dim: int = Field(..., ge=1, le=4096, description="Descriptor length.")
    dtype: Literal["float32"] = Field("float32", description="Template element type on the wire.")
    metric: Literal["euclidean"] = Field("euclidean", description="Distance the threshold applies to.")
    subject_count: int = Field(..., ge=0, description="Number of subjects.")
    template_count: int = Field(..., ge=0, description="Number of templates (>= subject_count).")
    sections: dict[SectionName, SectionRef] = Field(..., description="Where each section lies.")


@dataclass
class SubjectEntry:
    """One subject as ops builds it: an opaque id and one or more templates."""

    subject_id: str
    templates: np.ndarray
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    flights: list[str] = field(default_factory=list)
    lanes: list[str] = field(default_factory=list)


@dataclass
class DecodedGallery:
    """Views into a payload buffer (no copies); `subject_id(i)` decodes one id on demand."""

    meta: GalleryPayloadMeta
    templates: np.ndarray
    offsets: np.ndarray
    id_blob: np.ndarray
    id_ends: np.ndarray
    valid_from: np.ndarray | None
    valid_until: np.ndarray | None
    tags: dict[int, SubjectTags]

    def subject_id(self, index: int) -> str:
        start = 0 if index == 0 else int(self.id_ends[index - 1]) + 1
        return bytes(self.id_blob[start : int(self.id_ends[index])]).decode("utf-8")

    def subject_ids(self) -> list[str]:
        return bytes(self.id_blob).decode("utf-8").split("\n") if self.meta.subject_count else []


def _epoch(value: datetime | None, open_value: int) -> int:
    if value is None:
        return open_value
    if value.tzinfo is None:
        raise ValueError("subject validity times must be timezone-aware (timezone.utc)")
    return int(value.astimezone(timezone.utc).timestamp())


def encode_gallery_payload(subjects: Sequence[SubjectEntry], *, model_id: str, dim: int) -> bytes:
    """Build a gallery payload (ops side). Raises ValueError naming the subject that is wrong."""
    blocks: list[np.ndarray] = []
    offsets = [0]
    tags: dict[int, SubjectTags] = {}
    for index, subject in enumerate(subjects):
        block = np.asarray(subject.templates, dtype=np.float32)
        if block.ndim == 1:
            block = block[None, :]
        if block.ndim != 2 or block.shape[1] != dim or block.shape[0] < 1:
            raise ValueError(f"subject {subject.subject_id!r}: templates must be (n >= 1, {dim}), got {block.shape}")
        if not np.isfinite(block).all():
            raise ValueError(f"subject {subject.subject_id!r}: templates contain NaN or infinity")
        blocks.append(block)
        offsets.append(offsets[-1] + block.shape[0])
        for tag in [*subject.flights, *subject.lanes]:
            if not re.fullmatch(TAG_PATTERN, tag):
                raise ValueError(f"subject {subject.subject_id!r}: tag {tag!r} must match {TAG_PATTERN}")
        if subject.flights or subject.lanes:
            tags[index] = SubjectTags(flights=list(subject.flights), lanes=list(subject.lanes))
    windows = any(s.valid_from is not None or s.valid_until is not None for s in subjects)
    return encode_gallery_arrays(
        np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32),
        np.asarray(offsets, dtype=np.int64),
        [s.subject_id for s in subjects],
        model_id=model_id,
        valid_from=np.asarray([_epoch(s.valid_from, int(OPEN_START)) for s in subjects], np.int64) if windows else None,
        valid_until=np.asarray([_epoch(s.valid_until, int(OPEN_END)) for s in subjects], np.int64) if windows else None,
        tags=tags,
    )


def encode_gallery_arrays(
    templates: np.ndarray,
    offsets: np.ndarray,
    subject_ids: Sequence[str],
    *,
    model_id: str,
    valid_from: np.ndarray | None = None,
    valid_until: np.ndarray | None = None,
    tags: dict[int, SubjectTags] | None = None,
) -> bytes:
    """Vectorised form of `encode_gallery_payload` for large galleries (benchmarks, bulk tools)."""
    count = len(subject_ids)
    dim = int(templates.shape[1])
    if len(offsets) != count + 1:
        raise ValueError(f"offsets must have subject_count + 1 = {count + 1} entries, got {len(offsets)}")
    bad = next((i for i in subject_ids if not _SUBJECT_ID_RE.fullmatch(i)), None)
    if bad is not None:
        raise ValueError(f"subject id {bad!r} must match {SUBJECT_ID_PATTERN}")
    if len(set(subject_ids)) != count:
        raise ValueError("subject ids must be unique: merge the templates of a repeated subject")
    raw_sections: dict[str, bytes | memoryview] = {
        "templates": memoryview(np.ascontiguousarray(templates, dtype="<f4")).cast("B"),  # type: ignore[arg-type]
        "template_offsets": np.asarray(offsets, dtype="<u4").tobytes(),
        "subject_ids": "\n".join(subject_ids).encode("utf-8"),
    }
    if valid_from is not None and valid_until is not None:
        raw_sections["valid_from"] = np.asarray(valid_from, dtype="<i8").tobytes()
        raw_sections["valid_until"] = np.asarray(valid_until, dtype="<i8").tobytes()
    if tags:
        raw_sections["tags"] = json.dumps(
            {str(i): t.model_dump() for i, t in sorted(tags.items())}, sort_keys=True, separators=(",", ":")
        ).encode()

    # The table of contents holds the offsets, which depend on its own length: lay out with room
    # for the meta, double the room until the meta fits, then pad the meta to that room.
    def layout(meta_room: int) -> tuple[dict[str, SectionRef], int]:
        pos = _align(8 + meta_room)
        refs: dict[str, SectionRef] = {}
        for name, data in raw_sections.items():
            refs[name] = SectionRef(offset=pos, length=len(data))
            pos = _align(pos + len(data))
        return refs, pos

    room = 512
    while True:
        refs, total = layout(room)
        meta = GalleryPayloadMeta(
            model_id=model_id,
            dim=dim,
            subject_count=count,
            template_count=int(templates.shape[0]),
            sections=refs,  # type: ignore[arg-type]
        )
        meta_bytes = json.dumps(meta.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()
        if len(meta_bytes) <= room:
            break
        room *= 2
    out = bytearray(total)
    out[0:4] = PAYLOAD_MAGIC
    out[4:8] = struct.pack("<I", len(meta_bytes))
    out[8 : 8 + len(meta_bytes)] = meta_bytes
    for name, data in raw_sections.items():
        ref = refs[name]
        out[ref.offset : ref.offset + ref.length] = data
    return bytes(out)


def _align(value: int) -> int:
    return (value + ALIGN - 1) // ALIGN * ALIGN


def read_payload_meta(buf: memoryview | bytes) -> GalleryPayloadMeta:
    view = memoryview(buf)
    if len(view) < 8 or bytes(view[:4]) != PAYLOAD_MAGIC:
        raise GalleryPayloadError("gallery payload does not start with b'EGGP': not a gallery payload")
    (meta_len,) = struct.unpack("<I", view[4:8])
    if meta_len > MAX_META_BYTES or 8 + meta_len > len(view):
        raise GalleryPayloadError(f"gallery payload meta length {meta_len} is out of bounds")
    try:
        return GalleryPayloadMeta.model_validate_json(bytes(view[8 : 8 + meta_len]))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GalleryPayloadError(f"gallery payload meta invalid at {where}: {first['msg']}") from None


def decode_gallery_payload(buf: np.ndarray | bytes | memoryview, *, check_values: bool = True) -> DecodedGallery:
    """Views into `buf` (a uint8 array or bytes). `check_values` also checks every number and id.

    A payload just received is checked fully; one loaded from the gate's own authenticated
    (AES-GCM) store skips the O(n) value checks so a million templates load fast.
    """
    data = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8)
    meta = read_payload_meta(memoryview(data))  # type: ignore[arg-type]
    s, t, dim = meta.subject_count, meta.template_count, meta.dim
    expected = {
        "templates": t * dim * 4,
        "template_offsets": (s + 1) * 4,
        "valid_from": s * 8,
        "valid_until": s * 8,
    }
    for name in ("templates", "template_offsets", "subject_ids"):
        if name not in meta.sections:
            raise GalleryPayloadError(f"gallery payload lacks the {name!r} section")
    if ("valid_from" in meta.sections) != ("valid_until" in meta.sections):
        raise GalleryPayloadError("gallery payload must have both valid_from and valid_until, or neither")

    def section(name: str) -> np.ndarray:
        ref = meta.sections[name]  # type: ignore[index]
        if ref.offset % ALIGN or ref.offset + ref.length > len(data):
            raise GalleryPayloadError(f"gallery payload section {name!r} is misaligned or out of bounds")
        if name in expected and ref.length != expected[name]:
            raise GalleryPayloadError(
                f"gallery payload section {name!r} is {ref.length} bytes, expected {expected[name]}"
            )
        return data[ref.offset : ref.offset + ref.length]

    templates = section("templates").view("<f4").reshape(t, dim)
    offsets = section("template_offsets").view("<u4")
    id_blob = section("subject_ids")
    id_ends = np.flatnonzero(id_blob == ord("\n"))
    id_ends = np.append(id_ends, len(id_blob)) if s else id_ends
    if len(id_ends) != s or (s == 0 and len(id_blob)):
        raise GalleryPayloadError(f"gallery payload has {len(id_ends)} subject ids, expected {s}")
    if s == 0 and t:
        raise GalleryPayloadError("gallery payload has templates but no subjects")
    if s and (offsets[0] != 0 or offsets[-1] != t or np.any(np.diff(offsets.astype(np.int64)) < 1)):
        raise GalleryPayloadError(
            "gallery payload template_offsets must rise from 0 to template_count, >= 1 per subject"
        )
    valid_from = section("valid_from").view("<i8") if "valid_from" in meta.sections else None
    valid_until = section("valid_until").view("<i8") if "valid_until" in meta.sections else None
    tags: dict[int, SubjectTags] = {}
    if "tags" in meta.sections:
        try:
            raw_tags = json.loads(bytes(section("tags")))
            tags = {int(k): SubjectTags.model_validate(v) for k, v in raw_tags.items()}
        except (ValueError, TypeError, AttributeError, ValidationError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser's limit; malformed like any other bad tag.
            raise GalleryPayloadError(f"gallery payload tags section invalid: {str(exc)[:200]}") from None
        if any(not 0 <= k < s for k in tags):
            raise GalleryPayloadError("gallery payload tags name a subject index out of range")
    decoded = DecodedGallery(meta, templates, offsets, id_blob, id_ends, valid_from, valid_until, tags)
    if check_values:
        _check_values(decoded)
    return decoded


def _check_values(decoded: DecodedGallery) -> None:
    if not np.isfinite(decoded.templates).all():
        raise GalleryPayloadError("gallery payload templates contain NaN or infinity")
    try:
        ids = decoded.subject_ids()
    except UnicodeDecodeError:
        raise GalleryPayloadError("gallery payload subject ids are not UTF-8") from None
    if len(set(ids)) != len(ids):
        raise GalleryPayloadError("gallery payload subject ids are not unique")
    bad = next((i for i in ids if not _SUBJECT_ID_RE.fullmatch(i)), None)
    if bad is not None:
        raise GalleryPayloadError(f"gallery payload subject id {bad!r} must match {SUBJECT_ID_PATTERN}")
    if (
        decoded.valid_from is not None
        and decoded.valid_until is not None
        and np.any(decoded.valid_from >= decoded.valid_until)
    ):
        raise GalleryPayloadError("gallery payload has a subject whose valid_from is not before valid_until")
