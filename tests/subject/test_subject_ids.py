"""`egate ops gallery build` makes subject ids opaque by construction: keyed hashes of the labels ops know."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from egate.edge.gallery.payload import decode_gallery_payload
from egate.edge.lane.adapters import HashedSubjectLookup
from egate.edge.trust.bundles import split_envelope
from egate.tools.rig.lane import run_egate, write_enrolment_photos
from tests.support.rig import RIG

pytestmark = RIG

EGATE = [sys.executable, "-m", "egate.tools.cli"]
KEY = bytes(range(32))


def test_labels_become_the_keyed_ids_the_gates_look_up(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    labels = ("doc:UTO:X1234567", "Jane Roe")
    write_enrolment_photos(photos, subject_ids=labels)
    keys = json.loads(run_egate(["ops", "keys", "new", "--out", str(tmp_path / "keys"), "--json"]))
    (tmp_path / "subject.key").write_bytes(KEY)
    out = tmp_path / "g.egb"
    base = ["ops", "gallery", "build", "--photos", str(photos), "--out", str(out), "--key", keys["private_key"]]
    refused = subprocess.run([*EGATE, *base], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--subject-key" in refused.stderr  # no silent names-as-ids
    built = json.loads(run_egate([*base, "--subject-key", str(tmp_path / "subject.key"), "--json"]))
    assert built["subject_ids"] == "derived"
    raw = out.read_bytes()
    ids = decode_gallery_payload(memoryview(raw)[split_envelope(raw).payload_offset :]).subject_ids()
    lookup = HashedSubjectLookup(KEY, lambda: None)
    assert sorted(ids) == sorted([lookup.subject_for_document("X1234567", "UTO"), lookup.subject_for_label("Jane Roe")])
    assert b"X1234567" not in raw and b"Jane" not in raw
