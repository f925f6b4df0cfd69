"""The gate controller as a lane part: the configured driver (`[turnstile] type`), its events into the
lane, waiters for a technician's gate cycle, and its link judged for the session."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from egate.drivers.turnstile.base import GateController, GateEvent
from egate.drivers.turnstile.registry import GateSetupError, build_gate
from egate.edge.lane.adapters import gate_event_in
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.part import Part
from egate.edge.service.daemon import Health, StartError
from egate.edge.service.secrets import read_credential
from egate.edge.session.events import Event
from egate.edge.settings import Settings

log = structlog.get_logger(__name__)

_LOGGED_KINDS = ("tailgate", "door_forced", "emergency_on", "emergency_off", "secure_channel_failed")


class GatePart(Part):
    """Built (driver chosen, key read) by `build()` before the session is made, which needs the gate; its
    link is started later, in the lane's order (`start()`)."""

    name = "turnstile"

    def __init__(self, settings: Settings, post: Callable[[Event], None], board: HealthBoard) -> None:
        self._settings = settings
        self._post = post
        self._board = board
        self._gate: GateController | None = None
        self._waiters: dict[str, tuple[threading.Event, list[GateEvent]]] = {}

    @property
    def gate(self) -> GateController:
        return self._require(self._gate, "the gate controller")

    @property
    def built(self) -> GateController | None:
        return self._gate

    def build(self) -> GateController:
        """The configured driver, not yet started (it touches no device)."""
        if self._gate is None:
            try:
                self._gate = build_gate(self._settings.turnstile, read_credential, self._on_event)
            except GateSetupError as exc:
                raise StartError(f"{exc}; {exc.hint}") from None
        return self._gate

    def start(self) -> None:
        self.gate.start()  # the driver warns itself about commissioning settings (install mode)

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()  # leaves the controller in its safe state: entry locked, egress free

    def health(self) -> Health:
        return Health(True, f"link {self.gate.link_state}")

    def poll(self) -> None:
        if self._gate is None:
            return
        if self._gate.status().link_auth_failed:
            self._board.report("gate", False, "the controller refuses our key: the link key does not match")
        else:
            state = self._gate.link_state
            self._board.report("gate", state == "up", "" if state == "up" else f"turnstile link {state}")

    def _on_event(self, event: GateEvent) -> None:
        if event.decision_id is not None and event.decision_id in self._waiters:
            done, seen = self._waiters[event.decision_id]
            seen.append(event)
            done.set()
        self._post(gate_event_in(event))
        if event.kind in _LOGGED_KINDS:
            log.warning("gate_event", kind=event.kind, detail=event.detail)

    def wait_event(self, decision_id: str) -> tuple[threading.Event, list[GateEvent]]:
        """Collect the gate's events for `decision_id` (a technician's cycle) until `drop_waiter`."""
        entry: tuple[threading.Event, list[GateEvent]] = (threading.Event(), [])
        self._waiters[decision_id] = entry
        return entry

    def drop_waiter(self, decision_id: str) -> None:
        self._waiters.pop(decision_id, None)
