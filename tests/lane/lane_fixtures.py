"""Shared helpers for the lane tests: a settable clock and simple recording objects that implement the
session's Protocols. The matcher computes real Euclidean distances over 128-D unit descriptors, like the
dlib model's, so scores are not scripted; the real gallery, engine and turnstile meet in the lane rig's
end-to-end tests (tests/test_lane_rig.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np
from numpy.typing import NDArray

from egate.edge.lane.faces import LaneFace
from egate.edge.session.events import BoardingPassRead, DeviceHealth, Event
from egate.edge.session.machine import SessionController
from egate.edge.session.policy import Comparison
from egate.edge.session.ports import GalleryStatus, MatchScope, ScopeMiss
from egate.edge.session.records import LaneEvent, OutcomeRecord
from egate.edge.session.states import Guidance, LaneState
from egate.edge.settings.lane import LaneConfig

Step = Event | float | Callable[[], Event]
THRESHOLD = 0.6  # dlib ResNet's Euclidean threshold
RNG_SEED = 20261128


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 11, 28, 8, 0, tzinfo=timezone.utc)) -> None:
        self.mono = 1000.0
        self.wall = start

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


class People:
    """Deterministic identities: each person is a random unit direction; photos of the same person
    differ by a small perturbation (distance ~0.3), different people are ~1.4 apart."""

    def __init__(self, seed: int = RNG_SEED) -> None:
        self._rng = np.random.default_rng(seed)
        self._base: dict[str, NDArray[np.float32]] = {}

    def base(self, name: str) -> NDArray[np.float32]:
        if name not in self._base:
            v = self._rng.standard_normal(128).astype(np.float32)
            self._base[name] = v / np.linalg.norm(v)
        return self._base[name]

    def photo(self, name: str, spread: float = 0.3) -> NDArray[np.float32]:
        noise = self._rng.standard_normal(128).astype(np.float32)
        noise *= spread / np.linalg.norm(noise)
        return (self.base(name) + noise).astype(np.float32)

    def face(self, name: str, quality: float = 0.9, spread: float = 0.3, issues: tuple[str, ...] = ()) -> LaneFace:
        return LaneFace(quality, self.photo(name, spread), issues, {"yaw_deg": 3.0})


class VectorMatcher:
    """In-memory gallery: Euclidean distance, pass when <= THRESHOLD (higher_is_better=False)."""

    def __init__(self, enrolled: dict[str, NDArray[np.float32]], *, version: str = "gal-1") -> None:
        self.enrolled = dict(enrolled)
        # subject -> (flights, lanes) tags, the gallery's eligibility rule: untagged = everywhere
        self.tags: dict[str, tuple[set[str], set[str]]] = {}
        self.available = True
        self.expired = False
        self.version = version
        self.fail_with: Exception | None = None
        self.calls: list[tuple[str, str | None]] = []

    def status(self) -> GalleryStatus:
        return GalleryStatus(available=self.available, expired=self.expired, version=self.version)

    def _dist(self, a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))

    def _outside(self, sid: str, scope: MatchScope) -> str | None:
        flights, lanes = self.tags.get(sid, (set(), set()))
        if scope.lane is not None and lanes and scope.lane not in lanes:
            return "lane"
        if scope.flights and flights and not flights & set(scope.flights):
            return "flight"
        return None

    def search(self, descriptor: NDArray[np.float32], k: int, scope: MatchScope) -> Sequence[Comparison]:
        self.calls.append(("search", None))
        if self.fail_with:
            raise self.fail_with
        eligible = {sid: t for sid, t in self.enrolled.items() if self._outside(sid, scope) is None}
        ranked = sorted((self._dist(descriptor, t), sid) for sid, t in eligible.items())[:k]
        return [Comparison("1:N", sid, d, THRESHOLD, higher_is_better=False) for d, sid in ranked]

    def scope_miss(self, descriptor: NDArray[np.float32], scope: MatchScope) -> ScopeMiss | None:
        self.calls.append(("scope_miss", None))
        best = min(((self._dist(descriptor, t), sid) for sid, t in self.enrolled.items()), default=None)
        if best is None or best[0] > THRESHOLD:
            return None
        miss = self._outside(best[1], scope)
        return "lane" if miss == "lane" else "flight" if miss == "flight" else None

    def verify(self, descriptor: NDArray[np.float32], subject_id: str, scope: MatchScope) -> Comparison | None:
        self.calls.append(("verify", subject_id))
        if self.fail_with:
            raise self.fail_with
        if subject_id not in self.enrolled or self._outside(subject_id, scope) == "lane":
            return None
        d = self._dist(descriptor, self.enrolled[subject_id])
        return Comparison("1:1_gallery", subject_id, d, THRESHOLD, higher_is_better=False)

    def compare(self, descriptor: NDArray[np.float32], reference: NDArray[np.float32]) -> Comparison:
        self.calls.append(("compare", None))
        return Comparison("1:1_document", None, self._dist(descriptor, reference), THRESHOLD, higher_is_better=False)


class DictLookup:
    def __init__(self, by_doc: dict[str, str] | None = None, by_pnr: dict[str, str] | None = None) -> None:
        self.by_doc = by_doc or {}
        self.by_pnr = by_pnr or {}

    def by_document(self, document_number: str, issuing_state: str) -> str | None:
        return self.by_doc.get(f"{issuing_state}:{document_number}")

    def by_boarding_pass(self, boarding_pass: BoardingPassRead) -> str | None:
        return self.by_pnr.get(f"{boarding_pass.pnr}:{boarding_pass.passenger_name}")


@dataclass
class RecordingGate:
    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail_open: bool = False

    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        if self.fail_open:
            return False
        self.calls.append(("open", decision_id, str(timeout_s)))
        return True

    def lock(self) -> bool:
        self.calls.append(("lock",))
        return True

    @property
    def opens(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "open"]


def sessions_of(records: Sequence[OutcomeRecord]) -> list[OutcomeRecord]:
    """One record per session, in decision order: an ACCEPT's passage record stands in for its
    decision record (it repeats the decision and adds the turnstile's result)."""
    out: dict[str, OutcomeRecord] = {}
    for rec in records:
        out[rec.txn_id] = rec
    return list(out.values())


@dataclass
class RecordingSinks:
    records: list[OutcomeRecord] = field(default_factory=list)  # every committed record, in order
    guidance: list[Guidance] = field(default_factory=list)
    events: list[LaneEvent] = field(default_factory=list)
    fail_outcomes_with: Exception | None = None  # the outbox refusing (full, disk error)

    def emit_outcome(self, record: OutcomeRecord) -> None:
        if self.fail_outcomes_with is not None:
            raise self.fail_outcomes_with
        self.records.append(record)

    @property
    def outcomes(self) -> list[OutcomeRecord]:
        return sessions_of(self.records)

    def emit_guidance(self, kind: Guidance) -> None:
        self.guidance.append(kind)

    def emit_event(self, event: LaneEvent) -> None:
        self.events.append(event)

    def states(self) -> list[LaneState]:
        return [e.state for e in self.events if e.kind == "state_changed"]


@dataclass
class SessionBench:
    """One session controller wired to recording fakes and a fake clock (the daemon's assembled lane is
    `egate.edge.lane.assembly.Lane`)."""

    controller: SessionController
    gate: RecordingGate
    sinks: RecordingSinks
    matcher: VectorMatcher
    lookup: DictLookup
    clock: FakeClock
    people: People

    def run(self, *events: Step) -> None:
        """Feed events in order; a float advances the clock by that many seconds; a callable is called
        when its turn comes and its event handled (for events stamped with the clock's time)."""
        for ev in events:
            if isinstance(ev, float | int):
                self.clock.advance(float(ev))
            elif callable(ev):
                self.controller.handle(ev())
            else:
                self.controller.handle(ev)


def healthy(*devices: str) -> list[DeviceHealth]:
    return [DeviceHealth(d, True) for d in (devices or ("camera", "engine", "gate", "document_reader"))]


def make_lane(config: LaneConfig | None = None, *, enrolled: Sequence[str] = ("alice", "bob", "carol")) -> SessionBench:
    people = People()
    matcher = VectorMatcher({name: people.photo(name) for name in enrolled})
    lookup = DictLookup(
        by_doc={"UTO:L898902C3": "alice", "D:C01X00T47": "bob"},
        by_pnr={"ABC123:DESMARAIS/LUC": "carol"},
    )
    clock = FakeClock()
    gate = RecordingGate()
    sinks = RecordingSinks()
    controller = SessionController(
        config or LaneConfig(), gate=gate, matcher=matcher, lookup=lookup, sinks=sinks, clock=clock
    )
    return SessionBench(controller, gate, sinks, matcher, lookup, clock, people)


FUTURE = date(2031, 1, 1)
PAST = date(2020, 1, 1)
