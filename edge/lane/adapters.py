"""Adapters from the real parts to the lane session's events and Protocols.

The session (`egate.edge.session.machine`) is written against small Protocols and plain event dataclasses so it is
tested on its own; these functions and classes are the one place that knows the reader's, the
turnstile's and the gallery's own types.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from datetime import datetime

import numpy as np
import structlog
from numpy.typing import NDArray

from egate.drivers.document.models import BcbpResult, Leg, MrzResult
from egate.drivers.turnstile.base import GateEvent, GuidanceKind
from egate.edge.gallery.store import Gallery
from egate.edge.session.events import BoardingPassRead, DocumentRead, GateEventIn
from egate.edge.session.policy import Comparison
from egate.edge.session.ports import GalleryStatus, MatchScope, ScopeMiss
from egate.edge.session.states import Guidance

log = structlog.get_logger(__name__)

__all__ = [
    "GalleryMatcher",
    "HashedSubjectLookup",
    "boarding_pass_read",
    "document_read",
    "gate_event_in",
    "gate_guidance",
]


def gate_event_in(event: GateEvent) -> GateEventIn:
    """egate.drivers.turnstile GateEvent -> the session's event (same kinds, same decision id)."""
    return GateEventIn(kind=event.kind, decision_id=event.decision_id)


def document_read(result: MrzResult, *, portrait_descriptor: NDArray[np.float32] | None = None) -> DocumentRead | None:
    """A read MRZ -> DocumentRead; None when no document could be parsed at all (nothing to act on).

    `checks_ok` needs every check digit the format has (ICAO 9303-3 §4.9) to be valid and no field
    error besides expiry: a document whose MRZ was only partly readable is DOCUMENT_INVALID.
    """
    doc = result.document
    if doc is None:
        return None
    digits = [v for v in doc.checks.model_dump().values() if v is not None]
    # The reader also lists "document expired" as an error on expiry_date; expiry is judged by the
    # policy (DOCUMENT_EXPIRED), and a bad expiry check digit is already in `digits`.
    other_errors = [e for e in result.errors if e.field != "expiry_date"]
    checks_ok = bool(digits) and all(digits) and not other_errors
    return DocumentRead(
        document_number=doc.number,
        issuing_state=doc.issuer,
        expiry=doc.expiry_date,
        checks_ok=checks_ok,
        portrait_descriptor=portrait_descriptor,
        mrz_lines=tuple(result.lines),
    )


def _flight_of(leg: Leg) -> str:
    return f"{leg.carrier.strip()}{leg.flight.strip().lstrip('0')}".upper()


def boarding_pass_read(result: BcbpResult, *, flights: Sequence[str] = ()) -> BoardingPassRead:
    """A scanned BCBP -> BoardingPassRead. An unparseable pass still gives an event (valid=False), so
    the traveller gets BOARDING_PASS_INVALID instead of nothing happening.

    With several legs (IATA Res. 792 allows up to 4), the leg for one of `flights` is used; else the
    first leg.
    """
    bp = result.boarding_pass
    if bp is None or not bp.legs:
        return BoardingPassRead(passenger_name="", pnr="", carrier="", flight_number="", valid=False)
    wanted = {f.upper() for f in flights}
    leg = next((lg for lg in bp.legs if _flight_of(lg) in wanted), bp.legs[0])
    security_ok = bp.security is None or bp.security.signature_valid is not False
    return BoardingPassRead(
        passenger_name=bp.passenger_name,
        pnr=leg.pnr,
        carrier=leg.carrier,
        flight_number=leg.flight,
        flight_date=leg.julian_date,
        seat=leg.seat,
        sequence=leg.sequence,
        valid=result.valid and security_ok,
    )


_GUIDANCE_TO_GATE: dict[Guidance, GuidanceKind] = {
    Guidance.PLEASE_PROCEED: "proceed",
    Guidance.SEE_OFFICER: "stop",
    Guidance.OUT_OF_SERVICE: "stop",
    Guidance.ONE_PERSON_AT_A_TIME: "stop",
    Guidance.ALARM: "alarm",
    # In an emergency the controller drives its own outputs; egate shows nothing that says "stop".
    Guidance.EMERGENCY: "off",
}


def gate_guidance(kind: Guidance) -> GuidanceKind:
    """The turnstile's lamps/buzzer for a guidance kind (the screen gets the full kind)."""
    return _GUIDANCE_TO_GATE.get(kind, "off")


class GalleryMatcher:
    """egate.edge.gallery.store.Gallery -> the session's `Matcher` (Euclidean distances, pass when <= threshold).

    `gallery` returns the active gallery or None (none activated / purged); `document_threshold` is
    the face model's 1:1 threshold (engines FaceEngine.threshold) for the document-page portrait.
    """

    def __init__(
        self,
        gallery: Callable[[], Gallery | None],
        *,
        document_threshold: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._gallery = gallery
        self._document_threshold = document_threshold
        self._clock = clock

    def status(self) -> GalleryStatus:
        g = self._gallery()
        if g is None:
            return GalleryStatus(available=False)
        try:
            return GalleryStatus(available=True, expired=g.expired(self._clock()), version=str(g.version))
        except Exception as exc:  # purged between the call and the read
            log.warning("lane_gallery_status_failed", error=str(exc))
            return GalleryStatus(available=False)

    def search(self, descriptor: NDArray[np.float32], k: int, scope: MatchScope) -> Sequence[Comparison]:
        g = self._gallery()
        now = self._clock()
        if g is None or g.expired(now):
            return []  # the status already says why (GALLERY_UNAVAILABLE / GALLERY_EXPIRED)
        result = g.search(descriptor, k, now=now, lane=scope.lane, flights=scope.flights)
        return [
            Comparison("1:N", c.subject_id, c.distance, result.threshold, higher_is_better=False)
            for c in result.candidates
        ]

    def scope_miss(self, descriptor: NDArray[np.float32], scope: MatchScope) -> ScopeMiss | None:
        g = self._gallery()
        now = self._clock()
        if g is None or g.expired(now):
            return None
        # The same threshold and margin rule as at the lane, over every subject valid now: only a
        # confident match with someone outside the scope is reported as such.
        result = g.search(descriptor, None, now=now)
        if not result.matched or result.subject_id is None:
            return None
        miss = g.scope_of(result.subject_id, lane=scope.lane, flights=scope.flights)
        return "lane" if miss == "lane" else "flight" if miss == "flight" else None

    def verify(self, descriptor: NDArray[np.float32], subject_id: str, scope: MatchScope) -> Comparison | None:
        g = self._gallery()
        now = self._clock()
        if g is None or g.expired(now):
            return None
        result = g.verify(descriptor, subject_id, now=now, lane=scope.lane)
        if result.distance is None:  # unknown_subject / not_eligible
            return None
        return Comparison("1:1_gallery", subject_id, result.distance, result.threshold, higher_is_better=False)

    def compare(self, descriptor: NDArray[np.float32], reference: NDArray[np.float32]) -> Comparison:
        d = float(np.linalg.norm(np.asarray(descriptor, np.float64) - np.asarray(reference, np.float64)))
        return Comparison("1:1_document", None, d, self._document_threshold, higher_is_better=False)


class HashedSubjectLookup:
    """Finds a traveller's opaque gallery subject id without the gallery holding document numbers.

    Ops enrol 1:1 subjects under `d-` + HMAC-SHA256(key, "<issuer>:<document number>") and boarding
    subjects under `b-` + HMAC-SHA256(key, "<PNR>:<SURNAME/GIVEN>") (first 32 hex digits); the key
    is a secret shared by ops and the gates (a systemd credential), so the ids reveal nothing. The
    subject must also exist in the active gallery.
    """

    def __init__(self, key: bytes, gallery: Callable[[], Gallery | None]) -> None:
        if len(key) < 16:
            raise ValueError("the subject-id key must be at least 16 bytes; check the credential file")
        self._key = key
        self._gallery = gallery

    def subject_for_document(self, document_number: str, issuing_state: str) -> str:
        return "d-" + self._mac(f"{issuing_state.strip().upper()}:{document_number.strip().upper()}")

    def subject_for_passenger(self, pnr: str, passenger_name: str) -> str:
        return "b-" + self._mac(f"{pnr.strip().upper()}:{' '.join(passenger_name.split()).upper()}")

    def subject_for_label(self, label: str) -> str:
        """The id ops enrol a subject under, from the label they know it by: `doc:<ISSUER>:<NUMBER>` and
        `pass:<PNR>:<SURNAME/GIVEN>` give the ids entry and boarding modes look up; any other label (a name,
        a case number) gives `s-` + its keyed hash, for exit mode's 1:N search."""
        kind, _, rest = label.partition(":")
        if kind == "doc" and rest.count(":") >= 1:
            issuer, _, number = rest.partition(":")
            return self.subject_for_document(number, issuer)
        if kind == "pass" and rest.count(":") >= 1:
            pnr, _, name = rest.partition(":")
            return self.subject_for_passenger(pnr, name)
        return "s-" + self._mac(" ".join(label.split()))

    def by_document(self, document_number: str, issuing_state: str) -> str | None:
        return self._present(self.subject_for_document(document_number, issuing_state))

    def by_boarding_pass(self, boarding_pass: BoardingPassRead) -> str | None:
        return self._present(self.subject_for_passenger(boarding_pass.pnr, boarding_pass.passenger_name))

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def _present(self, subject_id: str) -> str | None:
        g = self._gallery()
        try:
            return subject_id if g is not None and g.has_subject(subject_id) else None
        except Exception as exc:
            log.warning("lane_subject_lookup_failed", error=str(exc))
            return None
