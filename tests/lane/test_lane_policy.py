"""The decision policy over a table of cases: every reason code, and ACCEPT only on a confident match."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from egate.edge.session.policy import (
    BoardingPassFacts,
    CaptureFacts,
    Comparison,
    DecisionInputs,
    DocumentFacts,
    GalleryFacts,
    Mode,
    PolicyConfig,
    Reason,
    Reference,
    Verdict,
    decide,
)

TODAY = date(2026, 11, 28)
GOOD_CAPTURE = CaptureFacts(frames_seen=3, single_face_frames=3, chosen_quality=0.9)
VALID_DOC = DocumentFacts(checks_ok=True, expiry=date(2030, 1, 1))
POLICY = PolicyConfig(min_quality=0.5, ambiguity_margin=0.05)


def n(subject: str, score: float, threshold: float = 0.6) -> Comparison:
    return Comparison("1:N", subject, score, threshold)


def one(subject: str | None, score: float, threshold: float = 0.6, kind: str = "1:1_gallery") -> Comparison:
    return Comparison(kind, subject, score, threshold)  # type: ignore[arg-type]


def dist(subject: str, distance: float) -> Comparison:
    """dlib-style Euclidean distance: pass when <= 0.6."""
    return Comparison("1:N", subject, distance, 0.6, higher_is_better=False)


EXIT = DecisionInputs(mode=Mode.EXIT, today=TODAY, capture=GOOD_CAPTURE, policy=POLICY)
ENTRY = DecisionInputs(
    mode=Mode.ENTRY,
    today=TODAY,
    capture=GOOD_CAPTURE,
    document=VALID_DOC,
    gallery=GalleryFacts(subject_found=True),
    policy=POLICY,
)
BOARD = DecisionInputs(
    mode=Mode.BOARDING,
    today=TODAY,
    capture=GOOD_CAPTURE,
    boarding_pass=BoardingPassFacts(valid=True, flight_ok=True),
    gallery=GalleryFacts(subject_found=True),
    policy=POLICY,
)

CASES: list[tuple[str, DecisionInputs, Verdict, tuple[Reason, ...]]] = [
    # --- exit, 1:N -------------------------------------------------------------------------
    ("exit clear match", replace(EXIT, comparisons=(n("a", 0.9), n("b", 0.3))), Verdict.ACCEPT, (Reason.MATCH,)),
    ("exit single candidate", replace(EXIT, comparisons=(n("a", 0.61),)), Verdict.ACCEPT, (Reason.MATCH,)),
    ("exit exactly at threshold", replace(EXIT, comparisons=(n("a", 0.6),)), Verdict.ACCEPT, (Reason.MATCH,)),
    (
        "exit order given does not matter",
        replace(EXIT, comparisons=(n("b", 0.2), n("a", 0.8))),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    ("exit below threshold", replace(EXIT, comparisons=(n("a", 0.59), n("b", 0.2))), Verdict.REFER, (Reason.NO_MATCH,)),
    (
        "exit two pass close",
        replace(EXIT, comparisons=(n("a", 0.80), n("b", 0.78))),
        Verdict.REFER,
        (Reason.AMBIGUOUS_MATCH,),
    ),
    (
        "exit runner-up within margin but failing",
        replace(EXIT, comparisons=(n("a", 0.62), n("b", 0.58))),
        Verdict.REFER,
        (Reason.AMBIGUOUS_MATCH,),
    ),
    (
        "exit runner-up just outside margin",
        replace(EXIT, comparisons=(n("a", 0.70), n("b", 0.64))),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "exit same subject twice is not ambiguous",
        replace(EXIT, comparisons=(n("a", 0.80), n("a", 0.79))),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "exit distances: small wins",
        replace(EXIT, comparisons=(dist("a", 0.35), dist("b", 0.7))),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    ("exit distances: too far", replace(EXIT, comparisons=(dist("a", 0.65),)), Verdict.REFER, (Reason.NO_MATCH,)),
    (
        "exit distances: ambiguous",
        replace(EXIT, comparisons=(dist("a", 0.40), dist("b", 0.42))),
        Verdict.REFER,
        (Reason.AMBIGUOUS_MATCH,),
    ),
    ("exit nothing compared", EXIT, Verdict.REFER, (Reason.NO_MATCH,)),
    (
        "exit gallery unavailable",
        replace(EXIT, gallery=GalleryFacts(available=False)),
        Verdict.REFER,
        (Reason.GALLERY_UNAVAILABLE,),
    ),
    (
        "exit gallery expired",
        replace(EXIT, gallery=GalleryFacts(expired=True), comparisons=(n("a", 0.9),)),
        Verdict.REFER,
        (Reason.GALLERY_EXPIRED,),
    ),
    (
        "exit low quality",
        replace(EXIT, capture=replace(GOOD_CAPTURE, chosen_quality=0.4), comparisons=(n("a", 0.9),)),
        Verdict.REFER,
        (Reason.LOW_QUALITY,),
    ),
    (
        "exit chosen frame fails the engine's quality gate",
        replace(EXIT, capture=replace(GOOD_CAPTURE, chosen_issues=("too_blurred",)), comparisons=(n("a", 0.9),)),
        Verdict.REFER,
        (Reason.LOW_QUALITY,),
    ),
    (
        "exit quality at minimum",
        replace(EXIT, capture=replace(GOOD_CAPTURE, chosen_quality=0.5), comparisons=(n("a", 0.9),)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "exit low quality after timeout",
        replace(EXIT, capture=replace(GOOD_CAPTURE, chosen_quality=0.1, timed_out=True)),
        Verdict.REFER,
        (Reason.LOW_QUALITY, Reason.CAPTURE_TIMEOUT),
    ),
    (
        "exit no face, timeout",
        replace(EXIT, capture=CaptureFacts(frames_seen=10, timed_out=True)),
        Verdict.REFER,
        (Reason.NO_FACE, Reason.CAPTURE_TIMEOUT),
    ),
    (
        "exit only groups seen",
        replace(EXIT, capture=CaptureFacts(frames_seen=10, multi_face_frames=10, timed_out=True)),
        Verdict.REFER,
        (Reason.MULTIPLE_FACES, Reason.CAPTURE_TIMEOUT),
    ),
    (
        "exit good frame after timeout still matches",
        replace(EXIT, capture=replace(GOOD_CAPTURE, timed_out=True), comparisons=(n("a", 0.9),)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "exit liveness unknown is ignored",
        replace(EXIT, liveness=None, comparisons=(n("a", 0.9),)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "exit liveness failed",
        replace(EXIT, liveness=False, comparisons=(n("a", 0.9),)),
        Verdict.REFER,
        (Reason.LIVENESS_FAILED,),
    ),
    ("exit matcher error", replace(EXIT, matcher_error=True), Verdict.REFER, (Reason.MATCHER_ERROR,)),
    ("exit document optional", replace(EXIT, comparisons=(n("a", 0.9),)), Verdict.ACCEPT, (Reason.MATCH,)),
    (
        "exit expired document read anyway",
        replace(EXIT, document=DocumentFacts(True, date(2020, 1, 1)), comparisons=(n("a", 0.9),)),
        Verdict.REFER,
        (Reason.DOCUMENT_EXPIRED,),
    ),
    (
        "exit expired document ignored by policy",
        replace(
            EXIT,
            document=DocumentFacts(True, date(2020, 1, 1)),
            comparisons=(n("a", 0.9),),
            policy=POLICY.model_copy(update={"check_document_in_exit": False}),
        ),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    # --- entry, 1:1 against the document holder --------------------------------------------------
    ("entry match", replace(ENTRY, comparisons=(one("s1", 0.8),)), Verdict.ACCEPT, (Reason.MATCH,)),
    ("entry no match", replace(ENTRY, comparisons=(one("s1", 0.3),)), Verdict.REFER, (Reason.NO_MATCH,)),
    (
        "entry document page face",
        replace(
            ENTRY,
            reference=Reference.DOCUMENT,
            gallery=GalleryFacts(available=False),
            comparisons=(one(None, 0.8, kind="1:1_document"),),
        ),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "entry no document",
        replace(ENTRY, document=None, comparisons=(one("s1", 0.8),)),
        Verdict.REFER,
        (Reason.DOCUMENT_MISSING,),
    ),
    (
        "entry bad check digits",
        replace(ENTRY, document=DocumentFacts(False, date(2030, 1, 1)), comparisons=(one("s1", 0.8),)),
        Verdict.REFER,
        (Reason.DOCUMENT_INVALID,),
    ),
    (
        "entry expired yesterday",
        replace(ENTRY, document=DocumentFacts(True, date(2026, 11, 27)), comparisons=(one("s1", 0.8),)),
        Verdict.REFER,
        (Reason.DOCUMENT_EXPIRED,),
    ),
    (
        "entry expires today is still valid",
        replace(ENTRY, document=DocumentFacts(True, TODAY), comparisons=(one("s1", 0.8),)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "entry unreadable expiry",
        replace(ENTRY, document=DocumentFacts(True, None), comparisons=(one("s1", 0.8),)),
        Verdict.REFER,
        (Reason.DOCUMENT_INVALID,),
    ),
    (
        "entry invalid and expired",
        replace(ENTRY, document=DocumentFacts(False, date(2001, 1, 1))),
        Verdict.REFER,
        (Reason.DOCUMENT_INVALID, Reason.DOCUMENT_EXPIRED),
    ),
    (
        "entry holder not in gallery",
        replace(ENTRY, gallery=GalleryFacts(subject_found=False)),
        Verdict.REFER,
        (Reason.NOT_IN_GALLERY,),
    ),
    (
        "entry gallery down",
        replace(ENTRY, gallery=GalleryFacts(available=False)),
        Verdict.REFER,
        (Reason.GALLERY_UNAVAILABLE,),
    ),
    (
        "entry two references, one fails",
        replace(ENTRY, comparisons=(one("s1", 0.8), one(None, 0.4, kind="1:1_document"))),
        Verdict.REFER,
        (Reason.NO_MATCH,),
    ),
    (
        "entry many problems at once",
        replace(
            ENTRY,
            document=DocumentFacts(True, date(2020, 1, 1)),
            capture=CaptureFacts(frames_seen=4, multi_face_frames=4, timed_out=True),
        ),
        Verdict.REFER,
        (Reason.DOCUMENT_EXPIRED, Reason.MULTIPLE_FACES, Reason.CAPTURE_TIMEOUT),
    ),
    # --- boarding: BCBP -> subject -> 1:1 ---------------------------------------------------------
    ("boarding match", replace(BOARD, comparisons=(one("p7", 0.75),)), Verdict.ACCEPT, (Reason.MATCH,)),
    (
        "boarding flight not checked",
        replace(BOARD, boarding_pass=BoardingPassFacts(True, None), comparisons=(one("p7", 0.75),)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "boarding no pass",
        replace(BOARD, boarding_pass=None, comparisons=(one("p7", 0.75),)),
        Verdict.REFER,
        (Reason.BOARDING_PASS_MISSING,),
    ),
    (
        "boarding invalid pass",
        replace(BOARD, boarding_pass=BoardingPassFacts(False), comparisons=(one("p7", 0.75),)),
        Verdict.REFER,
        (Reason.BOARDING_PASS_INVALID,),
    ),
    (
        "boarding wrong flight",
        replace(BOARD, boarding_pass=BoardingPassFacts(True, False), comparisons=(one("p7", 0.75),)),
        Verdict.REFER,
        (Reason.BOARDING_PASS_WRONG_FLIGHT,),
    ),
    (
        "boarding passenger not in gallery",
        replace(BOARD, gallery=GalleryFacts(subject_found=False)),
        Verdict.REFER,
        (Reason.NOT_IN_GALLERY,),
    ),
    ("boarding no match", replace(BOARD, comparisons=(one("p7", 0.5),)), Verdict.REFER, (Reason.NO_MATCH,)),
    (
        "boarding document not needed",
        replace(BOARD, comparisons=(one("p7", 0.75),), document=None),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
]


@pytest.mark.parametrize(("inputs", "verdict", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_table(inputs: DecisionInputs, verdict: Verdict, reasons: tuple[Reason, ...]) -> None:
    d = decide(inputs)
    assert (d.verdict, d.reasons) == (verdict, reasons)
    if verdict is Verdict.ACCEPT:
        assert d.best is not None and d.best.passed
        assert d.subject_id == d.best.subject_id
    else:
        assert d.subject_id is None


def test_accept_names_the_best_subject() -> None:
    d = decide(replace(EXIT, comparisons=(n("b", 0.3), n("a", 0.9), n("c", 0.5))))
    assert d.subject_id == "a"
    assert d.best == n("a", 0.9)


def test_decide_is_pure() -> None:
    inputs = replace(EXIT, comparisons=(n("a", 0.80), n("b", 0.78)))
    assert decide(inputs) == decide(inputs)
    assert inputs.comparisons == (n("a", 0.80), n("b", 0.78))


@pytest.mark.parametrize("mode", list(Mode))
def test_never_accept_without_a_comparison(mode: Mode) -> None:
    """Whatever else is fine, no comparison means no open gate."""
    base = {Mode.EXIT: EXIT, Mode.ENTRY: ENTRY, Mode.BOARDING: BOARD}[mode]
    d = decide(replace(base, comparisons=()))
    assert d.verdict is Verdict.REFER
