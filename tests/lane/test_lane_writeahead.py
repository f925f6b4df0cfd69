"""Write-ahead decisions, the outbox as a required device, and scoped matching, at the session level.

The session controller is the real one; the record store is either a recording sink that can refuse
(like a full outbox) or the real SQLite `Outbox` behind the lane's own sinks. The gate records the
records committed at the instant it is told to open, so "committed before the open command" is
observed, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from egate.edge.lane.gallery_part import GalleryPart
from egate.edge.lane.gate_part import GatePart
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.outbox_part import OutboxPart
from egate.edge.lane.sinks import LaneSinks
from egate.edge.session.events import DeviceHealth, FaceObserved, GateEventIn, SetFlights, Tick
from egate.edge.session.machine import SessionController
from egate.edge.session.policy import Reason, Verdict
from egate.edge.session.records import OutcomeRecord
from egate.edge.session.states import LaneState
from egate.edge.settings import Settings
from egate.edge.settings.lane import LaneConfig
from egate.edge.settings.link import OutboxConfig
from egate.edge.uplink.outbox import OutboxFull
from tests.lane.lane_fixtures import (
    FakeClock,
    People,
    RecordingSinks,
    SessionBench,
    Step,
    VectorMatcher,
    healthy,
    make_lane,
)

S = LaneState


def frames(lane: SessionBench, name: str, n: int = 3) -> list[Step]:
    out: list[Step] = []
    for _ in range(n):
        face = lane.people.face(name)
        out += [0.1, lambda f=face: FaceObserved([f], frame_time=lane.clock.mono)]
    return out


@dataclass
class WitnessGate:
    """A gate that notes, when told to open, which ACCEPT records were already committed."""

    committed: list[OutcomeRecord]
    opens: list[tuple[str, list[str]]] = field(default_factory=list)
    locks: int = 0

    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        accepted = [r.txn_id for r in self.committed if r.decision is Verdict.ACCEPT and r.record == "decision"]
        self.opens.append((decision_id, accepted))
        return True

    def lock(self) -> bool:
        self.locks += 1
        return True


def witnessed_lane(config: LaneConfig | None = None) -> tuple[SessionBench, WitnessGate]:
    lane = make_lane(config)
    gate = WitnessGate(lane.sinks.records)
    lane.controller._gate = gate  # the controller's Gate seam: same object the daemon's driver fills
    return lane, gate


def test_accept_is_committed_before_the_gate_is_told_to_open() -> None:
    lane, gate = witnessed_lane()
    lane.run(*healthy(), *frames(lane, "alice"))
    [(txn, committed_then)] = gate.opens
    assert committed_then == [txn]
    lane.run(1.5, GateEventIn("passage_completed", txn))
    decision, passage = lane.sinks.records
    assert (decision.record, decision.passage, decision.decision) == ("decision", None, Verdict.ACCEPT)
    assert (passage.record, passage.txn_id, passage.passage) == ("passage", txn, "completed")
    assert passage.comparisons == decision.comparisons and passage.schema_version == 2
    assert "commit" in passage.timings_ms and "frame_to_open" in passage.timings_ms


@pytest.mark.parametrize("error", [OutboxFull("outbox full"), OSError(28, "No space left on device")])
def test_no_commit_no_opening_and_the_lane_goes_out_of_service(error: Exception) -> None:
    lane, gate = witnessed_lane()
    lane.run(*healthy())
    lane.sinks.fail_outcomes_with = error
    lane.run(*frames(lane, "alice"))
    assert gate.opens == []  # the traveller matched, but nothing was recorded: the gate stays shut
    assert gate.locks >= 1 and lane.controller.state is S.REFER
    status = lane.controller.status()
    assert not status.in_service
    assert any(r.startswith("outbox: decision not committed") for r in status.out_of_service_reasons)
    lane.run(5.0, Tick(), GateEventIn("passage_completed"))  # refer hold over; a stray passage report changes nothing
    assert lane.controller.state is S.OUT_OF_SERVICE
    lane.run(*frames(lane, "bob"))
    assert gate.opens == [] and lane.controller.state is S.OUT_OF_SERVICE
    # The outbox writes again (drained / disk freed): the monitor reports it healthy, the lane serves.
    lane.sinks.fail_outcomes_with = None
    lane.run(DeviceHealth("outbox", True))
    assert lane.controller.state is S.IDLE
    lane.run(*frames(lane, "bob"))
    assert [t for t, _ in gate.opens] == [lane.controller.txn_id]


def test_referral_record_carries_its_own_reason_when_only_the_referral_commits() -> None:
    """The first commit (ACCEPT) fails, the referral's commit succeeds: ops learns why nobody passed."""
    lane, gate = witnessed_lane()
    lane.run(*healthy())
    sinks = lane.sinks
    original = RecordingSinks.emit_outcome
    failures = [OutboxFull("full")]

    def once(record: OutcomeRecord) -> None:
        if failures:
            raise failures.pop()
        original(sinks, record)

    sinks.emit_outcome = once  # type: ignore[method-assign]
    lane.run(*frames(lane, "alice"))
    [rec] = sinks.records
    assert gate.opens == []
    assert (rec.decision, rec.reasons, rec.record) == (Verdict.REFER, [Reason.DECISION_NOT_RECORDED], "decision")


def test_an_outbox_fault_report_takes_the_lane_out_even_when_not_listed_as_required() -> None:
    lane = make_lane(LaneConfig(required_devices=["camera"]))
    lane.run(*healthy("camera"))
    assert lane.controller.state is S.IDLE
    lane.run(DeviceHealth("outbox", False, "full: restore the link"))
    assert lane.controller.state is S.OUT_OF_SERVICE
    assert lane.controller.status().out_of_service_reasons == ["outbox: full: restore the link"]
    lane.run(DeviceHealth("gallery", False, "gallery on disk refused (wrong_model)"))
    lane.run(DeviceHealth("outbox", True))
    assert lane.controller.status().out_of_service_reasons == ["gallery: gallery on disk refused (wrong_model)"]
    lane.run(DeviceHealth("gallery", True))
    assert lane.controller.state is S.IDLE


# ---- scoped matching -------------------------------------------------------------------------------


def tagged_lane(config: LaneConfig | None = None) -> SessionBench:
    lane = make_lane(config or LaneConfig(gate_id="gate-01", boarding_flights=["LH123"]))
    lane.matcher.tags = {"alice": ({"LH123"}, set()), "bob": ({"LH999"}, set()), "carol": (set(), {"lane-9"})}
    return lane


def test_traveller_of_another_flight_is_referred_with_a_reason_that_says_so() -> None:
    lane = tagged_lane()
    lane.run(*healthy(), *frames(lane, "bob"))
    [rec] = lane.sinks.outcomes
    assert (rec.decision, rec.reasons) == (Verdict.REFER, [Reason.ENROLLED_OTHER_FLIGHT])
    assert lane.gate.opens == []
    assert all(c.subject_id != "bob" for c in rec.comparisons)  # bob was never a candidate here


def test_traveller_of_another_lane_is_referred_with_a_reason_that_says_so() -> None:
    lane = tagged_lane()
    lane.run(*healthy(), *frames(lane, "carol"))
    [rec] = lane.sinks.outcomes
    assert (rec.decision, rec.reasons) == (Verdict.REFER, [Reason.ENROLLED_OTHER_LANE])


def test_a_stranger_is_still_no_match_not_another_flight() -> None:
    lane = tagged_lane()
    lane.run(*healthy(), *frames(lane, "mallory"))
    [rec] = lane.sinks.outcomes
    assert Reason.NO_MATCH in rec.reasons and Reason.ENROLLED_OTHER_FLIGHT not in rec.reasons


def test_set_flights_changes_who_may_pass_and_is_shown_in_status() -> None:
    lane = tagged_lane()
    lane.run(*healthy(), *frames(lane, "alice"))
    first = lane.controller.txn_id
    assert lane.gate.opens == [first]
    lane.run(1.0, GateEventIn("passage_completed", first))
    lane.run(SetFlights(("lh999",)))
    st = lane.controller.status()
    assert (st.flights, st.lane_id) == (["LH999"], "gate-01")
    assert any(e.kind == "flights_changed" for e in lane.sinks.events)
    lane.run(*frames(lane, "alice"))
    assert lane.sinks.outcomes[-1].reasons == [Reason.ENROLLED_OTHER_FLIGHT]
    lane.run(5.0, Tick(), *frames(lane, "bob"))
    assert lane.controller.state is S.ACCEPT and len(lane.gate.opens) == 2


def test_untagged_gallery_matches_everyone_whatever_the_flights() -> None:
    lane = make_lane(LaneConfig(boarding_flights=["LH123"], lane_id="lane-1"))
    lane.run(*healthy(), *frames(lane, "carol"))
    assert lane.controller.state is S.ACCEPT


# ---- the real outbox behind the lane's own sinks ---------------------------------------------------


def settings_for(tmp_path: Path, **outbox: object) -> Settings:
    return Settings.model_validate(
        {
            "state": {"state_dir": str(tmp_path / "state")},
            "outbox": {"max_messages": 100, "min_free_disk_bytes": 0, **outbox},
        }
    )


def wired_lane(tmp_path: Path, **outbox: object) -> tuple[OutboxPart, SessionController, WitnessGate, People]:
    """The lane's own sinks (outbox append, health report) around a real SQLite outbox."""
    settings = settings_for(tmp_path, **outbox)
    board = HealthBoard(lambda event: None)
    daemon = OutboxPart(settings, board)
    daemon.start()
    sinks = LaneSinks(daemon, GatePart(settings, lambda event: None, board), board, lambda: None)
    people = People()
    committed: list[OutcomeRecord] = []
    gate = WitnessGate(committed)
    matcher = VectorMatcher({n: people.photo(n) for n in ("alice", "bob")})

    class Sinks:
        def emit_outcome(self, record: OutcomeRecord) -> None:
            sinks.emit_outcome(record)  # raises when the outbox refuses: nothing is appended below
            committed.append(record)

        def emit_guidance(self, kind: object) -> None: ...

        def emit_event(self, event: object) -> None:
            sinks.emit_event(event)  # type: ignore[arg-type]

    from tests.lane.lane_fixtures import DictLookup

    controller = SessionController(
        LaneConfig(), gate=gate, matcher=matcher, lookup=DictLookup(), sinks=Sinks(), clock=FakeClock()
    )
    return daemon, controller, gate, people


def feed(controller: SessionController, people: People, name: str) -> None:
    for _ in range(3):
        controller._clock.advance(0.1)  # type: ignore[attr-defined]
        controller.handle(FaceObserved([people.face(name)], frame_time=controller._clock.monotonic()))


def test_real_outbox_at_its_limit_refuses_the_accept_and_the_gate_stays_shut(tmp_path: Path) -> None:
    daemon, controller, gate, people = wired_lane(tmp_path)
    assert daemon.outbox is not None
    for dev in ("camera", "engine", "gate"):
        controller.handle(DeviceHealth(dev, True))
    while daemon.outbox.stats().fill_ratio < 1.0:
        daemon.outbox.append("event", {"type": "other", "message": "filler"})
    feed(controller, people, "alice")
    assert gate.opens == []
    assert controller.state is S.REFER and not controller.status().in_service
    h = daemon.outbox.health()
    assert (h.ok, h.condition) == (False, "full") and "drains" in h.detail
    assert daemon.health().ok is False
    # Drain (the link's acks), then the monitor's poll reports the outbox healthy again.
    daemon.outbox.ack(item.seq for item in daemon.outbox.peek(0, 1000))
    assert daemon.outbox.health().ok
    controller.handle(DeviceHealth("outbox", True))
    controller._clock.advance(5.0)  # type: ignore[attr-defined]
    controller.handle(Tick())
    assert controller.state is S.IDLE
    feed(controller, people, "alice")
    [(txn, committed_then)] = gate.opens
    assert committed_then == [txn]
    ids = [item.body for item in daemon.outbox.peek(0, 100) if item.kind == "outcome"]
    assert any(txn.encode() in body for body in ids)
    daemon.outbox.close()


def test_real_outbox_reports_a_disk_floor_and_a_failed_commit(tmp_path: Path) -> None:
    daemon = OutboxPart(settings_for(tmp_path), HealthBoard(lambda event: None))
    daemon.start()
    box = daemon.outbox
    assert box is not None
    free = box.free_disk_bytes()
    assert free is not None
    h = box.health(min_free_bytes=free * 2)
    assert (h.ok, h.condition) == (False, "low_disk") and "min_free_disk_bytes" in h.detail
    assert box.health(min_free_bytes=0).ok
    box.close()


def test_outbox_config_floor_default_is_documented() -> None:
    assert OutboxConfig().min_free_disk_bytes > 0


# ---- the gallery on disk, checked at start with the push rules ------------------------------------------


@pytest.mark.parametrize(
    ("case", "code"),
    [("good", None), ("other_model", "wrong_model"), ("other_gate", "wrong_scope"), ("expired", "expired")],
)
def test_gallery_on_disk_is_checked_at_start_like_a_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, code: str | None
) -> None:
    from datetime import UTC, datetime, timedelta

    from egate.edge.gallery.store import write_encrypted
    from egate.edge.trust.bundles import BundleScope
    from tests.support.gallery_fixtures import GALLERY_KEY, MODEL_ID, gallery_bundle, new_ops_key, random_subjects

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gallery.key").write_bytes(GALLERY_KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    settings = Settings.model_validate(
        {"gate": {"site_id": "ams", "gate_id": "g07"}, "state": {"state_dir": str(tmp_path / "state")}}
    )
    now = datetime.now(UTC)
    raw = gallery_bundle(
        new_ops_key(),
        random_subjects(3, seed=2),
        model_id="another-model" if case == "other_model" else MODEL_ID,
        scope=BundleScope(site="ams", gates=("g99",)) if case == "other_gate" else BundleScope(site="ams"),
        issued_at=now - timedelta(hours=2),
        expires_at=now - timedelta(minutes=1) if case == "expired" else now + timedelta(hours=2),
    )
    write_encrypted(tmp_path / "state" / "gallery" / "gallery.egal", raw, GALLERY_KEY)
    # What the engine reports once loaded: its model id and threshold.
    loaded_engine = SimpleNamespace(model_id=MODEL_ID, threshold=0.6)
    part = GalleryPart(settings, loaded_engine, HealthBoard(lambda event: None))
    part.start()
    try:
        health = part.health()
        if code is None:
            assert health.ok and part.store.current is not None and part.refused is None
            return
        assert not health.ok and f"gallery on disk refused ({code})" in health.detail
        assert "egate ops push" in health.detail
        assert part.store.current is None  # nothing of it is matched against
        # The session part reports this as the device `gallery` once its loop runs.
        assert part.refused == health.detail
    finally:
        part.close()
