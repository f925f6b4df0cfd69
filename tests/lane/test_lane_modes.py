"""Entry (1:1 document holder) and boarding (BCBP -> passenger -> 1:1) modes through the real daemon.

The document reader is a serial reader simulator on a PTY sending MRZ lines or BCBP text, as gate
readers do; the gallery's subject ids are derived from the document / boarding pass with the subject-id
key ops and the gate share (`HashedSubjectLookup`), so the gallery holds no document number or name.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest

from egate.drivers.document.bcbp import parse_bcbp
from egate.drivers.document.mrz import check_digit
from egate.edge.lane.adapters import HashedSubjectLookup
from egate.tools.rig.lane import GATE, SITE, LaneRig, OpsMaterial, prepare_ops
from egate.tools.sim.reader import ReaderSimulator
from tests.support.rig import GAP, LEAD_IN, RIG

pytestmark = RIG

SUBJECT_KEY = secrets.token_bytes(32)
LOOKUP = HashedSubjectLookup(SUBJECT_KEY, lambda: None)


def td3(number: str, surname: str, given: str, *, expiry: str = "310415", issuer: str = "UTO") -> list[str]:
    """A valid ICAO 9303 TD3 MRZ (check digits computed) for a test traveller."""
    name = f"{surname}<<{given}".replace(" ", "<")
    line1 = f"P<{issuer}{name}".ljust(44, "<")[:44]
    num = number.ljust(9, "<")
    birth, sex, optional = "850101", "F", "<" * 14
    body = (
        num + check_digit(num) + issuer + birth + check_digit(birth) + sex + expiry + check_digit(expiry)
        + optional + check_digit(optional)
    )  # fmt: skip
    composite = body[0:10] + body[13:20] + body[21:43]
    return [line1, body + check_digit(composite)]


WOMAN_DOC = ("X1234567", "UTO")  # the woman of the enrolment clip
BOARDING_PASS = "M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100"


def _diag_reader(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "diag", "reader", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def ops_for_modes(tmp_path_factory: pytest.TempPathFactory) -> OpsMaterial:
    bp = parse_bcbp(BOARDING_PASS).boarding_pass
    assert bp is not None
    woman = LOOKUP.subject_for_document(*WOMAN_DOC)
    # The man is enrolled under his boarding pass, to test boarding mode with the same gallery.
    man = LOOKUP.subject_for_passenger(bp.legs[0].pnr, bp.passenger_name)
    return prepare_ops(tmp_path_factory.mktemp("ops-modes"), scope=f"{SITE}:{GATE}", subject_ids=(woman, man))


@pytest.fixture(scope="module")
def ops_material_default(tmp_path_factory: pytest.TempPathFactory) -> OpsMaterial:
    return prepare_ops(tmp_path_factory.mktemp("ops-default"), scope=f"{SITE}:{GATE}")


@pytest.fixture
def reader() -> Iterator[ReaderSimulator]:
    with ReaderSimulator() as sim:
        yield sim


def rig_in_mode(tmp_path: Path, ops: OpsMaterial, reader: ReaderSimulator, mode: str) -> LaneRig:
    rig = LaneRig(
        tmp_path / f"rig-{mode}",
        ops=ops,
        plan=None,
        subject_key=SUBJECT_KEY,
        config={
            "gate": {"mode": mode},
            "reader": {"serial_url": reader.port_path},
            "lane": {"capture_timeout_s": 4.0, "boarding_flights": ["AC834"]},
        },
    )
    rig.start()
    return rig


def test_entry_mode_matches_the_document_holder_and_refers_unknown_or_expired_documents(
    tmp_path: Path, ops_for_modes: OpsMaterial, reader: ReaderSimulator
) -> None:
    rig = rig_in_mode(tmp_path, ops_for_modes, reader, "entry")
    try:
        status = rig.status()
        assert status["mode"] == "entry" and status["devices"]["document_reader"]["ok"] is True
        rig.play([LEAD_IN, "female", GAP], loop=True)
        # Her own passport: 1:1 against her gallery subject -> ACCEPT and one passage.
        reader.send_mrz(td3(WOMAN_DOC[0], "DOE", "JANE", issuer=WOMAN_DOC[1]))
        [first] = rig.wait_outcomes(1, timeout=30)
        assert first["mode"] == "entry" and first["decision"] == "accept", first
        assert [c["kind"] for c in first["comparisons"]] == ["1:1_gallery"]
        assert first["document"]["number_masked"] == "X1***7" and first["document"]["checks_ok"] is True
        assert first["passage"] == "completed"
        # A passport nobody enrolled: NOT_IN_GALLERY; her own passport, but expired: DOCUMENT_EXPIRED.
        rig.wait_state("idle", 20)
        reader.send_mrz(td3("Z0000001", "ROE", "RICHARD"))
        [_, second] = rig.wait_outcomes(2, timeout=30)
        assert second["decision"] == "refer" and "NOT_IN_GALLERY" in second["reasons"], second
        rig.wait_state("idle", 20)
        reader.send_mrz(td3(WOMAN_DOC[0], "DOE", "JANE", expiry="200101"))
        [_, _, third] = rig.wait_outcomes(3, timeout=30)
        assert third["decision"] == "refer" and "DOCUMENT_EXPIRED" in third["reasons"], third
        # No document number in the daemon's log: only the masked form.
        assert WOMAN_DOC[0] not in rig.log_path.read_text()
        # The technician's view of the reader goes through the daemon, which owns the port.
        last = _diag_reader("--config", str(rig.config_path), "--json")
        assert last.returncode == 0, last.stderr
        data = json.loads(last.stdout.strip().splitlines()[-1])
        assert data["source"] == "daemon" and data["connected"] is True
        assert data["result"]["document"]["number_masked"] == "X1***7" and "surname" not in data["result"]["document"]
        clash = _diag_reader("--serial", reader.port_path, "--config", str(rig.config_path))
        assert clash.returncode == 1 and "daemon owns the reader port" in clash.stdout + clash.stderr
    finally:
        rig.close()


def test_boarding_mode_matches_the_passenger_of_the_boarding_pass(
    tmp_path: Path, ops_for_modes: OpsMaterial, reader: ReaderSimulator
) -> None:
    rig = rig_in_mode(tmp_path, ops_for_modes, reader, "boarding")
    try:
        rig.play([LEAD_IN, "male", GAP], loop=True)
        reader.send_bcbp(BOARDING_PASS)
        [first] = rig.wait_outcomes(1, timeout=30)
        assert first["mode"] == "boarding" and first["decision"] == "accept", first
        assert first["boarding_pass"] == {"flight": "AC834", "flight_date": 326, "valid": True}
        rig.wait_state("idle", 20)
        # Someone else's boarding pass for a flight not boarding here: referred.
        other = BOARDING_PASS.replace("DESMARAIS/LUC  ", "SMITH/JOHN     ").replace("0834", "0999")
        reader.send_bcbp(other)
        [_, second] = rig.wait_outcomes(2, timeout=30)
        assert second["decision"] == "refer" and "BOARDING_PASS_WRONG_FLIGHT" in second["reasons"], second
    finally:
        rig.close()


def test_td3_helper_builds_a_valid_mrz() -> None:
    from egate.drivers.document.mrz import parse_mrz_lines

    result = parse_mrz_lines(td3(*WOMAN_DOC[:1], "DOE", "JANE"), today=date(2026, 11, 28))
    assert result.valid, result.errors
    assert result.document is not None and result.document.number == WOMAN_DOC[0]


def _page(lines: list[str], person: int) -> np.ndarray:
    """A data page: the portrait of enrolment-clip person 0 (woman) or 1 (man) above a rendered MRZ."""
    from egate.engines.config import EngineConfig
    from egate.engines.models import default_model_dir
    from egate.engines.pipeline import FaceEngine
    from egate.tools.rig.lane import ENROLMENT_CLIP, read_clip
    from tests.support.reader_fixtures import render_ocrb_page

    engine = FaceEngine.from_config(EngineConfig(), default_model_dir())
    try:
        frame = read_clip(ENROLMENT_CLIP)[10]
        half = frame.shape[1] // 2
        photo = frame[:, :half] if person == 0 else frame[:, half:]
        x1, y1, x2, y2 = engine.analyze(photo)[0].box_xyxy
    finally:
        engine.close()
    w, cx, cy = x2 - x1, (x1 + x2) / 2, (y1 + y2) / 2
    crop = photo[int(max(0, cy - 1.1 * w)) : int(cy + 1.3 * w), int(max(0, cx - 0.9 * w)) : int(cx + 0.9 * w)]
    portrait = cv2.resize(crop, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    mrz = render_ocrb_page(lines)
    top = np.full((portrait.shape[0] + 80, mrz.shape[1], 3), 235, np.uint8)
    top[40 : 40 + portrait.shape[0], 40 : 40 + portrait.shape[1]] = portrait
    return np.vstack([top, mrz])


def test_entry_mode_compares_with_the_portrait_on_the_document_page(
    tmp_path: Path, ops_material_default: OpsMaterial
) -> None:
    """No gallery subject for the document: the lane compares the traveller with the page's own photo."""
    pages = tmp_path / "pages"
    woman_dir, man_dir = pages / "woman", pages / "man"
    for folder, person, doc in ((woman_dir, 0, "X1234567"), (man_dir, 1, "Y7654321")):
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "page.png"), _page(td3(doc, "DOE", "ALEX"), person))
    window = pages / "window"  # what the page camera sees; swapped atomically like a document change
    window.symlink_to(woman_dir, target_is_directory=True)
    rig = LaneRig(
        tmp_path / "rig-page",
        ops=ops_material_default,
        plan=None,
        config={
            "gate": {"mode": "entry"},
            "reader": {
                "page_camera": {"kind": "folder", "location": str(window), "loop": True, "fps": 4.0},
            },
            "lane": {"capture_timeout_s": 4.0},
        },
    )
    rig.start()
    try:
        assert rig.status()["devices"]["document_reader"]["ok"] is True
        checks = {c["name"]: c for c in rig.call("selftest.device")["checks"]}
        assert checks["page_camera"]["verdict"] == "PASS", checks["page_camera"]
        rig.play([LEAD_IN, "female", GAP], loop=True)
        [first] = rig.wait_outcomes(1, timeout=90)  # a deadline, not a speed check: OCR is slow on a busy CPU
        assert first["decision"] == "accept", first
        assert [c["kind"] for c in first["comparisons"]] == ["1:1_document"]
        assert first["comparisons"][0]["subject_id"] is None
        assert first["document"]["number_masked"] == "X1***7"
        rig.wait_state("idle", 20)
        # The same page stays on the window: not read again. The man's passport placed: NO_MATCH.
        tmp_link = pages / "window.new"
        tmp_link.symlink_to(man_dir, target_is_directory=True)
        tmp_link.replace(window)
        [_, second] = rig.wait_outcomes(2, timeout=90)
        assert second["decision"] == "refer" and second["reasons"] == ["NO_MATCH"], second
        assert [c["kind"] for c in second["comparisons"]] == ["1:1_document"]
        assert second["document"]["number_masked"] == "Y7***1"
        assert len(rig.log_events("page_document_read")) == 2
    finally:
        rig.close()
