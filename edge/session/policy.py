"""The lane's decision policy: one pure function from facts to ACCEPT or REFER with reason codes.

`decide` does no I/O, reads no clock and keeps no state: the session gathers the facts (capture, document,
boarding pass, gallery, comparisons) and the policy only judges them, so it is tested over a table of cases.
Safety rule: ACCEPT only on a confident match with every check passed; anything else (including facts
that are missing) is REFER, and every failed check adds its own reason code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from egate.drivers.compat import StrEnum
from egate.edge.settings.lane import Mode, PolicyConfig

__all__ = [
    "BoardingPassFacts",
    "CaptureFacts",
    "ChipFacts",
    "Comparison",
    "ComparisonKind",
    "Decision",
    "DecisionInputs",
    "DocumentFacts",
    "GalleryFacts",
    "Mode",
    "PolicyConfig",
    "Reason",
    "Verdict",
    "decide",
]


class Verdict(StrEnum):
    ACCEPT = "accept"  # open the gate for one passage
    REFER = "refer"  # keep the gate locked, send the traveller to an officer


class Reason(StrEnum):
    """Why a decision was taken; stable codes that go into the outcome record and to central ops."""

    MATCH = "MATCH"
    NO_MATCH = "NO_MATCH"
    AMBIGUOUS_MATCH = "AMBIGUOUS_MATCH"
    LOW_QUALITY = "LOW_QUALITY"
    NO_FACE = "NO_FACE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    CAPTURE_TIMEOUT = "CAPTURE_TIMEOUT"
    LIVENESS_FAILED = "LIVENESS_FAILED"
    DOCUMENT_MISSING = "DOCUMENT_MISSING"
    DOCUMENT_INVALID = "DOCUMENT_INVALID"
    DOCUMENT_EXPIRED = "DOCUMENT_EXPIRED"
    BOARDING_PASS_MISSING = "BOARDING_PASS_MISSING"  # noqa: S105 - a reason code, not a password
    BOARDING_PASS_INVALID = "BOARDING_PASS_INVALID"  # noqa: S105 - a reason code, not a password
    BOARDING_PASS_WRONG_FLIGHT = "BOARDING_PASS_WRONG_FLIGHT"  # noqa: S105 - a reason code, not a password
    NOT_IN_GALLERY = "NOT_IN_GALLERY"
    GALLERY_UNAVAILABLE = "GALLERY_UNAVAILABLE"
    GALLERY_EXPIRED = "GALLERY_EXPIRED"
    MATCHER_ERROR = "MATCHER_ERROR"
    # ePassport chip (entry mode, policy.chip != off); the PA sub-reason goes into ChipFacts/the record.
    CHIP_MISSING = "CHIP_MISSING"
    CHIP_UNREADABLE = "CHIP_UNREADABLE"
    CHIP_ACCESS_DENIED = "CHIP_ACCESS_DENIED"
    CHIP_PA_FAILED = "CHIP_PA_FAILED"
    CHIP_DG1_DIFFERS = "CHIP_DG1_DIFFERS"
    CHIP_CLONE_SUSPECTED = "CHIP_CLONE_SUSPECTED"  # Active or Chip Authentication failed
    CHIP_FACE_NOT_COMPARED = "CHIP_FACE_NOT_COMPARED"
    # Exit 1:N: the face matches an enrolled traveller who is not eligible at this lane now.
    ENROLLED_OTHER_FLIGHT = "ENROLLED_OTHER_FLIGHT"
    ENROLLED_OTHER_LANE = "ENROLLED_OTHER_LANE"
    # Set by the session: the ACCEPT could not be committed to the outbox, so the gate stayed shut.
    DECISION_NOT_RECORDED = "DECISION_NOT_RECORDED"
    # Set by the session, not by `decide`: the session ended before a decision could be taken.
    ABORTED_EMERGENCY = "ABORTED_EMERGENCY"
    ABORTED_OUT_OF_SERVICE = "ABORTED_OUT_OF_SERVICE"
    ABORTED_ALARM = "ABORTED_ALARM"


ComparisonKind = Literal["1:N", "1:1_gallery", "1:1_document", "1:1_chip"]


@dataclass(frozen=True)
class Comparison:
    """One biometric comparison as the matcher reported it (score and the threshold it applied).

    `higher_is_better` True for similarities (cosine), False for distances (dlib Euclidean, pass when
    score <= threshold): the record keeps the matcher's own numbers instead of a converted score.
    """

    kind: ComparisonKind
    subject_id: str | None  # opaque gallery id; None for the document-page face
    score: float
    threshold: float
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        return self.score >= self.threshold if self.higher_is_better else self.score <= self.threshold

    def goodness(self) -> float:
        """Score oriented so that larger is better, for ranking and margins."""
        return self.score if self.higher_is_better else -self.score


@dataclass(frozen=True)
class CaptureFacts:
    """What CAPTURING saw. `chosen_quality` is the quality of the single-face frame that was matched."""

    frames_seen: int = 0
    single_face_frames: int = 0
    multi_face_frames: int = 0
    chosen_quality: float | None = None
    chosen_issues: tuple[str, ...] = ()  # the engine's quality-gate failures on the chosen frame
    timed_out: bool = False


@dataclass(frozen=True)
class DocumentFacts:
    """A travel document read at the gate (ICAO 9303 MRZ)."""

    checks_ok: bool  # every MRZ check digit valid (ICAO 9303-3 §4.9)
    expiry: date | None  # None when the MRZ had no readable expiry date
    issuer: str | None = None  # issuing state code, for the chip policy's expected issuers


@dataclass(frozen=True)
class ChipFacts:
    """What the ePassport chip read established (egate.drivers.chip's result, reduced to facts).

    `present`: a chip answered on the reader. `failure`: egate.drivers.chip's most specific reason code
    (chip_unreadable, chip_access_denied, chip_malformed, chip_not_emrtd, pa_*), None when access
    control, every file and Passive Authentication succeeded. `dg1_matches_page`: DG1's MRZ equals
    the page's (None when DG1 was not read).
    """

    present: bool
    failure: str | None = None
    dg1_matches_page: bool | None = None


@dataclass(frozen=True)
class BoardingPassFacts:
    """An IATA BCBP (Resolution 792) boarding pass read at the gate."""

    valid: bool  # parsed, mandatory fields present (and security data verified when configured)
    flight_ok: bool | None = None  # None: the lane does not check the flight


@dataclass(frozen=True)
class GalleryFacts:
    available: bool = True  # a gallery is loaded and answering
    expired: bool = False  # the active gallery is past its validity (bundle valid-until)
    subject_found: bool | None = None  # 1:1 modes: a subject for this document / boarding pass exists
    # Exit 1:N without a match here: the face matched a subject enrolled for another flight or lane.
    other_scope: Literal["flight", "lane"] | None = None


class Reference(StrEnum):
    """What the live face was compared against, so the policy knows whether the gallery's state counts."""

    GALLERY = "gallery"  # a 1:N search or a gallery subject found by document / boarding pass
    DOCUMENT = "document"  # the document's own portrait (page or chip): no gallery involved


@dataclass(frozen=True)
class DecisionInputs:
    mode: Mode
    today: date  # the gate's local date, for document expiry (ICAO 9303-3 §4.2.2: valid through that day)
    capture: CaptureFacts
    comparisons: Sequence[Comparison] = ()
    gallery: GalleryFacts = field(default_factory=GalleryFacts)
    document: DocumentFacts | None = None
    boarding_pass: BoardingPassFacts | None = None
    chip: ChipFacts | None = None
    liveness: bool | None = None  # None: no presentation-attack detection here, ignored
    matcher_error: bool = False
    reference: Reference = Reference.GALLERY
    policy: PolicyConfig = field(default_factory=PolicyConfig)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: tuple[Reason, ...]
    subject_id: str | None = None  # the matched subject on ACCEPT
    best: Comparison | None = None


def decide(inputs: DecisionInputs) -> Decision:
    """Judge the facts of one session. Pure: the same inputs always give the same decision."""
    reasons: list[Reason] = []
    reasons += _document_reasons(inputs)
    reasons += _boarding_reasons(inputs)
    reasons += _chip_reasons(inputs)
    reasons += _gallery_reasons(inputs)
    reasons += _capture_reasons(inputs)
    if inputs.liveness is False:
        reasons.append(Reason.LIVENESS_FAILED)
    if inputs.matcher_error:
        reasons.append(Reason.MATCHER_ERROR)

    match_reason, best = _match(inputs)
    if match_reason is not None and not (match_reason is Reason.NO_MATCH and inputs.gallery.other_scope):
        reasons.append(match_reason)  # (a traveller of another flight is not "no match": that reason says more)

    if not reasons and best is not None:
        return Decision(Verdict.ACCEPT, (Reason.MATCH,), subject_id=best.subject_id, best=best)
    if not reasons:  # no failed check and yet no match: never open on missing facts
        reasons.append(Reason.NO_MATCH)
    return Decision(Verdict.REFER, tuple(dict.fromkeys(reasons)), subject_id=None, best=best)


def _document_reasons(inputs: DecisionInputs) -> list[Reason]:
    doc = inputs.document
    if doc is None:
        return [Reason.DOCUMENT_MISSING] if inputs.mode is Mode.ENTRY else []
    if inputs.mode is Mode.EXIT and not inputs.policy.check_document_in_exit:
        return []
    out: list[Reason] = []
    if not doc.checks_ok:
        out.append(Reason.DOCUMENT_INVALID)
    # A document is valid through its expiry date (ICAO 9303-3 §4.2.2 date of expiry); unknown = invalid.
    if doc.expiry is None or doc.expiry < inputs.today:
        out.append(Reason.DOCUMENT_EXPIRED if doc.expiry is not None else Reason.DOCUMENT_INVALID)
    return out


def _chip_reasons(inputs: DecisionInputs) -> list[Reason]:
    """ICAO 9303-11 inspection: access control, DG1 = page, Passive Authentication, face vs DG2."""
    policy = inputs.policy
    if inputs.mode is not Mode.ENTRY or policy.chip == "off":
        return []
    chip = inputs.chip
    issuer = inputs.document.issuer if inputs.document is not None else None
    expected = policy.chip == "required" or (issuer is not None and issuer in policy.chip_expected_issuers)
    if chip is None or not chip.present:
        return [Reason.CHIP_MISSING] if expected else []
    out: list[Reason] = []
    if chip.failure == "chip_access_denied":
        out.append(Reason.CHIP_ACCESS_DENIED)
    elif chip.failure is not None and (chip.failure.startswith("pa_") or chip.failure == "chip_pa_failed"):
        out.append(Reason.CHIP_PA_FAILED)
    elif chip.failure in ("chip_aa_failed", "chip_ca_failed"):
        out.append(Reason.CHIP_CLONE_SUSPECTED)
    elif chip.failure is not None:
        out.append(Reason.CHIP_UNREADABLE)
    if chip.dg1_matches_page is False:
        out.append(Reason.CHIP_DG1_DIFFERS)
    if not out and not any(c.kind == "1:1_chip" for c in inputs.comparisons):
        out.append(Reason.CHIP_FACE_NOT_COMPARED)  # an authentic chip whose face was never compared
    return out


def _boarding_reasons(inputs: DecisionInputs) -> list[Reason]:
    if inputs.mode is not Mode.BOARDING:
        return []
    bp = inputs.boarding_pass
    if bp is None:
        return [Reason.BOARDING_PASS_MISSING]
    if not bp.valid:
        return [Reason.BOARDING_PASS_INVALID]
    if bp.flight_ok is False:
        return [Reason.BOARDING_PASS_WRONG_FLIGHT]
    return []


def _gallery_reasons(inputs: DecisionInputs) -> list[Reason]:
    if inputs.reference is Reference.DOCUMENT:
        return []
    g = inputs.gallery
    if not g.available:
        return [Reason.GALLERY_UNAVAILABLE]
    out: list[Reason] = []
    if g.expired:
        out.append(Reason.GALLERY_EXPIRED)
    if inputs.mode is not Mode.EXIT and g.subject_found is False:
        out.append(Reason.NOT_IN_GALLERY)
    if inputs.mode is Mode.EXIT and g.other_scope is not None:
        out.append(Reason.ENROLLED_OTHER_FLIGHT if g.other_scope == "flight" else Reason.ENROLLED_OTHER_LANE)
    return out


def _capture_reasons(inputs: DecisionInputs) -> list[Reason]:
    c = inputs.capture
    if c.chosen_quality is None:
        # Nothing to match: say what was seen instead (one person at a time vs. nobody looked).
        out = [Reason.MULTIPLE_FACES if c.multi_face_frames > 0 else Reason.NO_FACE]
        if c.timed_out:
            out.append(Reason.CAPTURE_TIMEOUT)
        return out
    if c.chosen_issues or c.chosen_quality < inputs.policy.min_quality:
        return [Reason.LOW_QUALITY, Reason.CAPTURE_TIMEOUT] if c.timed_out else [Reason.LOW_QUALITY]
    return []


def _match(inputs: DecisionInputs) -> tuple[Reason | None, Comparison | None]:
    """The biometric verdict: (None, best) on a confident match, else (reason, best-or-None)."""
    if not inputs.comparisons:
        return None, None  # the other checks explain why nothing was compared
    ranked = sorted(inputs.comparisons, key=lambda c: c.goodness(), reverse=True)
    best = ranked[0]
    if inputs.mode is Mode.EXIT:
        if not best.passed:
            return Reason.NO_MATCH, best
        # Ambiguity: another subject within the margin of the best one, passing or not.
        for other in ranked[1:]:
            if other.subject_id != best.subject_id and (
                best.goodness() - other.goodness() < inputs.policy.ambiguity_margin
            ):
                return Reason.AMBIGUOUS_MATCH, best
        return None, best
    # 1:1 modes: every reference compared must pass (conservative when several were compared).
    failed = [c for c in ranked if not c.passed]
    if failed:
        return Reason.NO_MATCH, best
    return None, best
