"""Small parsers at their limits: nested gallery tags, BCBP size fields, one huge serial read."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from egate.drivers.document.bcbp import parse_bcbp
from egate.drivers.document.models import ReaderResult
from egate.drivers.document.serial_reader import SerialDocumentReader
from egate.edge.gallery.payload import GalleryPayloadMeta, SubjectEntry, encode_gallery_payload
from egate.edge.trust.bundles import BundleRejected, BundleScope, GalleryLayout, RejectCode, sign_bundle
from tests.support.gallery_fixtures import DIM, GATE, MODEL_ID, NOW, new_ops_key, trust_with, verifier_for

BCBP = "M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100"


def _nested_tags_bundle(key: object) -> bytes:
    templates = np.ones((1, DIM), np.float32) / np.sqrt(DIM)
    flights = [f"LH{i:04d}" + "X" * 26 for i in range(64)]
    lanes = [f"L{i:04d}" + "Y" * 27 for i in range(64)]
    subject = SubjectEntry("s-1", templates, flights=flights, lanes=lanes)
    payload = bytearray(encode_gallery_payload([subject], model_id=MODEL_ID, dim=DIM))
    meta_len = int.from_bytes(payload[4:8], "little")
    ref = GalleryPayloadMeta.model_validate_json(bytes(payload[8 : 8 + meta_len])).sections["tags"]
    depth = ref.length // 2
    payload[ref.offset : ref.offset + ref.length] = (b"[" * depth + b"]" * depth).ljust(ref.length)
    assert depth > 1000  # deeper than Python's recursion limit
    layout = GalleryLayout(model_id=MODEL_ID, dim=DIM, subject_count=1, template_count=1)
    return sign_bundle(
        kind="gallery",
        version=3,
        payload=bytes(payload),
        private_key=key.private,  # type: ignore[attr-defined]
        key_id=key.key_id,  # type: ignore[attr-defined]
        scope=BundleScope(site=GATE.site),
        issued_at=NOW,
        expires_at=NOW.replace(year=NOW.year + 1),
        gallery=layout,
    )


def test_deeply_nested_gallery_tags_are_malformed_not_a_crash(tmp_path: Path) -> None:
    key = new_ops_key()
    raw = _nested_tags_bundle(key)
    verifier = verifier_for(trust_with(tmp_path / "trust", key))
    with pytest.raises(BundleRejected) as info:
        verifier.verify(raw, NOW)
    assert info.value.code is RejectCode.MALFORMED and "tags" in info.value.message
    path = tmp_path / "nested.egb"
    path.write_bytes(raw)
    pub = tmp_path / "k.pub.json"
    pub.write_text(key.entry.model_dump_json())
    run = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "ops", "bundle", "inspect", str(path), "--pub", str(pub), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in run.stderr, run.stderr
    info_json = json.loads(run.stdout)
    assert "tags" in info_json["payload_error"]


@pytest.mark.parametrize("size", ["+0", "-0", " 0", "0 ", "-1", "0x", "_1", "g0"])
def test_bcbp_size_fields_take_exactly_two_hex_digits(size: str) -> None:
    text = BCBP[:-2] + size  # the first leg's variable-size field
    result = parse_bcbp(text)
    assert not result.valid
    assert any("variable_size" in e.field and "hexadecimal" in e.message for e in result.errors), result.errors


def test_bcbp_valid_size_still_parses() -> None:
    assert parse_bcbp(BCBP).valid


@pytest.mark.slow
def test_one_huge_serial_read_is_framed_in_bounded_memory() -> None:
    results: list[ReaderResult] = []
    reader = SerialDocumentReader("loop://", results.append, today=lambda: date(2026, 12, 1), max_line=1024)
    # 1 MiB in one read: short garbage lines, one overlong run, then a real boarding pass.
    flood = (b"junk\r" * 100_000) + b"Z" * 300_000 + b"\n" + BCBP.encode() + b"\r"
    reader._feed(flood, 0.0)
    assert len(reader._buffer) <= 1024
    kinds = [r.kind for r in results]
    assert kinds.count("bcbp") == 1 and results[-1].kind == "bcbp"
    assert "error" in kinds  # the overlong run is reported, not parsed
