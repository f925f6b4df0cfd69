"""The small Protocols a session is written against; the lane adapts the real parts to them
(edge/lane/adapters.py), so the state machine is tested with plain objects."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from egate.edge.session.policy import (
    Comparison,
)
from egate.edge.session.records import LaneEvent, OutcomeRecord
from egate.edge.session.states import Guidance

if TYPE_CHECKING:
    # events.py imports FaceLike from here: at run time the annotation stays a string.
    from egate.edge.session.events import BoardingPassRead


@runtime_checkable
class FaceLike(Protocol):
    """One face at the gate (`egate.edge.lane.faces.LaneFace`, made from the engine's FaceObservation)."""

    @property
    def quality(self) -> float:
        """0..1 ranking score: the best of N frames is the highest."""
        ...

    @property
    def descriptor(self) -> NDArray[np.float32]: ...

    @property
    def quality_issues(self) -> Sequence[str]:
        """The engine's quality-gate failure codes (face_too_small, yaw_too_large, ...); empty = fine."""
        ...

    @property
    def quality_detail(self) -> Mapping[str, float]:
        """Quality measurements for the outcome record (numbers only, never pixels)."""
        ...


class Gate(Protocol):
    """The turnstile (egate.drivers.turnstile.base.GateController). The session never releases the emergency
    exit: the controller does that on its own input and only reports it."""

    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        """True when the controller acknowledged the release for one passage."""
        ...

    def lock(self) -> bool:
        """Lock the entry (egress stays free); False when refused (emergency, link down)."""
        ...


@dataclass(frozen=True)
class GalleryStatus:
    available: bool
    expired: bool = False
    version: str | None = None  # the active gallery's version / bundle id, for the outcome record


@dataclass(frozen=True)
class MatchScope:
    """Which gallery subjects may pass at this lane: those tagged for this lane (or for no lane) and, when
    flights are set, those tagged with one of them (or with no flight). Empty: everyone is eligible."""

    lane: str | None = None
    flights: tuple[str, ...] = ()


ScopeMiss = Literal["flight", "lane"]


class Matcher(Protocol):
    """Biometric comparisons (egate.edge.gallery.store.Gallery + the engine's 1:1 threshold, adapted)."""

    def status(self) -> GalleryStatus: ...

    def search(self, descriptor: NDArray[np.float32], k: int, scope: MatchScope) -> Sequence[Comparison]:
        """1:N among the subjects eligible in `scope`: the k best (kind "1:N"), any order."""
        ...

    def scope_miss(self, descriptor: NDArray[np.float32], scope: MatchScope) -> ScopeMiss | None:
        """After a 1:N without a match: does the face match an enrolled subject of another flight or
        lane? Only the verdict leaves the matcher (no id, no score of the other subject)."""
        ...

    def verify(self, descriptor: NDArray[np.float32], subject_id: str, scope: MatchScope) -> Comparison | None:
        """1:1 against one gallery subject (kind "1:1_gallery"); None when the gallery has no such
        subject eligible in `scope` (its lane), which the policy reports as NOT_IN_GALLERY."""
        ...

    def compare(self, descriptor: NDArray[np.float32], reference: NDArray[np.float32]) -> Comparison:
        """1:1 against a descriptor from the document page's portrait (kind "1:1_document")."""
        ...


class SubjectLookup(Protocol):
    """Finds the opaque gallery subject id of a traveller; None when the gallery has no such traveller."""

    def by_document(self, document_number: str, issuing_state: str) -> str | None: ...

    def by_boarding_pass(self, boarding_pass: BoardingPassRead) -> str | None: ...


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds for timeouts and durations."""
        ...

    def now(self) -> datetime:
        """Aware timezone.utc wall time for records and document expiry."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class LaneSinks(Protocol):
    """Where the session's outputs go (the daemon: outbox, turnstile LEDs/buzzer, status topic)."""

    def emit_outcome(self, record: OutcomeRecord) -> None: ...

    def emit_guidance(self, kind: Guidance) -> None: ...

    def emit_event(self, event: LaneEvent) -> None: ...
