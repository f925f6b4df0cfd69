"""`egate diag` against a real running daemon (the lane test setup), healthy and broken.

The daemon is `egate run` in a subprocess; the turnstile a libosdp simulator on a PTY; the broker a real
mosquitto. Each check's verdict and fix hint are asserted, as a technician at a dead gate reads them.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from egate.edge.lane.device_checks import HINT_MQTT_PLAIN
from egate.tools.rig.local_broker import Mosquitto
from egate.tools.sim.osdp_gate import TurnstileSimulator
from tests.support.daemon_fixtures import ROOT, GateDaemon
from tests.support.diag_fixtures import write_gallery
from tests.support.gallery_fixtures import GALLERY_KEY

# Every test here runs the real daemon.
pytestmark = pytest.mark.slow


def diag(daemon: GateDaemon, *args: str, config: bool = True) -> tuple[int, Any, str]:
    """Run `egate diag ...` as a technician would (a separate process); parse --json output."""
    cmd = [sys.executable, "-m", "egate.tools.cli", "diag", *args]
    if config:
        cmd += ["--config", str(daemon.config)]
    result = subprocess.run(cmd, env=daemon.env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    data = None
    if "--json" in args and result.stdout.strip():
        text = result.stdout.strip()
        try:
            data = json.loads(text)  # one document (possibly indented)
        except json.JSONDecodeError:
            data = json.loads(text.splitlines()[-1])  # JSON lines: the result is the last
    return result.returncode, data, result.stdout + result.stderr


def rows(selftest: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in selftest["checks"]}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateDaemon]:
    work = tmp_path_factory.mktemp("healthy")
    with (
        Mosquitto(work / "broker") as broker,
        TurnstileSimulator(scbk=secrets.token_bytes(16), link_path=work / "pty", time_scale=0.2) as sim,
    ):
        daemon = GateDaemon(work, broker=broker, sim=sim, gallery_key=GALLERY_KEY)
        now = dt.datetime.now(dt.timezone.utc)
        write_gallery(daemon.state, issued_at=now - dt.timedelta(hours=1), expires_at=now + dt.timedelta(days=2))
        daemon.start()
        try:
            daemon.wait_status(lambda s: s["in_service"], 60, "the lane to be in service")
            yield daemon
        finally:
            assert daemon.stop() == 0


def test_selftest_through_the_daemon(healthy: GateDaemon) -> None:
    code, data, out = diag(healthy, "selftest", "--json")
    checks = rows(data)
    for name in ("config", "models", "engine", "lane", "camera", "turnstile", "disk", "outbox", "gallery"):
        assert checks[name]["verdict"] == "PASS", (name, checks[name], out)
    assert "secure channel up" in checks["turnstile"]["detail"]
    assert "in service, exit mode" in checks["lane"]["detail"]
    assert checks["gallery"]["detail"].startswith("version 7, 3 subjects")
    # A plain broker is a lab set-up: the same WARN as when the tool connects itself.
    assert checks["mqtt"]["verdict"] == "WARN" and checks["mqtt"]["hint"] == HINT_MQTT_PLAIN
    assert "daemon" not in checks
    assert code == 0, out


def test_selftest_fails_a_lane_in_maintenance_and_names_the_way_back(healthy: GateDaemon) -> None:
    code, data, out = diag(healthy, "maintenance", "on", "--json")
    assert code == 0, out
    try:
        code, data, out = diag(healthy, "selftest", "--json")
        lane = rows(data)["lane"]
        assert code == 1 and lane["verdict"] == "FAIL" and "maintenance" in lane["detail"], out
        assert "egate diag maintenance off" in lane["hint"]
        assert [c["name"] for c in data["checks"] if c["verdict"] == "FAIL"] == ["lane"]
        code, _, out = diag(healthy, "selftest")  # the human table says it too
        assert code == 1 and "in maintenance" in out and "1 failed" in out
    finally:
        assert diag(healthy, "maintenance", "off", "--json")[0] == 0
    healthy.wait_status(lambda s: s["in_service"], 20, "the lane back in service")


def test_local_selftest_is_refused_while_the_daemon_owns_the_devices(healthy: GateDaemon) -> None:
    code, data, out = diag(healthy, "selftest", "--local", "--json")
    assert code == 1 and data["ok"] is False, out
    assert "daemon is running" in data["error"] and "without --local" in data["hint"]
    code, _, out = diag(healthy, "selftest", "--local")
    assert code == 1 and out.startswith("error: ") and "\nfix: " in out


def test_status_shows_state_devices_and_versions(healthy: GateDaemon) -> None:
    code, data, _ = diag(healthy, "status", "--json")
    assert code == 0
    status = data["status"]
    assert status["in_service"] is True and status["mode"] == "exit"
    assert status["devices"]["camera"]["ok"] is True and status["devices"]["gate"]["ok"] is True
    assert status["versions"]["model"].startswith("dlib-resnet-v1.")
    assert status["gallery"]["version"] == 7 and status["gallery"]["subjects"] == 3


def test_gate_commands_need_maintenance_and_then_cycle_the_real_gate(healthy: GateDaemon) -> None:
    code, data, _ = diag(healthy, "gate", "open", "--json")
    assert code == 1
    assert data["error"] == "gate.open refused: the lane is not in maintenance mode"
    assert "egate diag maintenance on" in data["hint"]

    code, data, _ = diag(healthy, "maintenance", "on", "--json")
    assert code == 0 and data["result"] == {
        "v": 1,
        "maintenance": True,
        "owners": ["technician"],
        "state": "OUT_OF_SERVICE",
    }
    try:
        code, data, out = diag(healthy, "gate", "cycle", "--json")
        assert code == 0, out
        result = data["result"]
        assert (result["opened"], result["passage"], result["locked"]) == (True, "passage_completed", True)
        assert result["status"]["gate_state"] == "locked"
    finally:
        code, data, _ = diag(healthy, "maintenance", "off", "--json")
    assert code == 0 and data["result"]["maintenance"] is False
    healthy.wait_status(lambda s: s["in_service"], 20, "the lane back in service")


def test_camera_snapshot_is_a_real_annotated_frame(healthy: GateDaemon, tmp_path: Path) -> None:
    out_file = tmp_path / "snap.jpg"
    code, data, out = diag(healthy, "camera", "--snapshot", str(out_file), "--json")
    assert code == 0, out
    image = cv2.imread(str(out_file))
    assert image is not None and image.shape[:2] == (data["height"], data["width"]) == (270, 480)
    assert data["faces"], "the demo clip shows a face in every frame"
    assert all(0.0 < f["det_score"] <= 1.0 for f in data["faces"])


def test_mqtt_and_engines(healthy: GateDaemon) -> None:
    code, data, out = diag(healthy, "mqtt", "--json")
    assert code == 0, out
    assert data["daemon"]["connected"] is True and data["daemon"]["last_error"] is None
    code, data, out = diag(healthy, "engines", "--json", config=False)
    assert code == 0, out
    assert "onnxruntime" in json.dumps(data)
    engines = healthy.call("engines.status")
    assert engines["worker_alive"] is True and engines["fps"] > 0 and engines["last_inference_ms"] > 0


def test_logs_say_where_to_look_when_journald_has_nothing(healthy: GateDaemon) -> None:
    code, _, out = diag(healthy, "logs", "--since", "10m")
    if code == 0:
        pytest.skip("journald has egate entries on this machine")
    assert code == 1 and "journalctl -u egate" in out


def test_broken_gate_names_each_fault_and_its_fix(tmp_path: Path) -> None:
    """Wrong secure-channel key, broker down, camera clip missing: one daemon, three FAILs, gate safe."""
    with TurnstileSimulator(scbk=secrets.token_bytes(16), link_path=tmp_path / "pty", time_scale=0.2) as sim:
        daemon = GateDaemon(tmp_path, sim=sim, scbk=secrets.token_bytes(16), broker=None, camera=None).start()
        try:
            status = daemon.wait_status(
                lambda s: not s["in_service"] and "gate" in " ".join(s["out_of_service_reasons"]),
                30,
                "the lane out of service",
            )
            reasons = " ".join(status["out_of_service_reasons"])
            assert "camera" in reasons and "gate" in reasons
            assert sim.entry_free is False and sim.egress_free is True  # safe state, whatever is broken
            code, data, out = diag(daemon, "selftest", "--json")
        finally:
            assert daemon.stop() == 0
    assert code == 1, out
    checks = rows(data)
    assert checks["turnstile"]["verdict"] == "FAIL"
    assert "turnstile.scbk" in checks["turnstile"]["hint"] or "SCBK" in checks["turnstile"]["hint"]
    assert checks["mqtt"]["verdict"] == "FAIL" and checks["mqtt"]["hint"]
    assert checks["camera"]["verdict"] == "FAIL" and checks["camera"]["hint"]


def test_local_selftest_with_the_daemon_stopped_and_a_wrong_serial_port(tmp_path: Path) -> None:
    daemon = GateDaemon(tmp_path, sim=None, broker=None)  # not started: diag opens the devices itself
    code, data, out = diag(daemon, "selftest", "--json")
    assert code == 1, out
    checks = rows(data)
    assert checks["turnstile"]["verdict"] == "FAIL"
    assert "no-such-serial-port" in checks["turnstile"]["detail"] + checks["turnstile"]["hint"]
    assert checks["camera"]["verdict"] == "PASS"


def test_status_watch_renders_live_frames_without_personal_data(healthy: GateDaemon) -> None:
    code, _, out = diag(healthy, "status", "--watch", "--count", "2", "--interval", "0.2")
    assert code == 0, out
    assert "exit" in out and ("capturing" in out.lower() or "idle" in out.lower() or "refer" in out.lower())
    assert "descriptor" not in out


def test_expired_gallery_fails_the_local_selftest_and_the_daemon_purges_it(tmp_path: Path) -> None:

    now = dt.datetime.now(dt.timezone.utc)
    daemon = GateDaemon(tmp_path, sim=None, broker=None, gallery_key=GALLERY_KEY)
    path = write_gallery(daemon.state, issued_at=now - dt.timedelta(days=2), expires_at=now - dt.timedelta(hours=1))
    code, data, out = diag(daemon, "selftest", "--json")  # daemon stopped: the tool reads the file
    gallery = rows(data)["gallery"]
    assert code == 1 and gallery["verdict"] == "FAIL" and "EXPIRED" in gallery["detail"], out
    assert "egate ops push" in gallery["hint"]
    daemon.start()
    try:
        status = daemon.call("status")
        assert status["gallery"] == {"version": None}
        assert not path.exists(), "the daemon must purge an expired gallery from disk at start"
        # The same gate asked through the daemon: still a FAIL, now that nothing usable is loaded.
        code, data, out = diag(daemon, "selftest", "--json")
        gallery = rows(data)["gallery"]
        # The daemon reports the refused gallery as a device fault; its detail names why, its hint the fix.
        assert code == 1 and gallery["verdict"] == "FAIL" and "refused (expired)" in gallery["detail"], out
        assert "expired and was purged" in gallery["hint"] and "egate ops push" in gallery["hint"]
    finally:
        assert daemon.stop() == 0
    purged = [line for line in daemon.log_tail(200_000).splitlines() if '"gallery_purged"' in line]
    assert purged and '"reason": "expired"' in purged[0]
