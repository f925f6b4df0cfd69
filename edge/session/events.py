"""What the lane loop feeds the session: one frozen dataclass per kind of input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from egate.edge.session.policy import ChipFacts
from egate.edge.session.records import ChipSummary
from egate.edge.session.states import GateEventKind
from egate.edge.settings.lane import Mode

if TYPE_CHECKING:  # ports names these events in its Protocols: a runtime import would be a cycle
    from egate.edge.session.ports import FaceLike


@dataclass(frozen=True)
class FaceObserved:
    """The engine's result for one camera frame (all faces found, possibly none)."""

    faces: Sequence[FaceLike]
    frame_seq: int = 0
    frame_time: float | None = None  # clock.monotonic() when the frame was captured
    timings_ms: Mapping[str, float] = field(default_factory=dict)  # engine stages for this frame


@dataclass(frozen=True)
class DocumentRead:
    """A travel document read by the reader (adapted from egate.drivers.document Document / MrzResult)."""

    document_number: str
    issuing_state: str = ""
    expiry: date | None = None
    checks_ok: bool = False  # all ICAO 9303-3 §4.9 check digits valid
    # Descriptor of the face on the document page image, when the engine found one (entry mode fallback).
    portrait_descriptor: NDArray[np.float32] | None = None
    # The MRZ as read on the page (the chip's access key and the DG1 comparison); never logged.
    mrz_lines: tuple[str, ...] = field(default=(), repr=False)
    # Set by the lane when it started a chip read for this document: the session waits for the
    # `ChipRead` with the same id before it decides.
    chip_read_id: str | None = None


@dataclass(frozen=True)
class ChipRead:
    """The ePassport chip step's result for the document whose `DocumentRead.chip_read_id` is `read_id`
    (egate.edge.lane.chip). `facts` is what the policy judges; `dg2_descriptor` the chip portrait's
    descriptor (memory only, None when the chip failed or its face was not found); `summary` the
    record's chip part without personal data."""

    read_id: str
    facts: ChipFacts
    dg2_descriptor: NDArray[np.float32] | None = field(default=None, repr=False)
    summary: ChipSummary | None = None


@dataclass(frozen=True)
class BoardingPassRead:
    """An IATA BCBP (Resolution 792) boarding pass (adapted from egate.drivers.document BoardingPass)."""

    passenger_name: str
    pnr: str  # operating carrier PNR code (BCBP item 7)
    carrier: str  # operating carrier designator (item 42)
    flight_number: str  # flight number (item 43), padding removed
    flight_date: int | None = None  # Julian date of flight (item 46)
    seat: str = ""
    sequence: str = ""  # check-in sequence number (item 107)
    valid: bool = True

    @property
    def flight(self) -> str:
        return f"{self.carrier.strip()}{self.flight_number.strip().lstrip('0')}"


@dataclass(frozen=True)
class GateEventIn:
    """A turnstile event (adapted from egate.drivers.turnstile GateEvent)."""

    kind: GateEventKind
    decision_id: str | None = None  # the txn id given to open_for_passage, when the event names one


@dataclass(frozen=True)
class Tick:
    """Periodic nudge so timeouts fire; the time is read from the controller's clock."""


@dataclass(frozen=True)
class SetMode:
    mode: Mode  # applied at once when no traveller is in a session, else when the session ends


MaintenanceOwner = Literal["technician", "ops", "daemon"]  # daemon: stopping


@dataclass(frozen=True)
class SetFlights:
    """The flights departing through this lane now (signed ops command `set_flights`); empty = any."""

    flights: tuple[str, ...]


@dataclass(frozen=True)
class Maintenance:
    """Take the lane out of service on purpose, or give it back. Each owner holds its own maintenance:
    the lane serves only when no owner holds one, and an owner ends only its own (ops cannot end a
    technician's session by changing the mode, nor a technician an ops closure)."""

    on: bool
    reason: str = "maintenance"
    owner: MaintenanceOwner = "technician"


@dataclass(frozen=True)
class ClearAlarm:
    """An officer acknowledged the alarm."""


@dataclass(frozen=True)
class DeviceHealth:
    device: str  # e.g. "camera", "engine", "gate", "document_reader"
    ok: bool
    reason: str = ""


Event = (
    FaceObserved
    | DocumentRead
    | ChipRead
    | BoardingPassRead
    | GateEventIn
    | Tick
    | SetMode
    | SetFlights
    | Maintenance
    | ClearAlarm
    | DeviceHealth
)
