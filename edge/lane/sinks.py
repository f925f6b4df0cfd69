"""Where a session's outputs go (`LaneSinks`): outcome records into the outbox before the lane goes on,
guidance to the gate's lamps and the screen, lane events to ops; the recent outcomes for technicians."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import structlog

from egate.edge.lane import status as lane_status
from egate.edge.lane.adapters import gate_guidance
from egate.edge.lane.gate_part import GatePart
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.outbox_part import OutboxPart
from egate.edge.session.records import LaneEvent, OutcomeRecord
from egate.edge.session.states import Guidance
from egate.edge.uplink.outbox import OutboxError

log = structlog.get_logger(__name__)

RECENT_OUTCOMES = 100
_STATUS_EVENTS = ("mode_changed", "flights_changed", "in_service", "out_of_service")


class LaneSinks:
    def __init__(
        self, outbox: OutboxPart, gate: GatePart, board: HealthBoard, on_status_change: Callable[[], None]
    ) -> None:
        self._outbox = outbox
        self._gate = gate
        self._board = board
        self._on_status_change = on_status_change
        self.recent_outcomes: deque[OutcomeRecord] = deque(maxlen=RECENT_OUTCOMES)
        self.guidance: Guidance | None = None
        self.last_event_at = time.time()  # wall time of the lane's last event (the screen shows changes)

    def emit_outcome(self, record: OutcomeRecord) -> None:
        outbox = self._outbox.opened
        if outbox is None:
            raise OutboxError("the outbox is not open: nothing can be recorded")
        try:
            # Committed (fsynced) before the lane goes on; the link forwards it when it can.
            outbox.append("outcome", record.model_dump(mode="json"))
        except Exception:
            # The controller marks the outbox faulty itself (this runs on its thread: no posting to its own
            # queue here). Forget the last reported health so the monitor reports the outbox's state, and
            # later its recovery, even when they read the same as before the failure.
            self._board.forget("outbox", False, "commit failed")
            raise
        self._remember(record)
        log.info(
            "lane_outcome",
            record=record.record,
            txn_id=record.txn_id,
            decision=record.decision.value,
            reasons=[r.value for r in record.reasons],
            passage=record.passage,
            frame_to_open_ms=record.timings_ms.get("frame_to_open"),
        )

    def _remember(self, record: OutcomeRecord) -> None:
        """Recent sessions for the control API: a passage record replaces its session's decision record."""
        if record.record == "passage":
            for old in list(self.recent_outcomes):
                if old.txn_id == record.txn_id:
                    self.recent_outcomes.remove(old)
        self.recent_outcomes.appendleft(record)

    def emit_guidance(self, kind: Guidance) -> None:
        self.guidance = kind
        self.last_event_at = time.time()
        log.info("lane_guidance", guidance=kind.value)
        # Lamps and buzzer only over a live link (the controller shows its own fault state otherwise).
        gate = self._gate.built
        if gate is not None and gate.link_state == "up":
            try:
                gate.set_guidance(gate_guidance(kind))
            except Exception as exc:
                log.warning("lane_guidance_to_gate_failed", error=str(exc))

    def emit_event(self, event: LaneEvent) -> None:
        self.last_event_at = time.time()
        payload = lane_status.event_payload(event)
        outbox = self._outbox.opened
        if payload is not None and outbox is not None:
            outbox.append("event", payload.model_dump(mode="json"))
        if event.kind in _STATUS_EVENTS:
            self._on_status_change()
