"""End to end through the real daemon (`egate run`) with `egate.tools.rig.lane.LaneRig`: real camera driver on
frames cut from the demo clips, real face engine, real signed gallery pushed over a real mosquitto,
the OSDP turnstile simulator on a PTY with a secure channel, outcomes read back over MQTT.

Every wait is on a condition with a deadline (control-socket status, MQTT messages, simulator state).
One ops key and gallery are built per module and shared by the rigs; each test runs its own daemon.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from egate.tools.rig.lane import GATE, SITE, LaneRig, OpsMaterial, prepare_ops, run_egate
from tests.support.rig import GAP, LEAD_IN, RIG

pytestmark = RIG


@pytest.fixture(scope="module")
def ops_material(tmp_path_factory: pytest.TempPathFactory) -> OpsMaterial:
    return prepare_ops(tmp_path_factory.mktemp("ops"), scope=f"{SITE}:{GATE}")


@pytest.fixture
def make_rig(tmp_path: Path, ops_material: OpsMaterial):
    rigs: list[LaneRig] = []

    def make(**kwargs) -> LaneRig:
        rig = LaneRig(tmp_path / f"rig{len(rigs)}", ops=ops_material, **kwargs)
        rigs.append(rig)
        rig.start()
        return rig

    yield make
    for rig in rigs:
        rig.close()
    for rig in rigs:
        # systemd's stop budget: SIGTERM must end the daemon cleanly within 5 s.
        assert rig.daemon_stop_s is not None, f"daemon ignored SIGTERM for 5 s:\n{rig.log_tail()}"
        assert rig.daemon_exit_code == 0, f"daemon exited {rig.daemon_exit_code}:\n{rig.log_tail()}"


def _guidance(rig: LaneRig) -> list[str]:
    return [r.get("guidance") for r in rig.log_events("lane_guidance")]


def test_expected_travellers_are_accepted_and_pass(make_rig) -> None:
    rig = make_rig(plan=[LEAD_IN, "female", GAP, "male", GAP])
    assert rig.status()["gallery"]["subjects"] == 2

    first, second = rig.wait_outcomes(2, timeout=30)

    for record in (first, second):
        assert record["decision"] == "accept", record
        assert record["reasons"] == ["MATCH"]
        assert record["passage"] == "completed"
        best = record["comparisons"][0]
        assert best["passed"] and best["score"] <= best["threshold"]
        assert not any(c["passed"] for c in record["comparisons"][1:])  # the other traveller is far off
        timings = record["timings_ms"]
        for key in ("capture", "engine_detect", "engine_embed", "match", "decide", "frame_to_open", "total"):
            assert key in timings, (key, timings)
        assert 0 < timings["frame_to_open"] < 1000
    assert first["subject_id"] != second["subject_id"]  # 1:N told the two travellers apart
    # The daemon hears "passage completed" when the sensors clear; the simulated walk ends just after.
    assert rig.sim.wait_for(lambda s: s.passages == 2, 3.0), rig.sim.passages
    assert rig.sim.wait_for(lambda s: not s.entry_free, 2.0), "entry not locked again after the passages"
    # The control socket shows the same records (newest first, personal data stripped by the tools only).
    recent = rig.call("outcomes", n=5)["outcomes"]
    assert [r["txn_id"] for r in recent[:2]] == [second["txn_id"], first["txn_id"]]


def test_stranger_is_referred_with_no_match_and_the_gate_stays_shut(make_rig) -> None:
    rig = make_rig(plan=[LEAD_IN, "stranger", GAP])

    [record] = rig.wait_outcomes(1, timeout=20)

    assert record["decision"] == "refer"
    assert record["reasons"] == ["NO_MATCH"]
    assert record["subject_id"] is None and record["passage"] is None
    assert record["comparisons"] and not any(c["passed"] for c in record["comparisons"])
    entry = rig.sim.io.entry_release_output
    assert not [c for c in rig.sim.commands_for(entry) if c.control_code in (2, 4, 5)], "entry was released"
    assert "see_officer" in _guidance(rig)


def test_two_people_at_once_get_one_person_guidance_and_a_referral(make_rig) -> None:
    rig = make_rig(plan=[LEAD_IN, "group", GAP])

    [record] = rig.wait_outcomes(1, timeout=20)

    assert record["decision"] == "refer"
    assert "MULTIPLE_FACES" in record["reasons"], record["reasons"]
    assert record["multi_face_frames"] > 0 and record["single_face_frames"] == 0
    assert "one_person_at_a_time" in _guidance(rig)
    assert rig.sim.passages == 0


def test_a_face_that_never_passes_quality_times_out(make_rig) -> None:
    rig = make_rig(plan=[LEAD_IN, "far", GAP])
    timeout_ms = rig.config()["lane"]["capture_timeout_s"] * 1000

    [record] = rig.wait_outcomes(1, timeout=20)

    assert record["decision"] == "refer"
    assert record["reasons"] == ["LOW_QUALITY", "CAPTURE_TIMEOUT"], record["reasons"]
    assert "face_too_small" in record["quality_issues"]
    assert timeout_ms <= record["timings_ms"]["capture"] < timeout_ms + 1000
    assert "come_closer" in _guidance(rig)


def test_tailgate_and_forced_door_raise_alarm_events_until_an_officer_clears_them(make_rig) -> None:
    rig = make_rig(plan=None)

    rig.sim.trigger_tailgate()

    event = rig.wait_event("tailgate", timeout=10)
    assert event["severity"] == "alarm"
    status = rig.wait_state("alarm", timeout=5)
    assert status["alarm"] == "tailgate" and status["guidance"] == "alarm"
    assert not rig.sim.entry_free
    rig.call("alarm.clear")
    rig.wait_state("idle", timeout=5)

    rig.sim.force_door()
    assert rig.wait_event("forced_door", timeout=10)["severity"] == "alarm"
    assert rig.wait_state("alarm", timeout=5)["alarm"] == "door_forced"
    rig.call("alarm.clear")
    rig.wait_state("idle", timeout=5)


def test_demo_once_plays_the_lane_and_reports_every_traveller(tmp_path: Path) -> None:
    """What `make run` shows (`egate demo --once --json`): four travellers, decided as the demo expects."""
    import json

    import typer
    from typer.testing import CliRunner

    from egate.tools.demo import run as demo

    app = typer.Typer()
    demo.register(app)
    app.command("noop")(lambda: None)  # a group, so `demo` is addressed by name as under `egate`
    result = CliRunner().invoke(app, ["demo", "--once", "--json", "--workdir", str(tmp_path / "demo")])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    rows = summary["outcomes"]
    assert [r["traveller"] for r in rows] == [
        "traveller 1 (enrolled)",
        "traveller 2 (enrolled)",
        "stranger",
        "two at once",
    ], rows
    assert [r["decision"] for r in rows] == ["ACCEPT", "ACCEPT", "REFER", "REFER"]
    assert summary["as_expected"] is True
    assert all("subject_id" not in r for r in rows)
    assert summary["daemon_stop_s"] is not None and summary["daemon_stop_s"] < 5


def test_emergency_releases_the_gate_then_the_lane_returns_to_idle(make_rig) -> None:
    rig = make_rig(plan=None)

    rig.sim.set_emergency(True)
    rig.wait_state("emergency", timeout=10)
    assert rig.wait_event("emergency", timeout=10, on=True)["severity"] == "critical"
    assert rig.sim.entry_free and rig.sim.egress_free  # the controller released everything by itself

    rig.sim.set_emergency(False)
    rig.wait_state("idle", timeout=10)
    rig.wait_event("emergency", timeout=10, on=False)
    assert rig.sim.wait_for(lambda s: not s.entry_free, 3.0), "entry not locked after the emergency"
    assert rig.status()["in_service"]


def test_lost_camera_takes_the_lane_out_of_service_until_it_is_back(make_rig) -> None:
    rig = make_rig(plan=None)

    rig.remove_camera_source()
    status = rig.wait_state("out_of_service", timeout=10)
    assert any(r.startswith("camera") for r in status["out_of_service_reasons"]), status
    assert not status["devices"]["camera"]["ok"]
    rig.wait_event("device_fault", timeout=10)

    rig.restore_camera_source()
    rig.wait_status(lambda s: s["in_service"] and s["state"] == "idle", 15, "the lane back in service")
    rig.wait_event("device_recovered", timeout=10)
    assert rig.call("camera.snapshot")["camera"]["reconnects"] >= 1


def test_lost_turnstile_link_keeps_the_gate_safe_and_recovers(make_rig) -> None:
    rig = make_rig(plan=None)

    rig.sim.unplug()  # the PTY closes: the daemon's serial port errors out
    status = rig.wait_status(
        lambda s: s["state"] == "out_of_service" and not s["devices"]["gate"]["ok"], 15, "the gate reported down"
    )
    assert any(r.startswith("gate") for r in status["out_of_service_reasons"]), status
    assert not rig.sim.entry_free and rig.sim.egress_free  # controller's own fail-safe

    rig.sim.plug()
    rig.wait_status(lambda s: s["in_service"] and s["state"] == "idle", 20, "the lane back in service")
    assert rig.call("gate.status")["link_state"] == "up"
    # The link really works again (secure channel): a traveller is let through.
    rig.play([LEAD_IN, "male", GAP])
    [record] = rig.wait_outcomes(1, timeout=20)
    assert record["decision"] == "accept" and record["passage"] == "completed"


def test_outcomes_wait_in_the_outbox_while_the_broker_is_down(make_rig) -> None:
    rig = make_rig(plan=None)

    rig.broker.stop()
    rig.wait_status(lambda _s: not rig.call("mqtt.status")["connected"], 10, "the link to notice the broker is gone")
    rig.play([LEAD_IN, "male", GAP])
    rig.wait_status(lambda _s: rig.call("outcomes", n=1)["outcomes"], 20, "the traveller's outcome")
    txn = rig.call("outcomes", n=1)["outcomes"][0]["txn_id"]
    assert rig.call("mqtt.status")["outbox"]["depth"] >= 1
    assert rig.outcomes == []

    rig.broker.start()
    [record] = rig.wait_outcomes(1, timeout=20)
    assert record["txn_id"] == txn and record["decision"] == "accept"
    rig.wait_status(lambda _s: rig.call("mqtt.status")["outbox"]["depth"] == 0, 10, "the outbox to drain")


def test_ops_sees_status_health_and_a_signed_mode_change(make_rig) -> None:
    """What central ops sees of a running gate: retained status with versions and devices, periodic health
    with real engine timings, and a signed set_mode command acknowledged and applied."""
    from egate.edge.uplink.messages import CmdAck, HealthPayload, StatusPayload

    rig = make_rig(plan=[LEAD_IN, "stranger", GAP])
    rig.wait_outcomes(1, timeout=20)

    def latest(topic: str) -> Any:
        found = rig.mqtt.of(topic)
        return found[-1].payload if found else None

    rig.mqtt.wait_for(
        lambda: (h := latest("health")) is not None and HealthPayload.model_validate(h).fps, 15, "a health sample"
    )
    health = HealthPayload.model_validate(latest("health"))
    assert health.fps and health.fps > 0 and "detect" in health.latency and health.outbox_depth is not None
    status = StatusPayload.model_validate(latest("status"))
    assert status.state == "online" and status.mode == "exit"
    assert status.gallery_version is not None and status.model_versions["face"].startswith("dlib-resnet-v1.")
    assert status.devices["camera"].state == "ok" and status.devices["gate"].state == "ok"

    assert rig.ops is not None
    args = [
        "ops", "cmd", "set-mode", "--mode", "maintenance",
        "--gate", rig.gate, "--site", rig.site,
        "--host", rig.broker.host, "--port", str(rig.broker.port),
        "--signing-key", str(rig.ops.key), "--key-id", rig.ops.key_id, "--json",
    ]  # fmt: skip
    out = run_egate(args, timeout=60)
    ack = CmdAck.model_validate(json.loads(out.strip().splitlines()[-1])["ack"])
    assert ack.status == "done", ack
    st = rig.wait_status(lambda s: s["maintenance"], 10, "maintenance by ops command")
    assert st["in_service"] is False
    rig.mqtt.wait_for(lambda: (latest("status") or {}).get("mode") == "maintenance", 10, "status mode maintenance")


def test_restart_keeps_the_encrypted_gallery_refuses_a_rollback_and_stores_nothing_personal(make_rig) -> None:
    from egate.tools.rig.lane import RigError

    rig = make_rig(plan=[LEAD_IN, "female", GAP])
    [first] = rig.wait_outcomes(1, timeout=30)
    assert first["decision"] == "accept"
    version = rig.status()["gallery"]["version"]

    rig.restart_daemon()
    assert rig.status()["gallery"]["version"] == version  # reloaded from the encrypted file
    with pytest.raises(RigError, match="rollback"):
        rig.push_gallery()  # the same version again: the persisted version state refuses it
    rig.play([LEAD_IN, "female", GAP])
    [_, second] = rig.wait_outcomes(2, timeout=30)
    assert second["decision"] == "accept" and second["subject_id"] == first["subject_id"]

    files = [p for p in rig.state_dir.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".npy")]
    gallery = next(p for p in files if p.name == "gallery.egal")
    assert first["subject_id"].encode() not in gallery.read_bytes()  # encrypted at rest, ids included


def test_sigterm_mid_capture_ends_the_session_with_a_record_and_the_entry_locked(make_rig) -> None:
    rig = make_rig(plan=[LEAD_IN, "far", GAP])  # never passes quality: the capture runs its full timeout
    rig.wait_state("capturing", 15)
    assert rig.stop_daemon() == 0 and rig.daemon_stop_s is not None and rig.daemon_stop_s < 5
    assert not rig.sim.entry_free
    rig.restart_daemon()  # whatever the link had not forwarded before the stop goes out now
    [record] = rig.wait_outcomes(1, timeout=20)
    assert record["decision"] == "refer" and "ABORTED_OUT_OF_SERVICE" in record["reasons"], record
    assert not [e for e in rig.events if e.get("details", {}).get("reasons", "").startswith("camera")]
