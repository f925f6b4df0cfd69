"""What a lane can be in and what it tells the traveller: states, guidance, gate event kinds."""

from __future__ import annotations

from typing import Literal

from egate.drivers.compat import StrEnum
from egate.drivers.turnstile.base import GateEventKind as TurnstileEventKind


class LaneState(StrEnum):
    IDLE = "idle"
    CAPTURING = "capturing"
    MATCHING = "matching"
    ACCEPT = "accept"
    REFER = "refer"
    ALARM = "alarm"
    EMERGENCY = "emergency"
    OUT_OF_SERVICE = "out_of_service"


class Guidance(StrEnum):
    """What the traveller is told (screen, LED, buzzer); the daemon maps these to the gate's outputs."""

    READY = "ready"
    LOOK_AT_CAMERA = "look_at_camera"
    COME_CLOSER = "come_closer"
    STEP_BACK = "step_back"
    MOVE_LEFT = "move_left"  # the traveller's left (the camera faces them)
    MOVE_RIGHT = "move_right"
    LOOK_STRAIGHT = "look_straight"
    ONE_PERSON_AT_A_TIME = "one_person_at_a_time"
    PRESENT_DOCUMENT = "present_document"
    SCAN_BOARDING_PASS = "scan_boarding_pass"  # noqa: S105 - guidance kind, not a password
    PLEASE_WAIT = "please_wait"
    PLEASE_PROCEED = "please_proceed"
    SEE_OFFICER = "see_officer"
    ALARM = "alarm"
    EMERGENCY = "emergency"
    OUT_OF_SERVICE = "out_of_service"


# The turnstile's event kinds are the session's: one list, owned by the driver's contract.
GateEventKind = TurnstileEventKind

PassageResult = Literal[
    "completed", "timed_out", "no_report", "gate_refused", "link_lost", "tailgate", "door_forced", "emergency"
]
