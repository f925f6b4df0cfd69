"""The door cycle: what the gate should do, given requests, input reports and time. No I/O, no clock.

Protocol-neutral: it speaks in output on/off orders and GateEvents; `egate.drivers.turnstile.gates.osdp` turns
the orders into OSDP osdp_OUT commands and feeds it osdp_ISTATR input reports. Keeping it pure lets
the whole safety logic be read (and tested) as a table of states.

States:
  safe              link down or not yet up: nothing can be commanded; the controller holds its own
                    safe state (entry locked, egress free) and inputs are unknown.
  locked            in service, entry locked, egress free.
  released          entry released for one decision; waiting for the passage to start.
  passing           a passage sensor saw the traveller; waiting for every sensor to clear.
  emergency         the emergency input is active: the controller itself releases everything
                    (docs/turnstile.md); software asks for egress free, never latches the entry
                    open, and refuses requests. When the input clears the entry is locked, with or
                    without egate: a daemon that died during the emergency leaves nothing open.
  emergency_release software ordered everything released (operator/building); ends with lock().
                    The entry is held by a lease (a timed release renewed while the order lasts),
                    so a dead daemon's release runs out by itself even on a controller without a
                    link-loss rule.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from egate.drivers.turnstile.base import GateEvent, GateEventKind
from egate.drivers.turnstile.config import TurnstileIoMap

GateState = Literal["safe", "locked", "released", "passing", "emergency", "emergency_release"]

# OSDP osdp_OUT control codes (IEC 60839-11-5, output control command).
OUT_PERMANENT_OFF = 1  # permanent off, abort any timed operation
OUT_PERMANENT_ON = 2  # permanent on, abort any timed operation
OUT_TEMPORARY_ON = 5  # temporary on for timer_count x 100 ms, then back to the permanent state

# libosdp 3.2.9's binding keeps only 8 bits of timer_count (docs/turnstile.md): 255 x 100 ms at most.
MAX_TIMER_COUNT = 255

# How many decision ids are remembered to refuse a second opening. At one passage every few
# seconds this covers days; an id older than that is not a retry.
SPENT_DECISIONS_KEPT = 100_000

# A software emergency release is renewed this often; each renewal is a timed release of
# MAX_TIMER_COUNT (25.5 s), so it lapses within that time once egate stops renewing it.
RELEASE_LEASE_RENEW_S = 10.0


@dataclass(frozen=True)
class OutputOrder:
    """One output change, in OSDP terms (output number, control code, timer in 100 ms units)."""

    output_no: int
    control_code: int
    timer_count: int = 0


@dataclass
class Actions:
    outputs: list[OutputOrder] = field(default_factory=list)
    events: list[GateEvent] = field(default_factory=list)


@dataclass(frozen=True)
class OpenAnswer:
    accepted: bool
    reason: str  # "" when accepted; else why it was refused, for the log
    actions: Actions


def check_open_request(decision_id: str, timeout_s: float) -> None:
    """The arguments every driver's `open_for_passage` must refuse before anything is sent."""
    from egate.drivers.turnstile.config import MAX_PASSAGE_TIMEOUT_S

    if not decision_id:
        raise ValueError("open_for_passage: decision_id must be a non-empty string")
    if not 0.0 < timeout_s <= MAX_PASSAGE_TIMEOUT_S:
        raise ValueError(f"open_for_passage: timeout_s must be in (0, {MAX_PASSAGE_TIMEOUT_S:g}] s, got {timeout_s}")


# Traveller guidance as lamp and buzzer states: (green, red, buzzer).
_GUIDANCE_LAMPS: dict[str, tuple[bool, bool, bool]] = {
    "off": (False, False, False),
    "proceed": (True, False, False),
    "stop": (False, True, False),
    "alarm": (False, True, True),
}


def guidance_outputs(io: TurnstileIoMap, kind: str) -> list[tuple[int, bool]]:
    """(output number, on) for each lamp and buzzer the gate has, to show guidance `kind`."""
    wanted = _GUIDANCE_LAMPS[kind]
    numbers = (io.guidance_green_output, io.guidance_red_output, io.buzzer_output)
    return [(number, on) for number, on in zip(numbers, wanted, strict=True) if number is not None]


def backstop_timer_count(timeout_s: float) -> int:
    """Timer for the controller to relock on its own should egate hang: twice the passage timeout
    plus one second, in 100 ms units, within what the binding can carry."""
    return min(MAX_TIMER_COUNT, math.ceil((2.0 * timeout_s + 1.0) * 10.0))


class DoorCycle:
    def __init__(self, io: TurnstileIoMap) -> None:
        self._io = io
        self.state: GateState = "safe"
        self.decision_id: str | None = None
        self.last_decision_id: str | None = None
        self._timeout_s = 0.0
        self._deadline = math.inf
        self._seen_sensors: set[int] = set()
        self.inputs: dict[int, bool] | None = None  # logical (inversion applied); None = unknown
        self._spent: OrderedDict[str, bool] = OrderedDict()
        self._lease_renew_at = math.inf  # when the software emergency release is renewed

    # ----------------------------------------------------------------- orders
    def _entry(self, on: bool) -> OutputOrder:
        code = OUT_PERMANENT_ON if on else OUT_PERMANENT_OFF
        return OutputOrder(self._io.entry_release_output, code)

    def _exit_free(self) -> OutputOrder:
        return OutputOrder(self._io.exit_release_output, OUT_PERMANENT_ON)

    def locked_outputs(self) -> list[OutputOrder]:
        return [self._entry(False), self._exit_free()]

    def released_all_outputs(self) -> list[OutputOrder]:
        """Entry released on a lease (see RELEASE_LEASE_RENEW_S), egress free."""
        return [OutputOrder(self._io.entry_release_output, OUT_TEMPORARY_ON, MAX_TIMER_COUNT), self._exit_free()]

    def safe_outputs(self) -> list[OutputOrder]:
        """What to send on close(): entry locked, egress free; during an emergency only egress
        free (the controller holds everything open and software never fights it)."""
        if self.state == "emergency":
            return [self._exit_free()]
        return self.locked_outputs()

    # --------------------------------------------------------------- queries
    @property
    def emergency_active(self) -> bool:
        return self.state == "emergency"

    def next_deadline(self) -> float:
        return min(self._deadline, self._lease_renew_at)

    def spent_answer(self, decision_id: str) -> bool | None:
        return self._spent.get(decision_id)

    def _spend(self, decision_id: str, accepted: bool) -> None:
        self._spent[decision_id] = accepted
        self._spent.move_to_end(decision_id)
        while len(self._spent) > SPENT_DECISIONS_KEPT:
            self._spent.popitem(last=False)

    def _end_passage(self) -> str | None:
        ended = self.decision_id
        if ended is not None:
            self.last_decision_id = ended
        self.decision_id = None
        self._deadline = math.inf
        self._seen_sensors = set()
        return ended

    # -------------------------------------------------------------- requests
    def request_open(self, decision_id: str, timeout_s: float, now: float) -> OpenAnswer:
        if decision_id in self._spent:
            # A retry of a decision already handled: send nothing (no second opening).
            return OpenAnswer(self._spent[decision_id], "decision_already_used", Actions())
        refusal = {
            "safe": "link_down",
            "emergency": "emergency_input_active",
            "emergency_release": "emergency_release_active",
            "released": "another_passage_pending",
            "passing": "another_passage_pending",
        }.get(self.state)
        if refusal is not None:
            self._spend(decision_id, False)
            return OpenAnswer(False, refusal, Actions())
        self._spend(decision_id, True)
        self.state = "released"
        self.decision_id = decision_id
        self._timeout_s = timeout_s
        self._deadline = now + timeout_s
        self._seen_sensors = set()
        order = OutputOrder(self._io.entry_release_output, OUT_TEMPORARY_ON, backstop_timer_count(timeout_s))
        return OpenAnswer(True, "", Actions(outputs=[order]))

    def open_failed(self, decision_id: str) -> Actions:
        """The controller did not acknowledge the release: relock, and remember the id as refused."""
        self._spend(decision_id, False)
        if self.decision_id != decision_id or self.state not in ("released", "passing"):
            return Actions()
        self._end_passage()
        self.state = "locked"
        return Actions(outputs=[self._entry(False)])

    def request_lock(self) -> tuple[bool, str, Actions]:
        if self.state == "emergency":
            return False, "emergency_input_active", Actions()
        if self.state == "safe":
            return False, "link_down", Actions()
        self._end_passage()  # the caller cancels its own passage: no event
        self._lease_renew_at = math.inf
        self.state = "locked"
        return True, "", Actions(outputs=self.locked_outputs())

    def request_emergency_release(self, now: float) -> tuple[bool, str, Actions]:
        if self.state == "emergency":
            return True, "", Actions()  # the controller already released everything
        if self.state == "safe":
            return False, "link_down", Actions()
        self._end_passage()
        self.state = "emergency_release"
        self._lease_renew_at = now + RELEASE_LEASE_RENEW_S
        return True, "", Actions(outputs=self.released_all_outputs())

    # ------------------------------------------------------------------ link
    def link_up(self) -> Actions:
        """Back in service: inputs are unknown until the controller's first report."""
        self.inputs = None
        self._end_passage()
        self._lease_renew_at = math.inf
        self.state = "locked"
        return Actions(outputs=self.locked_outputs())

    def link_down(self, detail: str) -> Actions:
        """Nothing can be sent; the controller's own fail-safe holds the gate. One link_lost event,
        carrying the decision whose passage this cancels."""
        if self.state == "safe":
            return Actions()
        cancelled = self._end_passage()
        self._lease_renew_at = math.inf  # the controller's link-loss rule ends any release
        self.state = "safe"
        self.inputs = None
        return Actions(events=[GateEvent(kind="link_lost", decision_id=cancelled, detail=detail)])

    # ---------------------------------------------------------------- inputs
    def _logical(self, report: bytes) -> dict[int, bool]:
        inverted = set(self._io.inverted_inputs)
        states: dict[int, bool] = {}
        for number in self._io.inputs():
            raw = number < len(report) and report[number] != 0
            states[number] = raw != (number in inverted)
        return states

    def on_inputs(self, report: bytes, now: float) -> Actions:
        """An osdp_ISTATR report (one byte per input). Inputs are unknown after a (re)connect and
        count as inactive: a controller may report only changes, and an alarm already present when
        the link comes up (door open, detector tripped) must be reported, not taken as normal."""
        if self.state == "safe":
            return Actions()
        new = self._logical(report)
        old = self.inputs if self.inputs is not None else dict.fromkeys(new, False)
        self.inputs = new
        actions = Actions()

        def rose(number: int | None) -> bool:
            return number is not None and new[number] and not old[number]

        def event(kind: GateEventKind, detail: str, decision_id: str | None = None) -> None:
            actions.events.append(GateEvent(kind=kind, decision_id=decision_id, detail=detail))

        emergency = self._io.emergency_input
        if new[emergency] and not old[emergency]:
            cancelled = self._end_passage()
            self._lease_renew_at = math.inf
            self.state = "emergency"
            # The controller releases everything on its own input; software only keeps egress free
            # and latches nothing open, so the entry is locked again when the input clears, whether
            # or not egate is still running then.
            actions.outputs = [self._exit_free()]
            event("emergency_on", "emergency input active: everything released", cancelled)
            return actions
        if not new[emergency] and old[emergency]:
            self.state = "locked"
            actions.outputs = self.locked_outputs()
            event("emergency_off", "emergency input cleared: entry locked, egress free")
            return actions
        if self.state == "emergency":
            return actions

        if rose(self._io.tailgate_input):
            event("tailgate", "tailgate/intrusion detector active", self.decision_id or self.last_decision_id)

        if rose(self._io.door_position_input) and self.state == "locked":
            event("door_forced", "door opened while the entry was locked")

        sensors = self._io.passage_sensor_inputs
        active = {n for n in sensors if new[n]}
        if self.state == "released" and active:
            self.state = "passing"
            self._deadline = now + self._timeout_s  # the same timeout bounds the passage itself
            self._seen_sensors = set(active)
            return actions
        if self.state == "passing":
            self._seen_sensors |= active
            if not active:
                complete = self._seen_sensors == set(sensors)
                decision = self._end_passage()
                self.state = "locked"
                actions.outputs = [self._entry(False)]
                if complete:
                    event("passage_completed", "traveller passed; entry locked", decision)
                else:
                    event("passage_timed_out", "traveller turned back; entry locked", decision)
            return actions
        if self.state == "locked" and any(new[n] and not old[n] for n in sensors):
            event("tailgate", "passage sensor active while the entry was locked (intrusion)", self.last_decision_id)
        return actions

    # ------------------------------------------------------------------ time
    def on_tick(self, now: float) -> Actions:
        if self.state == "emergency_release" and now >= self._lease_renew_at:
            self._lease_renew_at = now + RELEASE_LEASE_RENEW_S
            return Actions(outputs=self.released_all_outputs())
        if now < self._deadline or self.state not in ("released", "passing"):
            return Actions()
        waited = "start" if self.state == "released" else "finish"
        decision = self._end_passage()
        self.state = "locked"
        detail = f"traveller did not {waited} the passage within {self._timeout_s:g} s; entry locked"
        return Actions(
            outputs=[self._entry(False)],
            events=[GateEvent(kind="passage_timed_out", decision_id=decision, detail=detail)],
        )
