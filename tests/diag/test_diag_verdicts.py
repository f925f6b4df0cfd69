"""The verdicts `egate diag` derives from what the daemon or the gate controller report, as tables.

Each row is a state a technician meets and the cause and fix the tool must name for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from egate.drivers.turnstile.base import GateStatus
from egate.edge.lane.replies import GateCycleReply, GateOpenReply
from egate.tools.diag.commands import gate_refusal, human_value
from egate.tools.diag.selftest import daemon_missing_verdict, lane_verdict
from egate.tools.diag.selftest_checks import no_gallery_verdict

IN_SERVICE = {"state": "idle", "mode": "exit", "in_service": True, "maintenance": False, "out_of_service_reasons": []}


@pytest.mark.parametrize(
    ("status", "verdict", "detail", "hint"),
    [
        (IN_SERVICE, "PASS", "in service, exit mode", ""),
        (
            {**IN_SERVICE, "in_service": False, "maintenance": True, "state": "out_of_service"},
            "FAIL",
            "in maintenance",
            "egate diag maintenance off",
        ),
        (
            {**IN_SERVICE, "in_service": False, "out_of_service_reasons": ["camera: no frames for 3 s"]},
            "FAIL",
            "out of service: camera: no frames for 3 s",
            "returns to service by itself",
        ),
        (
            {
                **IN_SERVICE,
                "in_service": False,
                "maintenance": True,
                "out_of_service_reasons": ["maintenance: closed (ops command)"],
            },
            "FAIL",
            "closed by ops",
            "--mode open",
        ),
        ({**IN_SERVICE, "state": "alarm", "alarm": "tailgate"}, "FAIL", "alarm: tailgate", "alarm.clear"),
        ({**IN_SERVICE, "state": "emergency"}, "FAIL", "emergency input active", "emergency input"),
    ],
    ids=["serving", "maintenance", "out-of-service", "closed", "alarm", "emergency"],
)
def test_lane_row(status: dict, verdict: str, detail: str, hint: str) -> None:
    row = lane_verdict(status)
    assert (row.name, row.verdict) == ("lane", verdict)
    assert detail in row.detail and hint in row.hint


def test_no_daemon_is_a_fail_with_the_start_command() -> None:
    row = daemon_missing_verdict(Path("/run/egate/control.sock"), local=True)
    assert row.verdict == "FAIL" and "/run/egate/control.sock" in row.detail and "serves nobody" in row.detail
    assert "systemctl start egate" in row.hint


@pytest.mark.parametrize(
    ("mode", "page", "verdict"),
    [("exit", False, "FAIL"), ("boarding", False, "FAIL"), ("entry", False, "FAIL"), ("entry", True, "WARN")],
)
def test_no_gallery_per_mode(mode: str, page: bool, verdict: str) -> None:
    row = no_gallery_verdict(mode, page_reference=page, where="loaded")
    assert row.verdict == verdict and "egate ops push" in row.hint


def gate_status(**fields: object) -> GateStatus:
    base: dict[str, object] = {
        "driver": "osdp",
        "endpoint": "/dev/ttyUSB0 address 0",
        "link_changed_at": 0.0,
        "link_security": "secure_channel",
        "emergency": False,
    }
    return GateStatus.model_validate({**base, **fields})


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        (
            {"gate_state": "released", "pending_decision": "diag-1", "link_state": "up"},
            "an earlier passage is still pending (decision diag-1",
            "egate diag gate lock",
        ),
        (
            {"gate_state": "emergency", "emergency": True, "link_state": "up"},
            "emergency input is active",
            "clear the emergency input",
        ),
        ({"gate_state": "safe", "link_state": "down"}, "link is down", "turnstile row"),
        (
            {"gate_state": "locked", "link_state": "up"},
            "not acknowledged by the controller (link up, gate locked)",
            "output wiring",
        ),
    ],
    ids=["pending-passage", "emergency", "link-down", "no-ack"],
)
def test_a_refused_gate_command_names_its_cause(status: dict, error: str, hint: str) -> None:
    failure = gate_refusal("open", GateOpenReply(ok=False, decision_id="diag-1", status=gate_status(**status)))
    assert error in failure.error and hint in failure.hint


def test_cycle_that_opened_but_saw_no_passage_says_so() -> None:
    result = GateCycleReply(
        ok=False,
        decision_id="diag-1",
        opened=True,
        passage="passage_timed_out",
        locked=True,
        status=gate_status(gate_state="locked", link_state="up"),
    )
    failure = gate_refusal("cycle", result)
    assert "passage ended as passage_timed_out" in failure.error and "--passage-time" in failure.hint


def test_human_values_have_words_units_and_local_times() -> None:
    assert human_value("secure_channel", True) == "yes" and human_value("emergency", False) == "no"
    assert human_value("timeout_s", 8.0) == "8 s" and human_value("last_inference_ms", 12) == "12 ms"
    stamp = human_value("link_changed_at", 1_800_000_000.0)
    assert stamp.startswith("2027-01-15") and ":" in stamp
    assert human_value("pending_decision", None) == "-"
