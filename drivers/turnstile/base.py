"""The protocol-neutral gate interface: what the session controller may ask of any gate.

OSDP is one implementation (`egate.drivers.turnstile.osdp`); a vendor protocol can implement the same ABC.
Safety contract for every implementation (ARCHITECTURE.md "Safety first"):
- unknown state, link loss, controller fault and `close()` leave the gate in its safe state:
  entry locked, egress free;
- while the emergency input is active everything is released and every open/lock request is
  refused (and logged); software never holds a door against it;
- a decision id opens the gate at most once, whatever the caller retries.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

GateEventKind = Literal[
    "passage_completed",
    "passage_timed_out",
    "tailgate",
    "door_forced",
    "emergency_on",
    "emergency_off",
    "link_lost",
    "link_restored",
    "secure_channel_failed",
]

# "stopped": not started; "connecting": first connection attempt; "up": online (with secure channel
# when required); "down": lost, reconnecting with backoff; "closed": after close().
LinkState = Literal["stopped", "connecting", "up", "down", "closed"]

# Traveller guidance lamps/buzzer: off, green "proceed", red "stop", red + buzzer "alarm".
GuidanceKind = Literal["off", "proceed", "stop", "alarm"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class GateEvent(BaseModel):
    """One thing the gate did or saw. Terminal events for an opened decision carry its id:
    exactly one of passage_completed, passage_timed_out, or (when a fault cancels the passage)
    emergency_on / link_lost with `decision_id` set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(1, description="Schema version of this event.")
    kind: GateEventKind = Field(description="What happened.")
    decision_id: str | None = Field(None, max_length=128, description="Decision the event belongs to, if any.")
    detail: str = Field("", max_length=500, description="Human-readable detail for logs and technicians.")
    at: datetime = Field(default_factory=utc_now, description="When the driver saw it (timezone.utc).")


GateEventCallback = Callable[[GateEvent], None]


class GateController(abc.ABC):
    """A gate (turnstile, swing doors, flap barrier) driven by egate.

    Events go to the callback given at construction, from the driver's own thread: the callback
    must return quickly (hand the event to the session controller's queue)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Open the link and start supervising it; returns at once (the link comes up in the background)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Put the gate in its safe state (entry locked, egress free), then release the port. Idempotent."""

    @abc.abstractmethod
    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        """Release the entry for exactly one passage of the traveller of `decision_id`.

        True when the controller acknowledged the release. A decision id is spent by its first call:
        later calls send nothing and return the first call's answer. Refused (False) while the link is
        down, during an emergency, or while another passage is pending."""

    @abc.abstractmethod
    def lock(self) -> bool:
        """Lock the entry now (egress stays free), cancelling any pending passage silently.
        False when refused (emergency input active) or the link is down."""

    @abc.abstractmethod
    def emergency_release(self) -> bool:
        """Release everything (entry and egress) until `lock()`; the operator's or building's order."""

    @abc.abstractmethod
    def set_guidance(self, kind: GuidanceKind) -> bool:
        """Show traveller guidance (lamps/buzzer). False when the link is down."""

    @property
    @abc.abstractmethod
    def link_state(self) -> LinkState:
        """Current link state (also logged on every change)."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for the status topic."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
