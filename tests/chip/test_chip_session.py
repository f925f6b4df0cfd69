"""The session with the ePassport chip (entry mode, lane.policy.chip on): it keeps capturing while the
chip is read, decides only when the face and the chip step are both in, and a chip that never answers
refers. Injected clock, real distances (tests/lane_fixtures.py), no sleeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from egate.edge.session.events import ChipRead, DocumentRead, SetMode, Tick
from egate.edge.session.policy import ChipFacts, Reason, Verdict
from egate.edge.session.records import ChipSummary
from egate.edge.session.states import Guidance, LaneState
from egate.edge.settings import ConfigError, load_settings_text
from egate.edge.settings.lane import LaneConfig, Mode, PolicyConfig
from tests.lane.lane_fixtures import FUTURE, SessionBench, healthy, make_lane
from tests.lane.test_lane_session import PASS, frames

AUTHENTIC = ChipFacts(present=True, failure=None, dg1_matches_page=True)
SUMMARY = ChipSummary(result="authentic", access_protocol="PACE-ECDH-GM-AES-128-brainpoolP256r1", dg1_matches_page=True)


def chip_lane(policy: str = "when_present", expected: tuple[str, ...] = ()) -> SessionBench:
    config = LaneConfig(
        policy=PolicyConfig(chip=policy, chip_expected_issuers=list(expected)),  # type: ignore[arg-type]
        capture_timeout_s=5.0,
        chip_timeout_s=6.0,
    )
    out = make_lane(config)
    out.run(*healthy(), SetMode(Mode.ENTRY))
    return out


def passport(lane: SessionBench, page_face: str | None = None, number: str = "X1234567") -> DocumentRead:
    """A document with no gallery subject, read with a chip read started for it (id "r1")."""
    portrait = lane.people.photo(page_face) if page_face else None
    return DocumentRead(number, "UTO", FUTURE, True, portrait, mrz_lines=("P<UTO...", "X1234567..."), chip_read_id="r1")


def chip_of(lane: SessionBench, person: str | None, facts: ChipFacts = AUTHENTIC, read_id: str = "r1") -> ChipRead:
    descriptor = lane.people.photo(person) if person else None
    return ChipRead(read_id, facts, descriptor, SUMMARY if facts.failure is None else ChipSummary(result="failed"))


def test_waits_for_the_chip_while_capturing_then_accepts_against_dg2() -> None:
    lane = chip_lane()
    lane.run(passport(lane), *frames(lane, "dave", 5))
    # Enough good frames, but the chip is still being read: no decision, still capturing, asked to wait.
    assert lane.controller.state is LaneState.CAPTURING and not lane.sinks.records
    assert Guidance.PLEASE_WAIT in lane.sinks.guidance
    lane.run(chip_of(lane, "dave"), PASS)
    [record] = lane.sinks.outcomes
    assert record.decision is Verdict.ACCEPT and record.passage == "completed"
    assert [c.kind for c in record.comparisons] == ["1:1_chip"]
    assert record.chip is not None and record.chip.result == "authentic"
    assert "chip_wait" in record.timings_ms
    assert lane.gate.opens == [record.txn_id]


def test_chip_read_first_then_the_face_decides_when_capture_is_done() -> None:
    lane = chip_lane()
    lane.run(passport(lane), chip_of(lane, "dave"))
    assert lane.controller.state is LaneState.CAPTURING
    lane.run(*frames(lane, "dave", 3))
    [record] = lane.sinks.records
    assert record.decision is Verdict.ACCEPT


def test_capture_deadline_with_the_chip_still_pending_waits_in_matching() -> None:
    lane = chip_lane()
    lane.run(passport(lane), *frames(lane, "dave", 3), 5.0, Tick())
    assert lane.controller.state is LaneState.MATCHING and not lane.sinks.records
    lane.run(chip_of(lane, "dave"))
    [record] = lane.sinks.records
    assert record.decision is Verdict.ACCEPT and Reason.CAPTURE_TIMEOUT not in record.reasons


def test_a_chip_that_never_answers_refers_even_with_a_matching_page_portrait() -> None:
    lane = chip_lane()
    lane.run(passport(lane, page_face="dave"), *frames(lane, "dave", 3), 5.0, Tick())
    assert not lane.sinks.records
    lane.run(1.5, Tick())  # 6.5 s after the document: past lane.chip_timeout_s
    [record] = lane.sinks.records
    assert record.decision is Verdict.REFER and record.reasons == [Reason.CHIP_UNREADABLE]
    assert record.chip is not None and (record.chip.result, record.chip.reason) == ("timeout", "chip_timeout")
    assert lane.gate.opens == []
    # The read that finally arrives belongs to a session that is over: it changes nothing.
    lane.run(chip_of(lane, "dave"), 5.0, Tick())
    assert len(lane.sinks.records) == 1 and lane.controller.state is LaneState.IDLE


def test_another_persons_dg2_is_referred() -> None:
    lane = chip_lane()
    lane.run(passport(lane), *frames(lane, "dave", 3), chip_of(lane, "erin"))
    [record] = lane.sinks.records
    assert record.decision is Verdict.REFER and record.reasons == [Reason.NO_MATCH]
    assert [(c.kind, c.passed) for c in record.comparisons] == [("1:1_chip", False)]


def test_forged_page_portrait_with_someone_elses_genuine_chip_is_referred() -> None:
    lane = chip_lane()
    # The page shows the traveller (the forger swapped the photo); the chip holds the real holder.
    lane.run(passport(lane, page_face="dave"), *frames(lane, "dave", 3), chip_of(lane, "erin"))
    [record] = lane.sinks.records
    assert record.decision is Verdict.REFER and record.reasons == [Reason.NO_MATCH]
    passed = {c.kind: c.passed for c in record.comparisons}
    assert passed == {"1:1_document": True, "1:1_chip": False}


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("chip_access_denied", Reason.CHIP_ACCESS_DENIED),
        ("chip_unreadable", Reason.CHIP_UNREADABLE),
        ("pa_untrusted_csca", Reason.CHIP_PA_FAILED),
        ("pa_hash_mismatch", Reason.CHIP_PA_FAILED),
        ("chip_no_reader", Reason.CHIP_UNREADABLE),
    ],
)
def test_a_failed_chip_refers_with_its_reason(failure: str, reason: Reason) -> None:
    lane = chip_lane()
    lane.run(passport(lane, page_face="dave"), *frames(lane, "dave", 3), chip_of(lane, None, ChipFacts(True, failure)))
    [record] = lane.sinks.records
    assert record.decision is Verdict.REFER and reason in record.reasons


def test_no_chip_on_the_reader_uses_the_page_portrait_unless_the_issuer_always_has_one() -> None:
    lane = chip_lane()
    lane.run(passport(lane, page_face="dave"), *frames(lane, "dave", 3), chip_of(lane, None, ChipFacts(False)), PASS)
    [record] = lane.sinks.outcomes
    assert record.decision is Verdict.ACCEPT and [c.kind for c in record.comparisons] == ["1:1_document"]
    strict = chip_lane(expected=("UTO",))
    strict.run(passport(strict, page_face="dave"), *frames(strict, "dave", 3), chip_of(strict, None, ChipFacts(False)))
    [referred] = strict.sinks.records
    assert referred.decision is Verdict.REFER and referred.reasons == [Reason.CHIP_MISSING]


def test_a_read_for_another_document_is_ignored() -> None:
    lane = chip_lane()
    lane.run(passport(lane), *frames(lane, "dave", 3), chip_of(lane, "dave", read_id="r0"))
    assert lane.controller.state is LaneState.CAPTURING and not lane.sinks.records


def test_chip_policy_off_never_waits() -> None:
    lane = chip_lane(policy="off")
    lane.run(passport(lane, page_face="dave"), *frames(lane, "dave", 3), PASS)
    [record] = lane.sinks.outcomes
    assert record.decision is Verdict.ACCEPT and record.chip is None


def test_emergency_while_waiting_for_the_chip_aborts_the_session() -> None:
    from egate.edge.session.events import GateEventIn

    lane = chip_lane()
    lane.run(passport(lane), *frames(lane, "dave", 3), 5.0, Tick(), GateEventIn("emergency_on"))
    [record] = lane.sinks.records
    assert record.reasons == [Reason.ABORTED_EMERGENCY] and lane.gate.opens == []
    lane.run(chip_of(lane, "dave"))
    assert len(lane.sinks.records) == 1


def test_config_refuses_a_chip_policy_without_a_chip_reader(tmp_path: Path) -> None:
    text = 'schema_version = 1\n[lane.policy]\nchip = "required"\n'
    with pytest.raises(ConfigError) as err:
        load_settings_text(text, source="egate.toml", environ={})
    [issue] = err.value.issues
    assert issue.key == "lane.policy.chip" and "chip.reader" in issue.message
    load_settings_text(text + '[chip]\nreader = "OMNIKEY"\n', environ={})
    path = tmp_path / "egate.toml"
    path.write_text('[gate]\nsite_id = "s"\ngate_id = "g"\n' + text.replace("schema_version = 1\n", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=300,  # a deadline for a loaded machine, not a speed check
    )
    assert proc.returncode != 0 and "lane.policy.chip" in proc.stdout + proc.stderr


def test_no_usable_face_with_an_authentic_chip_is_low_quality_not_a_gallery_miss() -> None:
    lane = chip_lane()
    lane.run(passport(lane), chip_of(lane, "dave"), *frames(lane, "dave", 3, quality=0.3), 5.0, Tick())
    [record] = lane.sinks.records
    assert record.decision is Verdict.REFER and Reason.LOW_QUALITY in record.reasons
    assert Reason.NOT_IN_GALLERY not in record.reasons
