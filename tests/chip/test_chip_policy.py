"""The entry decision with the ePassport chip, as a table: page MRZ -> chip access -> DG1 = page ->
Passive Authentication -> live face vs DG2, and the policy for documents without a chip."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from egate.edge.session.policy import (
    CaptureFacts,
    ChipFacts,
    Comparison,
    DecisionInputs,
    DocumentFacts,
    Mode,
    PolicyConfig,
    Reason,
    Reference,
    Verdict,
    decide,
)

TODAY = date(2026, 12, 2)
DOC = DocumentFacts(checks_ok=True, expiry=date(2031, 1, 1), issuer="UTO")
CHIP_OK = ChipFacts(present=True, failure=None, dg1_matches_page=True)
PAGE_OK = Comparison("1:1_document", None, 0.4, 0.6, higher_is_better=False)
PAGE_FORGED = Comparison("1:1_document", None, 0.9, 0.6, higher_is_better=False)
DG2_OK = Comparison("1:1_chip", None, 0.35, 0.6, higher_is_better=False)
DG2_OTHER = Comparison("1:1_chip", None, 0.85, 0.6, higher_is_better=False)


def entry(chip_policy: str = "when_present", expected: tuple[str, ...] = (), **kw: object) -> DecisionInputs:
    base = DecisionInputs(
        mode=Mode.ENTRY,
        today=TODAY,
        capture=CaptureFacts(frames_seen=3, single_face_frames=3, chosen_quality=0.9),
        document=DOC,
        reference=Reference.DOCUMENT,
        policy=PolicyConfig(chip=chip_policy, chip_expected_issuers=list(expected)),  # type: ignore[arg-type]
        comparisons=(PAGE_OK, DG2_OK),
        chip=CHIP_OK,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


CASES = [
    ("genuine chip, same person", entry(), Verdict.ACCEPT, (Reason.MATCH,)),
    ("another person's DG2", entry(comparisons=(PAGE_OK, DG2_OTHER)), Verdict.REFER, (Reason.NO_MATCH,)),
    ("forged page portrait, genuine chip", entry(comparisons=(PAGE_FORGED, DG2_OK)), Verdict.REFER, (Reason.NO_MATCH,)),
    (
        "wrong MRZ",
        entry(chip=ChipFacts(True, "chip_access_denied"), comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_ACCESS_DENIED,),
    ),
    (
        "chip unreadable",
        entry(chip=ChipFacts(True, "chip_unreadable"), comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_UNREADABLE,),
    ),
    (
        "malformed chip data",
        entry(chip=ChipFacts(True, "chip_malformed"), comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_UNREADABLE,),
    ),
    ("hash mismatch", entry(chip=ChipFacts(True, "pa_hash_mismatch", True)), Verdict.REFER, (Reason.CHIP_PA_FAILED,)),
    ("untrusted CSCA", entry(chip=ChipFacts(True, "pa_untrusted_csca", True)), Verdict.REFER, (Reason.CHIP_PA_FAILED,)),
    (
        "active authentication failed",
        entry(chip=ChipFacts(True, "chip_aa_failed", True)),
        Verdict.REFER,
        (Reason.CHIP_CLONE_SUSPECTED,),
    ),
    (
        "chip authentication failed",
        entry(chip=ChipFacts(True, "chip_ca_failed", True)),
        Verdict.REFER,
        (Reason.CHIP_CLONE_SUSPECTED,),
    ),
    (
        "chip step timed out, page portrait matches",
        entry(chip=ChipFacts(True, "chip_timeout"), comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_UNREADABLE,),
    ),
    ("DG1 differs from the page", entry(chip=ChipFacts(True, None, False)), Verdict.REFER, (Reason.CHIP_DG1_DIFFERS,)),
    (
        "authentic chip whose face was not compared",
        entry(comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_FACE_NOT_COMPARED,),
    ),
    (
        "no chip, page portrait allowed",
        entry(chip=ChipFacts(False), comparisons=(PAGE_OK,)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
    (
        "no chip from an issuer whose passports all have one",
        entry(expected=("UTO",), chip=None, comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_MISSING,),
    ),
    (
        "no chip, chip required",
        entry("required", chip=ChipFacts(False), comparisons=(PAGE_OK,)),
        Verdict.REFER,
        (Reason.CHIP_MISSING,),
    ),
    (
        "chip policy off ignores a failed chip",
        entry("off", chip=ChipFacts(True, "pa_signature"), comparisons=(PAGE_OK,)),
        Verdict.ACCEPT,
        (Reason.MATCH,),
    ),
]


@pytest.mark.parametrize(("name", "inputs", "verdict", "reasons"), CASES, ids=[c[0] for c in CASES])
def test_entry_with_the_chip(name: str, inputs: DecisionInputs, verdict: Verdict, reasons: tuple[Reason, ...]) -> None:
    decision = decide(inputs)
    assert decision.verdict is verdict, name
    assert decision.reasons == reasons, name


def test_exit_mode_ignores_the_chip_policy() -> None:
    inputs = replace(entry("required", chip=None), mode=Mode.EXIT, comparisons=(Comparison("1:N", "s1", 0.9, 0.6),))
    assert decide(inputs).verdict is Verdict.ACCEPT
