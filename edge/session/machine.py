"""The lane's traveller sessions: a single-threaded, event-driven state machine.

    IDLE --trigger--> CAPTURING --best of N / timeout--> MATCHING --decide--> ACCEPT --passage--> IDLE
                        (entry with the chip: CAPTURING keeps taking frames and MATCHING waits until the
                         chip step's ChipRead arrives or lane.chip_timeout_s passes)
                                                                       \\--> REFER --hold--> IDLE
    any --tailgate / door_forced--> ALARM --clear / hold--> IDLE
    any --emergency_on--> EMERGENCY --emergency_off--> IDLE (or OUT_OF_SERVICE)
    any --device unhealthy / maintenance--> OUT_OF_SERVICE --all healthy--> IDLE

Only `SessionController.handle(event)` changes state, one event at a time; time comes from an injected
clock (`Tick` events make timeouts fire), so the whole machine is tested with tables of events.
Collaborators are small Protocols (`Gate`, `Matcher`, `SubjectLookup`, `LaneSinks`, `Clock`): the daemon
adapts the real turnstile, gallery and outbox to them. `LaneLoop` runs a controller on its own thread
fed by a queue, for the daemon.

Nothing here keeps an image; the chosen frame's descriptor lives only until MATCHING is done and is
never written to a record or a log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import structlog
import uuid6
from numpy.typing import NDArray

from egate.drivers.document.redact import mask_document_number
from egate.edge.session.events import (
    BoardingPassRead,
    ChipRead,
    ClearAlarm,
    DeviceHealth,
    DocumentRead,
    Event,
    FaceObserved,
    GateEventIn,
    Maintenance,
    SetFlights,
    SetMode,
    Tick,
)
from egate.edge.session.policy import (
    BoardingPassFacts,
    CaptureFacts,
    ChipFacts,
    Comparison,
    Decision,
    DecisionInputs,
    DocumentFacts,
    GalleryFacts,
    Reason,
    Reference,
    Verdict,
    decide,
)
from egate.edge.session.ports import Clock, Gate, LaneSinks, Matcher, MatchScope, SubjectLookup, SystemClock
from egate.edge.session.records import (
    ALWAYS_REQUIRED_WHEN_REPORTED,
    BoardingPassSummary,
    ChipSummary,
    ComparisonRecord,
    DocumentSummary,
    LaneEvent,
    LaneStatus,
    OutcomeRecord,
    VersionInfo,
)
from egate.edge.session.states import Guidance, LaneState, PassageResult
from egate.edge.settings.lane import LaneConfig, Mode

log = structlog.get_logger(__name__)

CENTRE_TOLERANCE = 0.2
MAX_FACE_WIDTH_RATIO = 0.55
_POSE_ISSUES = frozenset({"yaw_too_large", "pitch_too_large", "roll_too_large"})


def positioning_guidance(issues: Sequence[str], placement: tuple[float, float] | None = None) -> Guidance:
    """What to tell a traveller whose face did not pass the quality gate, from the engine's measurements.

    `placement` is (face centre x, face width) as fractions of the frame width, when known. Too close
    first (the face is cut), then too far, off-centre, head turned; anything else (blur, light) is
    "look at the camera". Left and right are the traveller's: the camera faces them, so a face on the
    image's left means they stand to their right.
    """
    if placement is not None and placement[1] > MAX_FACE_WIDTH_RATIO:
        return Guidance.STEP_BACK
    if "face_too_small" in issues:
        return Guidance.COME_CLOSER
    if placement is not None and abs(placement[0] - 0.5) > CENTRE_TOLERANCE:
        return Guidance.MOVE_LEFT if placement[0] < 0.5 else Guidance.MOVE_RIGHT
    if _POSE_ISSUES.intersection(issues):
        return Guidance.LOOK_STRAIGHT
    return Guidance.LOOK_AT_CAMERA


@dataclass
class _Candidate:
    quality: float
    descriptor: NDArray[np.float32]
    issues: tuple[str, ...]
    detail: dict[str, float]
    timings_ms: Mapping[str, float]

    def good(self, min_quality: float) -> bool:
        return not self.issues and self.quality >= min_quality

    def rank(self) -> tuple[bool, float]:
        return (not self.issues, self.quality)  # a frame passing the engine's gate beats any failing one


@dataclass
class _Session:
    txn_id: str
    mode: Mode
    started_mono: float
    started_at: datetime
    deadline: float
    document: DocumentRead | None = None
    boarding_pass: BoardingPassRead | None = None
    frames_seen: int = 0
    single_face_frames: int = 0
    good_frames: int = 0
    multi_face_frames: int = 0
    best: _Candidate | None = None
    timed_out: bool = False
    captured_mono: float | None = None
    completing_frame_time: float | None = None
    chosen_quality: float | None = None
    chosen_issues: list[str] = field(default_factory=list)
    chosen_detail: dict[str, float] = field(default_factory=dict)
    decision: Decision | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    gallery_version: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    opened_mono: float | None = None
    passage_deadline: float | None = None
    hold_until: float | None = None
    recorded: bool = False
    # The chip step (entry mode, policy.chip on): the read the session waits for, until when, and what it gave.
    chip_read_id: str | None = None
    chip_deadline: float | None = None
    chip_facts: ChipFacts | None = None
    chip_summary: ChipSummary | None = None
    chip_descriptor: NDArray[np.float32] | None = None

    @property
    def chip_pending(self) -> bool:
        return self.chip_read_id is not None and self.chip_facts is None


class SessionController:
    """The lane's state machine. Not thread-safe: call `handle` from one thread (see `LaneLoop`)."""

    def __init__(
        self,
        config: LaneConfig,
        *,
        gate: Gate,
        matcher: Matcher,
        lookup: SubjectLookup,
        sinks: LaneSinks,
        clock: Clock | None = None,
        versions: VersionInfo | None = None,
        lock_at_start: bool = True,
    ) -> None:
        """`lock_at_start=False` only for a gate driver that locks the entry itself whenever its link
        comes up (the OSDP driver does), so a start-up lock sent before the link is up is not refused."""
        self._cfg = config
        self._gate = gate
        self._matcher = matcher
        self._lookup = lookup
        self._sinks = sinks
        self._clock: Clock = clock or SystemClock()
        self._versions = versions or VersionInfo()
        self._mode = config.mode
        self._pending_mode: Mode | None = None
        self._state = LaneState.OUT_OF_SERVICE
        self._session: _Session | None = None
        self._health: dict[str, tuple[bool, str]] = {}
        self._maintenance: dict[str, str] = {}  # owner -> reason
        self._gate_link_ok = True
        self._emergency = False
        self._alarm: str | None = None
        self._alarm_until: float | None = None
        self._last_guidance: tuple[Guidance, float] | None = None
        self._scope = MatchScope(
            lane=config.lane_id or config.gate_id, flights=_normal_flights(config.boarding_flights)
        )
        self._log = log.bind(gate_id=config.gate_id)
        # Safe start: entry locked until every required device has said it is healthy.
        if lock_at_start:
            self._gate_lock()
        self._emit_guidance(Guidance.OUT_OF_SERVICE, force=True)
        self._status = self._snapshot()

    # ---- public ------------------------------------------------------------------------------

    @property
    def state(self) -> LaneState:
        return self._state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def txn_id(self) -> str | None:
        return self._session.txn_id if self._session else None

    def status(self) -> LaneStatus:
        """The lane's status after the last handled event. Safe to call from any thread: it returns an
        immutable snapshot that `handle` replaces as a whole."""
        return self._status

    def _snapshot(self) -> LaneStatus:
        reasons = self._oos_reasons()
        return LaneStatus(
            gate_id=self._cfg.gate_id,
            state=self._state,
            mode=self._mode,
            txn_id=self.txn_id,
            in_service=not reasons,
            maintenance=bool(self._maintenance),
            maintenance_owners=sorted(self._maintenance),
            out_of_service_reasons=reasons,
            alarm=self._alarm,
            lane_id=self._scope.lane,
            flights=list(self._scope.flights),
        )

    @property
    def scope(self) -> MatchScope:
        return self._scope

    def handle(self, event: Event) -> None:
        """Process one event to completion (outputs are emitted before this returns)."""
        try:
            self._dispatch(event)
        finally:
            self._status = self._snapshot()

    def _dispatch(self, event: Event) -> None:
        match event:
            case GateEventIn():
                self._on_gate_event(event)
            case DeviceHealth():
                self._health[event.device] = (event.ok, event.reason)
                self._reconcile_service()
            case Maintenance():
                if event.on:
                    self._maintenance[event.owner] = event.reason
                else:
                    self._maintenance.pop(event.owner, None)
                self._reconcile_service()
            case SetMode():
                self._on_set_mode(event.mode)
            case SetFlights():
                self._on_set_flights(event.flights)
            case ClearAlarm():
                if self._state is LaneState.ALARM:
                    self._clear_alarm("officer")
            case Tick():
                self._on_tick()
            case FaceObserved():
                self._on_faces(event)
            case DocumentRead():
                self._on_document(event)
            case ChipRead():
                self._on_chip(event)
            case BoardingPassRead():
                self._on_boarding_pass(event)

    # ---- service / emergency / alarm ---------------------------------------------------------

    def _required_devices(self) -> list[str]:
        devices = list(self._cfg.required_devices)
        if self._mode in (Mode.ENTRY, Mode.BOARDING) and self._cfg.document_reader_device not in devices:
            devices.append(self._cfg.document_reader_device)
        return devices

    def _oos_reasons(self) -> list[str]:
        reasons: list[str] = []
        for owner, why in sorted(self._maintenance.items()):
            reasons.append(f"maintenance ({owner}): {why}")
        required = self._required_devices()
        for device in required:
            ok, why = self._health.get(device, (False, "has not reported healthy yet"))
            if device == "gate" and not self._gate_link_ok:
                ok, why = False, "turnstile link lost"
            if not ok:
                reasons.append(f"{device}: {why or 'unhealthy'}")
        for device in ALWAYS_REQUIRED_WHEN_REPORTED:
            # No config can make the lane serve without its record store or with a refused gallery.
            ok, why = self._health.get(device, (True, ""))
            if device not in required and not ok:
                reasons.append(f"{device}: {why or 'unhealthy'}")
        return reasons

    def _reconcile_service(self) -> None:
        """Move into or out of OUT_OF_SERVICE after a health, maintenance or mode change."""
        reasons = self._oos_reasons()
        if self._state in (LaneState.EMERGENCY, LaneState.ALARM):
            return  # re-checked when those end
        if reasons:
            if self._state is LaneState.ACCEPT:
                return  # let the traveller finish the passage; the gate keeps its own safe state
            if self._state is not LaneState.OUT_OF_SERVICE:
                self._abort_session(Reason.ABORTED_OUT_OF_SERVICE)
                self._enter_out_of_service(reasons)
        elif self._state is LaneState.OUT_OF_SERVICE:
            self._log.info("lane_in_service")
            self._event("in_service")
            self._go_idle()

    def _enter_out_of_service(self, reasons: list[str]) -> None:
        self._enter(LaneState.OUT_OF_SERVICE, detail={"reasons": "; ".join(reasons)})
        self._gate_lock()
        self._emit_guidance(Guidance.OUT_OF_SERVICE, force=True)
        self._event("out_of_service", detail={"reasons": "; ".join(reasons)})
        self._log.warning("lane_out_of_service", reasons=reasons)

    def _on_gate_event(self, ev: GateEventIn) -> None:
        kind = ev.kind
        if kind == "emergency_on":
            self._emergency_on()
        elif kind == "emergency_off":
            self._emergency_off()
        elif kind in ("link_lost", "secure_channel_failed"):
            self._gate_link_ok = False
            if self._state is LaneState.ACCEPT:
                # The controller cancels a pending passage when its link fails (it relocks itself).
                self._end_passage("link_lost")
            else:
                self._reconcile_service()
        elif kind == "link_restored":
            self._gate_link_ok = True
            self._reconcile_service()
        elif kind in ("tailgate", "door_forced"):
            self._raise_alarm(kind)
        elif kind in ("passage_completed", "passage_timed_out"):
            s = self._session
            if (
                self._state is LaneState.ACCEPT
                and s is not None
                and (ev.decision_id is None or ev.decision_id == s.txn_id)
            ):
                self._end_passage("completed" if kind == "passage_completed" else "timed_out")
            else:
                self._event("gate_event_ignored", detail={"kind": kind, "decision_id": ev.decision_id or ""})

    def _emergency_on(self) -> None:
        if self._emergency:
            return
        self._emergency = True
        if self._state is LaneState.ACCEPT:
            self._end_passage("emergency", next_state=False)
        else:
            self._abort_session(Reason.ABORTED_EMERGENCY)
        # The controller has released the exit on its own input; software only reports and guides.
        self._enter(LaneState.EMERGENCY)
        self._emit_guidance(Guidance.EMERGENCY, force=True)
        self._event("emergency", detail={"on": "true"})
        self._log.warning("lane_emergency_on")

    def _emergency_off(self) -> None:
        if not self._emergency:
            return
        self._emergency = False
        self._event("emergency", detail={"on": "false"})
        self._log.info("lane_emergency_off")
        self._gate_lock()  # back to the safe state: entry locked
        if self._alarm is not None:
            self._enter(LaneState.ALARM)
            self._emit_guidance(Guidance.ALARM, force=True)
            return
        self._after_session()

    def _raise_alarm(self, kind: str) -> None:
        self._alarm = kind
        self._alarm_until = self._clock.monotonic() + self._cfg.alarm_clear_s if self._cfg.alarm_clear_s > 0 else None
        self._log.warning("lane_alarm", kind=kind, txn_id=self.txn_id)
        if self._emergency:
            return  # reported when the emergency ends
        if self._state is LaneState.ACCEPT:
            self._end_passage("tailgate" if kind == "tailgate" else "door_forced", next_state=False)
        else:
            self._abort_session(Reason.ABORTED_ALARM)
        self._gate_lock()
        self._enter(LaneState.ALARM, detail={"kind": kind})
        self._emit_guidance(Guidance.ALARM, force=True)
        self._event("alarm", detail={"kind": kind})

    def _clear_alarm(self, by: str) -> None:
        self._log.info("lane_alarm_cleared", kind=self._alarm, by=by)
        self._alarm = None
        self._alarm_until = None
        self._after_session()

    # ---- flights ----------------------------------------------------------------------------

    def _on_set_flights(self, flights: Sequence[str]) -> None:
        """Takes effect at the next match (a traveller already matched keeps their decision)."""
        new = _normal_flights(flights)
        if new == self._scope.flights:
            return
        old = self._scope.flights
        self._scope = MatchScope(lane=self._scope.lane, flights=new)
        self._log.info("lane_flights_changed", old=list(old), new=list(new))
        self._event("flights_changed", detail={"from": ",".join(old), "to": ",".join(new)})

    # ---- mode ------------------------------------------------------------------------------

    def _on_set_mode(self, mode: Mode) -> None:
        if self._session is not None:
            self._pending_mode = mode
            return
        self._apply_mode(mode)

    def _apply_mode(self, mode: Mode) -> None:
        self._pending_mode = None
        if mode is self._mode:
            return
        old = self._mode
        self._mode = mode
        self._event("mode_changed", detail={"from": old.value, "to": mode.value})
        self._log.info("lane_mode_changed", old=old.value, new=mode.value)
        if self._state in (LaneState.IDLE, LaneState.OUT_OF_SERVICE):
            self._reconcile_service()  # the reader may have become required
            if self._state is LaneState.IDLE:
                self._emit_guidance(self._idle_guidance(), force=True)

    # ---- ticks ------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        now = self._clock.monotonic()
        s = self._session
        if (
            s is not None
            and s.chip_pending
            and s.chip_deadline is not None
            and now >= s.chip_deadline
            and self._state in (LaneState.CAPTURING, LaneState.MATCHING)
        ):
            # A chip that never answered refers (CHIP_UNREADABLE): it is never taken as "no chip".
            self._log.warning("lane_chip_timeout", txn_id=s.txn_id, timeout_s=self._cfg.chip_timeout_s)
            self._chip_done(
                s, ChipFacts(present=True, failure="chip_timeout"), ChipSummary(result="timeout", reason="chip_timeout")
            )
        elif self._state is LaneState.CAPTURING and s is not None and now >= s.deadline:
            s.timed_out = s.good_frames < self._cfg.capture_frames
            self._finish_capture()
        elif (
            self._state is LaneState.ACCEPT
            and s is not None
            and s.passage_deadline is not None
            and now >= s.passage_deadline
        ):
            self._log.error("lane_passage_not_reported", txn_id=s.txn_id)
            self._gate_lock()
            self._end_passage("no_report")
        elif self._state is LaneState.REFER and s is not None and s.hold_until is not None and now >= s.hold_until:
            self._finish_session()
            self._after_session()
        elif self._state is LaneState.ALARM and self._alarm_until is not None and now >= self._alarm_until:
            self._clear_alarm("timeout")

    # ---- triggers and capture -------------------------------------------------------------------

    def _idle_guidance(self) -> Guidance:
        return {
            Mode.EXIT: Guidance.READY,
            Mode.ENTRY: Guidance.PRESENT_DOCUMENT,
            Mode.BOARDING: Guidance.SCAN_BOARDING_PASS,
        }[self._mode]

    def _on_faces(self, ev: FaceObserved) -> None:
        if self._state is LaneState.IDLE:
            if self._mode is Mode.EXIT and any(f.quality >= self._cfg.trigger_min_quality for f in ev.faces):
                self._start_session()
            elif ev.faces:
                self._emit_guidance(self._idle_guidance())
                return
            else:
                return
        if self._state is not LaneState.CAPTURING or self._session is None:
            return
        s = self._session
        s.frames_seen += 1
        s.completing_frame_time = ev.frame_time
        if len(ev.faces) == 0:
            self._emit_guidance(Guidance.LOOK_AT_CAMERA)
        elif len(ev.faces) > 1:
            s.multi_face_frames += 1
            self._emit_guidance(Guidance.ONE_PERSON_AT_A_TIME)
        else:
            face = ev.faces[0]
            s.single_face_frames += 1
            cand = _Candidate(
                float(face.quality),
                np.asarray(face.descriptor),
                tuple(face.quality_issues),
                {k: float(v) for k, v in face.quality_detail.items()},
                dict(ev.timings_ms),
            )
            if s.best is None or cand.rank() > s.best.rank():
                s.best = cand
            if cand.good(self._cfg.policy.min_quality):
                s.good_frames += 1
            else:
                self._emit_guidance(positioning_guidance(cand.issues, getattr(face, "placement", None)))
        if s.good_frames >= self._cfg.capture_frames:
            if not s.chip_pending:
                self._finish_capture()
            else:
                # Enough good frames, the chip is still being read: keep taking frames (a better one may
                # come) until the chip step ends or the capture deadline passes.
                self._emit_guidance(Guidance.PLEASE_WAIT)
                if self._clock.monotonic() >= s.deadline:
                    self._finish_capture()
        elif self._clock.monotonic() >= s.deadline:
            s.timed_out = True
            self._finish_capture()

    def _on_document(self, ev: DocumentRead) -> None:
        self._log.info("lane_document_read", number=mask_document_number(ev.document_number), checks_ok=ev.checks_ok)
        if self._state is LaneState.IDLE and self._mode in (Mode.ENTRY, Mode.EXIT):
            self._start_session(document=ev)
        elif self._state is LaneState.CAPTURING and self._session is not None and self._session.document is None:
            self._session.document = ev
        elif self._state is LaneState.IDLE:
            self._emit_guidance(self._idle_guidance())

    def _on_chip(self, ev: ChipRead) -> None:
        s = self._session
        if s is None or s.chip_read_id != ev.read_id or not s.chip_pending:
            # A read for a session that already ended (timed out, aborted): its result changes nothing.
            self._log.info("lane_chip_read_ignored", state=self._state.value)
            return
        s.chip_descriptor = ev.dg2_descriptor
        self._chip_done(s, ev.facts, ev.summary)

    def _chip_done(self, s: _Session, facts: ChipFacts, summary: ChipSummary | None) -> None:
        """The chip step ended (read, failed or timed out): decide now if the capture is done too."""
        s.chip_facts = facts
        s.chip_summary = summary
        s.timings_ms["chip_wait"] = _ms(self._clock.monotonic() - s.started_mono)
        if self._state is LaneState.MATCHING:
            self._match_and_decide()
        elif self._state is LaneState.CAPTURING and s.good_frames >= self._cfg.capture_frames:
            self._finish_capture()

    def _on_boarding_pass(self, ev: BoardingPassRead) -> None:
        self._log.info("lane_boarding_pass_read", flight=ev.flight, valid=ev.valid)
        if self._state is LaneState.IDLE and self._mode is Mode.BOARDING:
            self._start_session(boarding_pass=ev)
        elif (
            self._state is LaneState.CAPTURING
            and self._session is not None
            and self._session.mode is Mode.BOARDING
            and self._session.boarding_pass is None
        ):
            self._session.boarding_pass = ev
        elif self._state is LaneState.IDLE:
            self._emit_guidance(self._idle_guidance())

    def _start_session(
        self, *, document: DocumentRead | None = None, boarding_pass: BoardingPassRead | None = None
    ) -> None:
        now = self._clock.monotonic()
        s = _Session(
            txn_id=str(uuid6.uuid7()),
            mode=self._mode,
            started_mono=now,
            started_at=self._clock.now(),
            deadline=now + self._cfg.capture_timeout_s,
            document=document,
            boarding_pass=boarding_pass,
        )
        if s.mode is Mode.ENTRY and document is not None and document.chip_read_id and self._cfg.policy.chip != "off":
            s.chip_read_id = document.chip_read_id
            s.chip_deadline = now + self._cfg.chip_timeout_s
        self._session = s
        self._log.info("lane_session_started", txn_id=s.txn_id, mode=s.mode.value)
        self._event("session_started")
        self._enter(LaneState.CAPTURING)
        self._emit_guidance(Guidance.LOOK_AT_CAMERA, force=True)

    def _finish_capture(self) -> None:
        s = self._session
        assert s is not None
        s.captured_mono = self._clock.monotonic()
        s.timings_ms["capture"] = _ms(s.captured_mono - s.started_mono)
        if s.best is not None:
            s.chosen_quality = s.best.quality
            s.chosen_issues = list(s.best.issues)
            s.chosen_detail = dict(s.best.detail)
            for stage, ms in s.best.timings_ms.items():
                s.timings_ms[f"engine_{stage}"] = float(ms)
        self._enter(LaneState.MATCHING)
        self._emit_guidance(Guidance.PLEASE_WAIT, force=True)
        if s.chip_pending:
            return  # the chip step's ChipRead (or its deadline, on a Tick) decides
        self._match_and_decide()

    # ---- matching and decision -------------------------------------------------------------------

    def _match_and_decide(self) -> None:
        s = self._session
        assert s is not None
        t0 = self._clock.monotonic()
        gallery = GalleryFacts(available=False)
        matcher_error = False
        # Entry may compare with the document's own portrait instead of a gallery subject.
        reference = Reference.GALLERY if s.mode is not Mode.ENTRY else Reference.DOCUMENT
        try:
            status = self._matcher.status()
            s.gallery_version = status.version
            gallery = GalleryFacts(available=status.available, expired=status.expired)
            if s.best is not None and s.best.good(self._cfg.policy.min_quality):
                gallery, reference = self._compare(s, gallery)
            elif s.mode is not Mode.EXIT:
                gallery, reference = self._resolve_subject_only(s, gallery)
        except Exception as exc:  # a failing gallery must give REFER, never a crash or an open gate
            matcher_error = True
            self._log.error("lane_matcher_failed", txn_id=s.txn_id, error=str(exc), error_type=type(exc).__name__)
        t1 = self._clock.monotonic()
        s.timings_ms["match"] = _ms(t1 - t0)

        inputs = DecisionInputs(
            mode=s.mode,
            today=self._clock.now().date(),
            capture=CaptureFacts(
                frames_seen=s.frames_seen,
                single_face_frames=s.single_face_frames,
                multi_face_frames=s.multi_face_frames,
                chosen_quality=s.best.quality if s.best is not None else None,
                chosen_issues=s.best.issues if s.best is not None else (),
                timed_out=s.timed_out,
            ),
            comparisons=tuple(s.comparisons),
            gallery=gallery,
            document=(
                DocumentFacts(s.document.checks_ok, s.document.expiry, issuer=s.document.issuing_state or None)
                if s.document
                else None
            ),
            boarding_pass=self._boarding_facts(s.boarding_pass),
            chip=s.chip_facts,
            matcher_error=matcher_error,
            reference=reference,
            policy=self._cfg.policy,
        )
        decision = decide(inputs)
        s.decision = decision
        s.timings_ms["decide"] = _ms(self._clock.monotonic() - t1)
        s.best = None  # the descriptors are no longer needed: drop them
        s.chip_descriptor = None
        self._log.info(
            "lane_decision",
            txn_id=s.txn_id,
            decision=decision.verdict.value,
            reasons=[r.value for r in decision.reasons],
        )
        self._event(
            "decision",
            detail={"decision": decision.verdict.value, "reasons": ",".join(r.value for r in decision.reasons)},
        )
        if decision.verdict is Verdict.ACCEPT:
            self._accept(s)
        else:
            self._refer(s)

    def _boarding_facts(self, bp: BoardingPassRead | None) -> BoardingPassFacts | None:
        if bp is None:
            return None
        flights = set(self._scope.flights)
        return BoardingPassFacts(valid=bp.valid, flight_ok=(bp.flight.upper() in flights) if flights else None)

    def _subject_id(self, s: _Session) -> str | None:
        if s.mode is Mode.ENTRY and s.document is not None:
            return self._lookup.by_document(s.document.document_number, s.document.issuing_state)
        if s.mode is Mode.BOARDING and s.boarding_pass is not None and s.boarding_pass.valid:
            return self._lookup.by_boarding_pass(s.boarding_pass)
        return None

    def _resolve_subject_only(self, s: _Session, gallery: GalleryFacts) -> tuple[GalleryFacts, Reference]:
        """No usable frame: still report whether the traveller is known, for the reason codes."""
        if not gallery.available:
            return gallery, Reference.GALLERY if s.mode is not Mode.ENTRY else Reference.DOCUMENT
        subject = self._subject_id(s)
        if (
            s.mode is Mode.ENTRY
            and subject is None
            and s.document
            and (s.document.portrait_descriptor is not None or s.chip_descriptor is not None)
        ):
            return gallery, Reference.DOCUMENT  # the page or chip portrait was the reference, not the gallery
        return GalleryFacts(gallery.available, gallery.expired, subject_found=subject is not None), Reference.GALLERY

    def _compare(self, s: _Session, gallery: GalleryFacts) -> tuple[GalleryFacts, Reference]:
        assert s.best is not None
        desc = s.best.descriptor
        if s.mode is Mode.EXIT:
            if gallery.available:
                s.comparisons = list(self._matcher.search(desc, self._cfg.search_k, self._scope))
                if not any(c.passed for c in s.comparisons) and (self._scope.flights or self._scope.lane):
                    # An enrolled traveller of another flight or lane is told apart from a stranger.
                    miss = self._matcher.scope_miss(desc, self._scope)
                    if miss is not None:
                        gallery = GalleryFacts(gallery.available, gallery.expired, other_scope=miss)
            return gallery, Reference.GALLERY
        if s.mode is Mode.ENTRY and s.document is None:
            return gallery, Reference.GALLERY  # DOCUMENT_MISSING; nothing to compare against
        if s.mode is Mode.ENTRY and s.chip_descriptor is not None:
            # ICAO 9303-11: the live face against the chip's DG2 portrait. It is added to whatever else is
            # compared (gallery, page portrait) and every 1:1 comparison must pass, so a forged page
            # portrait never outvotes the chip.
            found, reference = self._compare_references(s, desc, gallery)
            # Without a gallery subject or a page portrait the chip's portrait is the reference.
            gallery, reference = (found, reference) if s.comparisons else (gallery, Reference.DOCUMENT)
            chip = replace(self._matcher.compare(desc, s.chip_descriptor), kind="1:1_chip", subject_id=None)
            s.comparisons = [*s.comparisons, chip]
            return gallery, reference
        return self._compare_references(s, desc, gallery)

    def _compare_references(
        self, s: _Session, desc: NDArray[np.float32], gallery: GalleryFacts
    ) -> tuple[GalleryFacts, Reference]:
        """Entry and boarding 1:1: the gallery subject of the document / boarding pass, else (entry) the
        document page's portrait."""
        subject = self._subject_id(s) if gallery.available else None
        if subject is not None:
            comparison = self._matcher.verify(desc, subject, self._scope)
            if comparison is not None:
                s.comparisons = [comparison]
                return GalleryFacts(gallery.available, gallery.expired, subject_found=True), Reference.GALLERY
        if s.mode is Mode.ENTRY and s.document is not None and s.document.portrait_descriptor is not None:
            # ABC entry: compare with the face printed on the document page (no gallery involved).
            s.comparisons = [self._matcher.compare(desc, s.document.portrait_descriptor)]
            return gallery, Reference.DOCUMENT
        if s.mode is Mode.BOARDING and (s.boarding_pass is None or not s.boarding_pass.valid):
            return gallery, Reference.GALLERY  # the boarding-pass reason explains it
        return GalleryFacts(gallery.available, gallery.expired, subject_found=False), Reference.GALLERY

    def _accept(self, s: _Session) -> None:
        # Write-ahead: the ACCEPT is on disk before the gate is told anything. No commit, no opening.
        t0 = self._clock.monotonic()
        error = self._emit_record(s)
        s.timings_ms["commit"] = _ms(self._clock.monotonic() - t0)
        if error is not None:
            self._log.error("lane_decision_not_recorded", txn_id=s.txn_id, error=error)
            self._outbox_fault(f"decision not committed ({error})")
            best = s.decision.best if s.decision is not None else None
            s.decision = Decision(Verdict.REFER, (Reason.DECISION_NOT_RECORDED,), best=best)
            self._refer(s)
            return
        self._enter(LaneState.ACCEPT)
        now = self._clock.monotonic()
        if s.completing_frame_time is not None:
            # The lane latency (docs/lane.md, `frame_to_open`): the frame that completed capture -> the
            # turnstile's open command, the commit included.
            s.timings_ms["frame_to_open"] = _ms(now - s.completing_frame_time)
        try:
            opened = self._gate.open_for_passage(s.txn_id, self._cfg.passage_timeout_s)
            gate_error = "" if opened else "refused (link down, emergency or a passage pending)"
        except Exception as exc:
            opened, gate_error = False, str(exc)
        if not opened:
            # The gate did not take the command: nobody passes; the traveller sees an officer. The
            # gate's own link events (link_lost) take the lane out of service when the link is the cause.
            self._log.error("lane_gate_open_failed", txn_id=s.txn_id, error=gate_error)
            self._gate_lock()
            self._emit_guidance(Guidance.SEE_OFFICER, force=True)
            self._finish_session(passage="gate_refused")
            self._after_session()
            return
        s.opened_mono = self._clock.monotonic()
        s.timings_ms["open_command"] = _ms(s.opened_mono - now)
        s.passage_deadline = s.opened_mono + self._cfg.passage_timeout_s + self._cfg.passage_report_grace_s
        self._emit_guidance(Guidance.PLEASE_PROCEED, force=True)

    def _refer(self, s: _Session) -> None:
        self._gate_lock()
        self._enter(LaneState.REFER)
        self._emit_guidance(Guidance.SEE_OFFICER, force=True)
        s.hold_until = self._clock.monotonic() + self._cfg.refer_hold_s
        # Nothing more will be learnt about a referral: record it now, not after the hold.
        error = self._emit_record(s)
        if error is not None:
            self._log.error("lane_referral_not_recorded", txn_id=s.txn_id, error=error)
            self._outbox_fault(f"record not committed ({error})")
        if self._cfg.refer_hold_s <= 0:
            self._finish_session()
            self._after_session()

    def _end_passage(self, result: PassageResult, *, next_state: bool = True) -> None:
        s = self._session
        if s is None:
            return
        if s.opened_mono is not None:
            s.timings_ms["passage"] = _ms(self._clock.monotonic() - s.opened_mono)
        self._log.info("lane_passage_end", txn_id=s.txn_id, result=result)
        self._finish_session(passage=result)
        if next_state:
            self._after_session()

    # ---- ending -------------------------------------------------------------------------------

    def _abort_session(self, reason: Reason) -> None:
        """End a session that had not reached a decision (or was in REFER) because the lane changed."""
        s = self._session
        if s is None:
            return
        if s.decision is None:
            s.decision = Decision(Verdict.REFER, (reason,))
            s.best = None
            s.chip_descriptor = None
            self._log.warning("lane_session_aborted", txn_id=s.txn_id, reason=reason.value)
        self._finish_session()

    def _finish_session(self, passage: PassageResult | None = None) -> None:
        s = self._session
        if s is None:
            return
        self._session = None
        if not s.recorded:
            error = self._emit_record(s)
        elif passage is not None:
            error = self._emit_record(s, passage)
        else:
            return
        if error is not None:
            # The decision is on disk; its passage result is lost. Nobody passes until the store writes again.
            self._log.error("lane_record_not_committed", txn_id=s.txn_id, passage=passage, error=error)
            self._outbox_fault(f"record not committed ({error})")

    def _outbox_fault(self, why: str) -> None:
        """A failed commit makes the outbox faulty here at once (the first cause is kept); only its own
        health report (DeviceHealth "outbox" ok, from the monitor's write probe) clears it."""
        if self._health.get("outbox", (True, ""))[0]:
            self._health["outbox"] = (False, why)

    def _emit_record(self, s: _Session, passage: PassageResult | None = None) -> str | None:
        """Commit one outcome record (never an image or a template): the decision, or with `passage` the
        passage record of an ACCEPT. Returns None once committed, else why it was not."""
        s.recorded = True
        d = s.decision or Decision(Verdict.REFER, (Reason.NO_MATCH,))
        s.timings_ms["total"] = _ms(self._clock.monotonic() - s.started_mono)
        record = OutcomeRecord(
            record="decision" if passage is None else "passage",
            txn_id=s.txn_id,
            gate_id=self._cfg.gate_id,
            mode=s.mode,
            started_at=s.started_at,
            ended_at=self._clock.now(),
            decision=d.verdict,
            reasons=list(d.reasons),
            subject_id=d.subject_id,
            comparisons=[
                ComparisonRecord(
                    kind=c.kind,
                    # Candidate ids are named only when config asks; the matched subject always is.
                    subject_id=(
                        c.subject_id
                        if self._cfg.record_candidate_ids or (c.subject_id is not None and c.subject_id == d.subject_id)
                        else None
                    ),
                    score=float(c.score),
                    threshold=float(c.threshold),
                    higher_is_better=c.higher_is_better,
                    passed=c.passed,
                )
                for c in s.comparisons
            ],
            quality=s.chosen_quality,
            quality_issues=s.chosen_issues,
            quality_detail=s.chosen_detail,
            frames_seen=s.frames_seen,
            single_face_frames=s.single_face_frames,
            multi_face_frames=s.multi_face_frames,
            chip=s.chip_summary,
            document=(
                DocumentSummary(
                    number_masked=mask_document_number(s.document.document_number),
                    issuing_state=s.document.issuing_state,
                    expiry=s.document.expiry,
                    checks_ok=s.document.checks_ok,
                )
                if s.document
                else None
            ),
            boarding_pass=(
                BoardingPassSummary(
                    flight=s.boarding_pass.flight,
                    flight_date=s.boarding_pass.flight_date,
                    valid=s.boarding_pass.valid,
                )
                if s.boarding_pass
                else None
            ),
            passage=passage,
            versions=self._versions.model_copy(update={"gallery": s.gallery_version}),
            timings_ms=dict(s.timings_ms),
        )
        try:
            self._sinks.emit_outcome(record)
        except Exception as exc:  # OutboxFull, disk full, I/O error: the caller decides what it means
            return f"{type(exc).__name__}: {exc}"
        return None

    def _after_session(self) -> None:
        """Where the lane goes once no session is running: EMERGENCY, ALARM, OUT_OF_SERVICE or IDLE."""
        if self._pending_mode is not None:
            self._apply_mode(self._pending_mode)
        if self._emergency:
            self._enter(LaneState.EMERGENCY)
            return
        if self._alarm is not None:
            self._enter(LaneState.ALARM)
            return
        reasons = self._oos_reasons()
        if reasons:
            if self._state is not LaneState.OUT_OF_SERVICE:
                self._enter_out_of_service(reasons)
            return
        self._go_idle()

    def _go_idle(self) -> None:
        self._enter(LaneState.IDLE)
        self._emit_guidance(self._idle_guidance(), force=True)

    # ---- helpers --------------------------------------------------------------------------------

    def _enter(self, state: LaneState, detail: dict[str, str] | None = None) -> None:
        if state is self._state:
            return
        old = self._state
        self._state = state
        self._log.info("lane_state", old=old.value, new=state.value, txn_id=self.txn_id)
        self._event("state_changed", detail={"from": old.value, **(detail or {})})

    def _event(self, kind: Any, detail: dict[str, str] | None = None) -> None:
        ev = LaneEvent(
            kind=kind,
            gate_id=self._cfg.gate_id,
            state=self._state,
            mode=self._mode,
            txn_id=self.txn_id,
            detail=detail or {},
        )
        try:
            self._sinks.emit_event(ev)
        except Exception as exc:
            self._log.error("lane_event_emit_failed", kind=kind, error=str(exc))

    def _emit_guidance(self, kind: Guidance, *, force: bool = False) -> None:
        now = self._clock.monotonic()
        last = self._last_guidance
        if not force and last is not None and last[0] is kind and now - last[1] < self._cfg.guidance_repeat_s:
            return
        self._last_guidance = (kind, now)
        try:
            self._sinks.emit_guidance(kind)
        except Exception as exc:
            self._log.error("lane_guidance_emit_failed", kind=kind.value, error=str(exc))

    def _gate_lock(self) -> None:
        try:
            if not self._gate.lock():
                # Refused during an emergency or with the link down: the controller's own safe state holds.
                self._log.warning("lane_gate_lock_refused")
        except Exception as exc:
            self._log.error("lane_gate_lock_failed", error=str(exc))


def _normal_flights(flights: Sequence[str]) -> tuple[str, ...]:
    """Flight designators as the gallery and the boarding pass compare them: upper case, no spaces."""
    return tuple(dict.fromkeys(f.strip().upper().replace(" ", "") for f in flights if f.strip()))


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
