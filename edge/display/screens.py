"""Which screen the traveller sees for a lane view: a pure function, the page only renders it.

Accept and refer differ by shape, icon and words, not by colour alone (WCAG 2.2 SC 1.4.1): `proceed`
is an arrow in a circle, `see_officer` an open hand in a square. The screen of a referral never says
why (the reason codes stay with the officer).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from egate.edge.display.model import LaneView

Screen = Literal[
    "welcome_exit",
    "welcome_entry",
    "welcome_boarding",
    "look_at_camera",
    "come_closer",
    "step_back",
    "move_left",
    "move_right",
    "look_straight",
    "one_person",
    "please_wait",
    "proceed",
    "see_officer",
    "out_of_service",
    "closed",
    "emergency",
    "alarm",
]
SCREENS: tuple[str, ...] = Screen.__args__  # type: ignore[attr-defined]

# Guidance kinds while CAPTURING -> the positioning screens.
_CAPTURE_GUIDANCE: dict[str, Screen] = {
    "look_at_camera": "look_at_camera",
    "come_closer": "come_closer",
    "step_back": "step_back",
    "move_left": "move_left",
    "move_right": "move_right",
    "look_straight": "look_straight",
    "one_person_at_a_time": "one_person",
}
_WELCOME: dict[str, Screen] = {"exit": "welcome_exit", "entry": "welcome_entry", "boarding": "welcome_boarding"}


class ScreenView(BaseModel):
    """What the page gets over SSE: the screen and the facts it needs to render it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    at: float  # the lane event's wall time, for the page's latency measurement
    screen: Screen
    mode: str
    language: str | None = None  # the document's language, when one was read
    connected: bool = True  # False: the display lost the daemon (the screen is out_of_service)


def screen_for(view: LaneView) -> Screen:
    if view.state == "emergency":
        return "emergency"
    if view.state == "alarm":
        return "alarm"
    if view.state == "out_of_service":
        return "closed" if view.maintenance else "out_of_service"
    if view.state == "accept":
        return "proceed"
    if view.state == "refer":
        return "see_officer"
    if view.state == "matching":
        return "please_wait"
    if view.state == "capturing":
        if view.guidance == "please_wait":
            return "please_wait"
        return _CAPTURE_GUIDANCE.get(view.guidance or "", "look_at_camera")
    if view.state == "idle" and view.guidance == "one_person_at_a_time":
        return "one_person"
    return _WELCOME.get(view.mode, "welcome_exit")


def screen_view(view: LaneView) -> ScreenView:
    return ScreenView(seq=view.seq, at=view.at, screen=screen_for(view), mode=view.mode, language=view.language)


def disconnected_view(seq: int, at: float, mode: str = "exit") -> ScreenView:
    """The screen while the display has no live daemon behind it: never a stale 'please proceed'."""
    return ScreenView(seq=seq, at=at, screen="out_of_service", mode=mode, connected=False)
