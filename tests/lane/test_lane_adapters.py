"""egate.edge.lane.adapters with the real reader parsers, turnstile event model and an activated gallery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from egate.drivers.document.bcbp import parse_bcbp
from egate.drivers.document.mrz import parse_mrz
from egate.drivers.turnstile.base import GateEvent
from egate.edge.gallery.payload import SubjectEntry
from egate.edge.gallery.store import Gallery
from egate.edge.lane.adapters import (
    GalleryMatcher,
    HashedSubjectLookup,
    boarding_pass_read,
    document_read,
    gate_event_in,
    gate_guidance,
)
from egate.edge.lane.faces import LaneFace
from egate.edge.session.events import DeviceHealth, FaceObserved, GateEventIn, SetMode
from egate.edge.session.machine import SessionController
from egate.edge.session.policy import Reason, Verdict
from egate.edge.session.ports import MatchScope
from egate.edge.session.states import Guidance
from egate.edge.settings.lane import LaneConfig, Mode
from tests.lane.lane_fixtures import FakeClock, RecordingGate, RecordingSinks
from tests.support.gallery_fixtures import NOW, gallery_bundle, new_ops_key, random_subjects, trust_with, verifier_for

# ICAO 9303-4 Appendix specimen (Utopia): the check digits are valid, the expiry 2012-04-15 is past.
UTOPIA = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10"
UTOPIA_BAD_DIGIT = UTOPIA[:-2] + "11"
BCBP = "M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100"
KEY = bytes(range(100, 132))


def test_document_read_keeps_expiry_apart_from_check_digits() -> None:
    read = document_read(parse_mrz(UTOPIA))
    assert read is not None
    assert (read.document_number, read.issuing_state, read.expiry) == ("L898902C3", "UTO", date(2012, 4, 15))
    assert read.checks_ok  # the reader's "document expired" error is the policy's to judge
    bad = document_read(parse_mrz(UTOPIA_BAD_DIGIT))
    assert bad is not None and not bad.checks_ok
    assert document_read(parse_mrz("not an mrz at all")) is None


def test_boarding_pass_read() -> None:
    read = boarding_pass_read(parse_bcbp(BCBP), flights=["AC834"])
    assert (read.passenger_name, read.pnr, read.flight, read.flight_date, read.valid) == (
        "DESMARAIS/LUC",
        "ABC123",
        "AC834",
        326,
        True,
    )
    broken = boarding_pass_read(parse_bcbp("M1 garbage"))
    assert not broken.valid


def test_gate_events_and_guidance_map_onto_the_turnstile() -> None:
    ev = gate_event_in(GateEvent(kind="passage_completed", decision_id="txn-1"))
    assert ev == GateEventIn("passage_completed", "txn-1")
    assert gate_guidance(Guidance.PLEASE_PROCEED) == "proceed"
    assert gate_guidance(Guidance.SEE_OFFICER) == "stop"
    assert gate_guidance(Guidance.ALARM) == "alarm"
    assert gate_guidance(Guidance.LOOK_AT_CAMERA) == "off"


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[tuple[Gallery, list[SubjectEntry]]]:
    key = new_ops_key()
    lookup = HashedSubjectLookup(KEY, lambda: None)
    subjects = random_subjects(5, seed=3)
    rng = np.random.default_rng(9)
    anna = rng.standard_normal(128).astype(np.float32)
    anna /= np.linalg.norm(anna)
    subjects.append(SubjectEntry(lookup.subject_for_document("L898902C3", "UTO"), anna[None, :]))
    verified = verifier_for(trust_with(tmp_path / "trust", key)).verify(gallery_bundle(key, subjects), NOW)
    g = Gallery.from_verified(verified)
    yield g, subjects
    g.close()


def near(template: np.ndarray, seed: int = 1, spread: float = 0.25) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(128).astype(np.float32)
    return (np.atleast_2d(template)[0] + spread * noise / np.linalg.norm(noise)).astype(np.float32)


def test_gallery_matcher_over_a_real_gallery(gallery: tuple[Gallery, list[SubjectEntry]]) -> None:
    g, subjects = gallery
    now = [NOW]
    m = GalleryMatcher(lambda: g, document_threshold=0.6, clock=lambda: now[0])
    st = m.status()
    assert st.available and not st.expired and st.version == "1"
    target = subjects[2]
    found = m.search(near(target.templates), 3, MatchScope())
    assert found[0].subject_id == target.subject_id and found[0].passed and not found[0].higher_is_better
    assert len(found) == 3 and not found[1].passed
    one = m.verify(near(target.templates), target.subject_id, MatchScope())
    assert one is not None and one.passed and one.kind == "1:1_gallery"
    assert m.verify(near(target.templates), "no-such-subject", MatchScope()) is None
    doc = m.compare(near(target.templates), np.atleast_2d(target.templates)[0])
    assert doc.kind == "1:1_document" and doc.passed
    now[0] = NOW + timedelta(days=2)  # past the bundle's expiry
    assert m.status().expired and m.search(near(target.templates), 3, MatchScope()) == []
    assert not GalleryMatcher(lambda: None, document_threshold=0.6, clock=lambda: NOW).status().available


def test_gallery_matcher_searches_only_the_lane_scope(tmp_path: Path) -> None:
    """Real gallery with flight and lane tags: the scope decides who is searched, and a match outside
    it is reported as another flight's or lane's traveller."""
    key = new_ops_key()
    subjects = random_subjects(4, seed=11)
    subjects[0].flights = ["LH123"]
    subjects[1].flights = ["LH999"]
    subjects[2].lanes = ["lane-2"]  # subjects[3] untagged: eligible everywhere
    verified = verifier_for(trust_with(tmp_path / "trust", key)).verify(gallery_bundle(key, subjects), NOW)
    with Gallery.from_verified(verified) as g:
        m = GalleryMatcher(lambda: g, document_threshold=0.6, clock=lambda: NOW)
        here = MatchScope(lane="lane-1", flights=("LH123",))
        ids = {c.subject_id for c in m.search(near(subjects[0].templates), 4, here)}
        assert ids == {subjects[0].subject_id, subjects[3].subject_id}
        assert m.search(near(subjects[0].templates), 1, here)[0].passed
        other_flight = m.search(near(subjects[1].templates), 4, here)
        assert not any(c.passed for c in other_flight)
        assert m.scope_miss(near(subjects[1].templates), here) == "flight"
        assert m.scope_miss(near(subjects[2].templates), here) == "lane"
        assert m.scope_miss(near(subjects[3].templates), here) is None  # eligible: not a scope miss
        assert m.verify(near(subjects[2].templates), subjects[2].subject_id, here) is None
        # No flights set: every flight is eligible, the lane rule still holds.
        anyone = {c.subject_id for c in m.search(near(subjects[1].templates), 4, MatchScope(lane="lane-1"))}
        assert anyone == {subjects[0].subject_id, subjects[1].subject_id, subjects[3].subject_id}


def test_entry_lane_end_to_end_on_the_real_gallery(gallery: tuple[Gallery, list[SubjectEntry]]) -> None:
    """Reader text -> DocumentRead -> HMAC subject id -> real gallery 1:1 -> ACCEPT."""
    g, subjects = gallery
    clock = FakeClock(start=datetime(2011, 1, 5, 9, 0, tzinfo=timezone.utc))  # the specimen is valid in 2011
    gate, sinks = RecordingGate(), RecordingSinks()
    lookup = HashedSubjectLookup(KEY, lambda: g)
    matcher = GalleryMatcher(lambda: g, document_threshold=0.6, clock=lambda: NOW)
    lane = SessionController(LaneConfig(), gate=gate, matcher=matcher, lookup=lookup, sinks=sinks, clock=clock)
    for dev in ("camera", "engine", "gate", "document_reader"):
        lane.handle(DeviceHealth(dev, True))
    lane.handle(SetMode(Mode.ENTRY))
    read = document_read(parse_mrz(UTOPIA))
    assert read is not None
    lane.handle(read)
    anna = subjects[-1].templates
    for i in range(3):
        clock.advance(0.1)
        lane.handle(FaceObserved([LaneFace(0.9, near(anna, seed=i))], frame_time=clock.mono))
    assert gate.opens == [lane.txn_id]
    lane.handle(GateEventIn("passage_completed", lane.txn_id))
    rec = sinks.outcomes[0]
    assert (rec.decision, rec.reasons) == (Verdict.ACCEPT, [Reason.MATCH])
    assert rec.subject_id == subjects[-1].subject_id and rec.subject_id.startswith("d-")
    assert rec.comparisons[0].kind == "1:1_gallery" and rec.comparisons[0].threshold == 0.6


def test_subject_ids_are_keyed_and_normalised() -> None:
    a = HashedSubjectLookup(KEY, lambda: None)
    b = HashedSubjectLookup(bytes(32), lambda: None)
    assert a.subject_for_document("l898902c3 ", "uto") == a.subject_for_document("L898902C3", "UTO")
    assert a.subject_for_document("L898902C3", "UTO") != b.subject_for_document("L898902C3", "UTO")
    assert "L898902C3" not in a.subject_for_document("L898902C3", "UTO")
    assert a.by_document("L898902C3", "UTO") is None  # no gallery
    with pytest.raises(ValueError, match="16 bytes"):
        HashedSubjectLookup(b"short", lambda: None)
