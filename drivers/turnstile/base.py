"""The protocol-neutral gate interface: what the lane may ask of any gate, and what any gate reports.

Implementations are plug-ins in `egate.drivers.turnstile.gates` (OSDP, Modbus dry contacts), chosen by
`[turnstile] type` (`egate.drivers.turnstile.registry`). Safety contract for every implementation
(docs/turnstile.md):
- unknown state, link loss, controller fault and `close()` leave the gate in its safe state:
  entry locked, egress free;
- while the emergency input is active everything is released and every open/lock request is
  refused (and logged); software never holds a door against it;
- a decision id opens the gate at most once, whatever the caller retries.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

from egate.drivers.clock import utc_now

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


# How the link to the controller is protected: OSDP's secure channel (AES-128), OSDP in plaintext (a
# workshop bench only), or a protocol that has no security at all (dry contacts through Modbus RTU: the
# RS-485 line must stay inside the gate's locked cabinet).
LinkSecurity = Literal["secure_channel", "plaintext", "none"]


class SerialLinkStatus(BaseModel):
    """The serial port under a gate driver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open: bool = Field(description="The port is open now.")
    rx_bytes: int = Field(0, ge=0, description="Bytes received since start.")
    tx_bytes: int = Field(0, ge=0, description="Bytes sent since start.")
    opens: int = Field(0, ge=0, description="Successful opens since start.")
    last_error: str = Field("", max_length=500, description="The last open or I/O error, empty if none.")


class GateStatus(BaseModel):
    """A gate driver's state, the same shape for every driver: what the lane, the self-test and the
    status topic read. Driver-only figures go to `diagnostics` and are shown, never interpreted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(1, description="Schema version of this status.")
    driver: str = Field(description="The driver, as `[turnstile] type` names it (osdp, modbus).")
    endpoint: str = Field(description="Where the controller is: port and bus address.")
    link_state: LinkState = Field(description="Link to the controller.")
    link_changed_at: float = Field(description="When link_state last changed (UNIX time).")
    link_security: LinkSecurity = Field(description="How the link is protected.")
    link_auth_failed: bool = Field(
        False, description="The controller answers but refuses our key (OSDP secure channel): a key to fix."
    )
    key_credential: str | None = Field(
        None, description="The credential holding the link key, when the driver uses one (to name it in a fix)."
    )
    commissioning: bool = Field(
        False, description="A commissioning setting is active (OSDP install mode or default key): not for service."
    )
    gate_state: str = Field(description="The door cycle's state (safe, released, passing, emergency, ...).")
    emergency: bool = Field(description="The emergency input is active: everything released.")
    pending_decision: str | None = Field(None, description="Decision id of the passage in progress, if any.")
    inputs: dict[str, bool] | None = Field(None, description="Inputs by role, None before the first report.")
    counters: dict[str, int] = Field(default_factory=dict, description="Driver counters (polls, errors, ...).")
    serial: SerialLinkStatus | None = Field(None, description="The serial port, when the driver reports it.")
    diagnostics: dict[str, float | int | str | bool | None] = Field(
        default_factory=dict, description="Driver-specific figures for technicians."
    )


@runtime_checkable
class GateController(Protocol):
    """A gate (turnstile, swing doors, flap barrier) driven by egate.

    Events go to the callback given at construction, from the driver's own thread: the callback
    must return quickly (hand the event to the session controller's queue)."""

    def start(self) -> None:
        """Open the link and start supervising it; returns at once (the link comes up in the background)."""
        ...

    def close(self) -> None:
        """Put the gate in its safe state (entry locked, egress free), then release the port. Idempotent."""
        ...

    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        """Release the entry for exactly one passage of the traveller of `decision_id`.

        True when the controller acknowledged the release. A decision id is spent by its first call:
        later calls send nothing and return the first call's answer. Refused (False) while the link is
        down, during an emergency, or while another passage is pending."""
        ...

    def lock(self) -> bool:
        """Lock the entry now (egress stays free), cancelling any pending passage silently.
        False when refused (emergency input active) or the link is down."""
        ...

    def emergency_release(self) -> bool:
        """Release everything (entry and egress) until `lock()`; the operator's or building's order."""
        ...

    def set_guidance(self, kind: GuidanceKind) -> bool:
        """Show traveller guidance (lamps/buzzer). False when the link is down."""
        ...

    @property
    def link_state(self) -> LinkState:
        """Current link state (also logged on every change)."""
        ...

    def status(self) -> GateStatus:
        """A snapshot for the lane, the self-test and the status topic."""
        ...

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
