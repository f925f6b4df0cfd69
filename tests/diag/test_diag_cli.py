"""`egate diag` commands through a real control socket (a stand-in lane's handlers) and without a daemon.

The commands against the real daemon are tests/test_diag_daemon.py; here a stand-in lane's handlers
follow docs/control-api.md, so the tools' side is covered without the daemon.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import BaseModel

from egate.drivers.turnstile.base import GateStatus
from egate.edge.lane.replies import (
    DeviceSummary,
    GallerySummary,
    GateCycleReply,
    GateLockReply,
    GateOpenReply,
    GateStatusReply,
    MaintenanceReply,
    MqttStatusReply,
    OutcomesReply,
    StatusReply,
    StatusVersions,
)
from egate.edge.lane.snapshot import Snapshot, make_snapshot
from egate.edge.service.control_socket import ControlRefused, ControlServer, DeviceCheck, SelftestDeviceResult
from egate.edge.session.policy import Reason, Verdict
from egate.edge.session.records import ComparisonRecord, DocumentSummary, OutcomeRecord, VersionInfo
from egate.edge.session.states import LaneState
from egate.edge.settings.lane import Mode
from egate.engines.config import EngineConfig
from egate.tools.diag.selftest_checks import read_frames
from tests.support.broker import Mosquitto
from tests.support.diag_fixtures import DEMO_GIF, run_diag

MAINT_HINT = "enter maintenance mode: egate diag maintenance on / signed ops command set_mode maintenance"


class StandInLane:
    """Handlers with the contract of docs/control-api.md (the reply models), state kept in memory."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.maintenance = False
        self.gate_calls: list[tuple[str, dict[str, Any]]] = []
        self.snapshot = snapshot
        self.gallery_expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=5)

    def status(self, _args: dict[str, Any]) -> StatusReply:
        return StatusReply(
            gate_id="gate-01",
            state=LaneState.OUT_OF_SERVICE if self.maintenance else LaneState.IDLE,
            mode=Mode.EXIT,
            txn_id=None,
            in_service=not self.maintenance,
            out_of_service_reasons=["maintenance"] if self.maintenance else [],
            alarm=None,
            maintenance=self.maintenance,
            maintenance_owners=["technician"] if self.maintenance else [],
            guidance=None,
            devices={
                "camera": DeviceSummary(ok=True, detail="12.5 fps"),
                "gate": DeviceSummary(ok=True, detail="secure"),
            },
            versions=StatusVersions(software="0.1.0", model="dlib-resnet-v1.x", config="abc", gallery="7"),
            gallery=GallerySummary(version=7, subjects=3, templates=3, expires_at=self.gallery_expires),
        )

    def outcomes(self, args: dict[str, Any]) -> OutcomesReply:
        ended = dt.datetime(2026, 11, 28, 5, 0, 1, tzinfo=dt.timezone.utc)
        record = OutcomeRecord(
            txn_id="0193aaaa-bbbb-7ccc-8ddd-eeeeffff0001",
            gate_id="gate-01",
            mode=Mode.EXIT,
            started_at=ended - dt.timedelta(seconds=2),
            ended_at=ended,
            decision=Verdict.ACCEPT,
            reasons=[Reason.MATCH],
            subject_id="s0-000001",
            comparisons=[
                ComparisonRecord(
                    kind="1:N",
                    subject_id="s0-000001",
                    score=0.41,
                    threshold=0.6,
                    higher_is_better=False,
                    passed=True,
                )
            ],
            quality=0.83,
            document=DocumentSummary(number_masked="L8***9", issuing_state="UTO", expiry=None, checks_ok=True),
            versions=VersionInfo(software="0.1.0"),
            timings_ms={"total": 212.0},
        )
        return OutcomesReply(outcomes=[record][: int(args.get("n", 10))])

    def set_maintenance(self, args: dict[str, Any]) -> MaintenanceReply:
        self.maintenance = bool(args["on"])
        st = self.status({})
        return MaintenanceReply(maintenance=self.maintenance, owners=st.maintenance_owners, state=st.state.name)

    def gate(self, action: str) -> Any:
        def handler(args: dict[str, Any]) -> BaseModel:
            if action != "status" and not self.maintenance:
                raise ControlRefused(f"gate.{action} refused: the lane is not in maintenance mode", MAINT_HINT)
            self.gate_calls.append((action, args))
            status = GateStatus(
                driver="osdp",
                endpoint="/dev/ttyUSB0 address 0",
                link_state="up",
                link_changed_at=0.0,
                link_security="secure_channel",
                gate_state="locked",
                emergency=False,
            )
            if action == "status":
                return GateStatusReply(status)
            if action == "lock":
                return GateLockReply(ok=True, status=status)
            if action == "open":
                return GateOpenReply(ok=True, decision_id="diag-1", status=status)
            return GateCycleReply(
                ok=True, decision_id="diag-1", opened=True, passage="passage_completed", locked=True, status=status
            )

        return handler

    def snapshot_handler(self, _args: dict[str, Any]) -> Snapshot:
        if self.snapshot is None:
            raise ControlRefused("camera is not streaming", "check the camera: egate diag selftest")
        return self.snapshot

    def device_checks(self, _args: dict[str, Any]) -> SelftestDeviceResult:
        return SelftestDeviceResult(
            checks=[
                DeviceCheck(name="camera", verdict="PASS", detail="12.5 fps", hint=""),
                DeviceCheck(
                    name="turnstile", verdict="FAIL", detail="secure channel refused", hint="install the right SCBK"
                ),
            ]
        )

    def mqtt_status(self, _args: dict[str, Any]) -> MqttStatusReply:
        return MqttStatusReply(enabled=True, connected=True, protocol="5", outbox_depth=0, last_error=None, outbox=None)

    def handlers(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "outcomes": self.outcomes,
            "maintenance": self.set_maintenance,
            "gate.status": self.gate("status"),
            "gate.open": self.gate("open"),
            "gate.lock": self.gate("lock"),
            "gate.cycle": self.gate("cycle"),
            "camera.snapshot": self.snapshot_handler,
            "mqtt.status": self.mqtt_status,
            "selftest.device": self.device_checks,
        }


def write_config(tmp_path: Path, *, model_dir: Path | None = None, extra: str = "") -> Path:
    state = tmp_path / "state"
    models = f'model_dir = "{model_dir}"\n' if model_dir else ""
    from egate.edge.settings import Settings

    if "camera" in Settings.model_fields and "[camera]" not in extra:
        # Once the lane adds [camera] to Settings, the default (V4L2 device 0) is absent here: use the demo clip.
        extra += f'[camera]\nkind = "file"\nlocation = "{DEMO_GIF}"\nloop = true\n'
    config = tmp_path / "egate.toml"
    config.write_text(
        'schema_version = 1\n[gate]\nsite_id = "site-t"\ngate_id = "gate-t1"\n'
        f'[state]\nstate_dir = "{state}"\n{models}'
        f'[control]\nsocket_path = "{tmp_path / "c.sock"}"\nsocket_group = ""\n' + extra
    )
    return config


@pytest.fixture
def lane_daemon(tmp_path: Path) -> Iterator[tuple[StandInLane, Path]]:
    frame = read_frames(DEMO_GIF, 1)[0]
    lane = StandInLane(snapshot=make_snapshot(frame, [], camera_stats={"fps": 12.5, "state": "streaming"}))
    config = write_config(tmp_path)
    with ControlServer(tmp_path / "c.sock", None, lane.handlers()):
        yield lane, config


def test_gate_open_refused_outside_maintenance_then_allowed(lane_daemon: tuple[StandInLane, Path]) -> None:
    lane, config = lane_daemon
    code, out, data = run_diag("gate", "open", "--config", str(config), "--json")
    assert code == 1
    assert data == {"ok": False, "error": "gate.open refused: the lane is not in maintenance mode", "hint": MAINT_HINT}
    code, out, _ = run_diag("gate", "cycle", "--config", str(config))
    assert code == 1 and "egate diag maintenance on" in out
    assert lane.gate_calls == []
    code, _, data = run_diag("maintenance", "on", "--config", str(config), "--json")
    assert code == 0 and data["result"] == {
        "v": 1,
        "maintenance": True,
        "owners": ["technician"],
        "state": "OUT_OF_SERVICE",
    }
    code, _, data = run_diag("gate", "open", "--passage-time", "3", "--config", str(config), "--json")
    assert code == 0 and data["source"] == "daemon" and data["result"]["ok"] is True
    assert lane.gate_calls == [("open", {"timeout_s": 3.0})]
    code, _, data = run_diag("gate", "status", "--config", str(config), "--json")
    assert code == 0 and data["result"]["link_state"] == "up"


def test_status_shows_state_and_outcomes_without_personal_data(lane_daemon: tuple[StandInLane, Path]) -> None:
    _, config = lane_daemon
    code, _, data = run_diag("status", "--config", str(config), "--json")
    assert code == 0 and data["status"]["state"] == "idle"
    outcome = data["outcomes"][0]
    assert outcome["decision"] == "accept" and outcome["comparisons"][0]["score"] == 0.41
    assert "subject_id" not in outcome and "document" not in outcome
    assert "subject_id" not in outcome["comparisons"][0]
    code, out, _ = run_diag("status", "--config", str(config))
    assert code == 0 and "idle" in out and "accept" in out and "0.410/0.600" in out
    assert "s0-000001" not in out and "L8***9" not in out
    assert "\x1b[" not in out  # no colour codes when not on a terminal


def test_status_watch_emits_one_json_line_per_refresh(lane_daemon: tuple[StandInLane, Path]) -> None:
    _, config = lane_daemon
    code, out, _ = run_diag("status", "--watch", "--count", "3", "--interval", "0.2", "--config", str(config), "--json")
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 0 and len(lines) == 3 and all('"state": "idle"' in line for line in lines)


def test_camera_snapshot_through_daemon_writes_a_jpeg(lane_daemon: tuple[StandInLane, Path], tmp_path: Path) -> None:
    _, config = lane_daemon
    target = tmp_path / "snap.jpg"
    code, _, data = run_diag("camera", "--snapshot", str(target), "--config", str(config), "--json")
    assert code == 0 and data["source"] == "daemon" and data["camera"]["fps"] == 12.5
    image = cv2.imread(str(target))
    assert image is not None and image.shape == (270, 480, 3)


def test_selftest_uses_daemon_device_checks_and_its_gallery(lane_daemon: tuple[StandInLane, Path]) -> None:
    lane, config = lane_daemon
    lane.gallery_expires = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    code, _, data = run_diag("selftest", "--config", str(config), "--json")
    assert code == 1 and data["mode"] == "daemon"
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["turnstile"] == {
        "name": "turnstile",
        "verdict": "FAIL",
        "detail": "secure channel refused",
        "hint": "install the right SCBK",
    }
    assert by_name["camera"]["verdict"] == "PASS"
    assert by_name["gallery"]["verdict"] == "FAIL" and "egate ops push" in by_name["gallery"]["hint"]


def test_mqtt_shows_the_daemon_view_and_probes_the_broker(
    lane_daemon: tuple[StandInLane, Path], tmp_path: Path
) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        extra = f'[link]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\ncert_credential = "a"\n'
        config = write_config(tmp_path, extra=extra.replace('cert_credential = "a"\n', ""))
        code, _, data = run_diag("mqtt", "--config", str(config), "--json")
    assert code == 0, data
    assert data["daemon"]["connected"] is True
    assert data["checks"][0]["name"] == "mqtt" and data["checks"][0]["verdict"] in ("PASS", "WARN")


# ---------------------------------------------------------------------------------------- daemon not running


def test_commands_needing_the_daemon_say_how_to_start_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code, _, data = run_diag("status", "--config", str(config), "--json")
    assert code == 1 and "not running" in data["error"] and "systemctl start egate" in data["hint"]
    code, _, data = run_diag("maintenance", "on", "--config", str(config), "--json")
    assert code == 1 and "no lane" in data["error"] and "egate diag gate status" in data["hint"]


def test_invalid_config_exits_2_with_check_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[control]\nsocket_mode = 1\n")
    code, _, data = run_diag("status", "--config", str(bad), "--json")
    assert code == 2 and "control.socket_mode" in data["error"] and f"egate config check {bad}" in data["hint"]


def test_local_gate_with_wrong_port_fails_with_hint(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='[turnstile]\nurl = "/dev/ttyDIAGMISSING"\nsecure_channel = false\n')
    code, _, data = run_diag("gate", "status", "--config", str(config), "--json")
    # The port does not exist: said at once as such, not as a controller that "did not come online".
    assert code == 1 and "No such file or directory" in data["error"] and "/dev/ttyDIAGMISSING" in data["error"]
    assert "turnstile.url" in data["hint"]


def test_mqtt_with_broker_down_exits_1(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    broker.stop()
    extra = f'[link]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\n'
    code, _, data = run_diag("mqtt", "--config", str(write_config(tmp_path, extra=extra)), "--json")
    assert code == 1 and data["daemon"] is None
    assert data["checks"][0]["verdict"] == "FAIL" and data["checks"][0]["hint"].startswith("start the broker")


@pytest.mark.slow
def test_selftest_local_on_a_broken_setup(tmp_path: Path, model_dir: Path) -> None:
    """No daemon: devices opened here; wrong turnstile port and broker down FAIL, the rest reported."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    broker.stop()
    extra = (
        f'[turnstile]\nurl = "/dev/ttyDIAGMISSING"\nsecure_channel = false\n'
        f'[reader]\nserial_url = "/dev/ttyDIAGREADER"\n'
        f'[link]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\n'
    )
    config = write_config(tmp_path, model_dir=model_dir, extra=extra)
    code, _out, data = run_diag("selftest", "--config", str(config), "--json")
    assert code == 1 and data["mode"] == "local"
    by_name = {c["name"]: c for c in data["checks"]}
    assert [c["name"] for c in data["checks"]][:3] == ["config", "models", "engine"]
    assert by_name["config"]["verdict"] == "PASS" and by_name["models"]["verdict"] == "PASS"
    assert by_name["engine"]["verdict"] in ("PASS", "WARN")  # WARN only when this machine is very busy
    assert by_name["reader"]["verdict"] == "FAIL" and "reader.serial_url" in by_name["reader"]["hint"]
    assert by_name["turnstile"]["verdict"] == "FAIL" and "turnstile.url" in by_name["turnstile"]["hint"]
    assert by_name["mqtt"]["verdict"] == "FAIL" and by_name["mqtt"]["hint"].startswith("start the broker")
    # Exit mode without a gallery refers everyone; no daemon serves nobody: both are the gate's faults too.
    assert by_name["gallery"]["verdict"] == "FAIL" and "GALLERY_UNAVAILABLE" in by_name["gallery"]["detail"]
    assert by_name["daemon"]["verdict"] == "FAIL" and "systemctl start egate" in by_name["daemon"]["hint"]
    assert {"clock", "disk", "outbox", "temperature"} <= set(by_name)
    assert data["summary"]["FAIL"] == 5


def test_logs_without_journald_says_where_logs_are(tmp_path: Path) -> None:
    from egate.tools.diag.commands import journal_since, journald_has_unit

    assert journal_since("10m") == "-10m" and journal_since("2 h") == "-2h"
    assert journal_since("2026-11-28 05:00") == "2026-11-28 05:00"
    code, _, data = run_diag("logs", "--since", "10m", "--config", str(write_config(tmp_path)), "--json")
    if journald_has_unit():
        assert code == 0 and data["source"] == "journald"
    else:
        assert code == 1 and "journald" in data["error"] and "journalctl -u egate" in data["hint"]


def test_snapshot_draws_faces_with_quality(model_dir: Path) -> None:
    from egate.engines.pipeline import FaceEngine

    frames = read_frames(DEMO_GIF, 40)
    with FaceEngine.from_config(EngineConfig(), model_dir) as engine:
        frame, faces = next((f, obs) for f in frames if (obs := engine.analyze(f)))
        problems = [EngineConfig().quality.acceptable(o.quality) for o in faces]
    snap = make_snapshot(frame, faces, problems=problems, camera_stats={"fps": 10.0})
    assert len(snap.faces) == len(faces) and snap.faces[0].quality["sharpness"] > 0
    drawn = cv2.imdecode(np.frombuffer(base64.b64decode(snap.jpeg_base64), np.uint8), cv2.IMREAD_COLOR)
    assert drawn is not None
    x1, y1, x2, _y2 = (round(v) for v in faces[0].box_xyxy)
    # The box outline is drawn in pure green or red, which the clip does not contain at that place.
    edge = drawn[y1, x1 : x2 + 1].astype(int)
    assert np.any((edge[:, 1] > 150) & (edge[:, 0] < 80) & (edge[:, 2] < 80)) or np.any(
        (edge[:, 2] > 150) & (edge[:, 0] < 80) & (edge[:, 1] < 80)
    )


@pytest.mark.slow
def test_local_gate_commands_against_the_simulated_controller(tmp_path: Path) -> None:
    """Daemon stopped: diag drives the gate controller itself, with the SCBK from $CREDENTIALS_DIRECTORY."""
    import secrets

    from egate.tools.sim.osdp_gate import TurnstileSimulator

    key = secrets.token_bytes(16)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "turnstile.scbk").write_text(key.hex() + "\n")
    sim = TurnstileSimulator(scbk=key, time_scale=0.02, link_path=tmp_path / "gate0", seed=2)
    sim.start()
    try:
        extra = f'[turnstile]\nurl = "{sim.path}"\n'
        config = str(write_config(tmp_path, extra=extra))
        env = {"CREDENTIALS_DIRECTORY": str(creds)}
        code, _, data = run_diag("gate", "status", "--config", config, "--json", env=env)
        assert code == 0 and data["source"] == "local"
        assert data["result"]["link_state"] == "up" and data["result"]["link_security"] == "secure_channel"
        passages = sim.passages
        code, _, data = run_diag("gate", "cycle", "--passage-time", "3", "--config", config, "--json", env=env)
        assert code == 0, data
        assert data["result"]["opened"] is True and data["result"]["locked"] is True
        assert data["result"]["passage"] == "passage_completed"
        assert sim.passages == passages + 1
        # A wrong key in the credential: refused with the key hint, the gate untouched.
        (creds / "turnstile.scbk").write_text(secrets.token_bytes(16).hex())
        code, _, data = run_diag("gate", "open", "--config", config, "--json", env=env)
        assert code == 1 and "refuses our key" in data["error"] and "turnstile.scbk" in data["hint"]
        assert not sim.entry_free
    finally:
        sim.close()


@pytest.mark.slow
def test_selftest_local_passes_on_healthy_real_parts(tmp_path: Path, model_dir: Path) -> None:
    """Daemon stopped, every part healthy: simulated gate controller with the right key, reader PTY,
    mutual-TLS broker with long-lived certificates, a current gallery, the real models."""
    import secrets

    from egate.edge.settings import load_settings
    from egate.tools.sim.osdp_gate import TurnstileSimulator
    from egate.tools.sim.reader import ReaderSimulator
    from tests.support.broker import BrokerTls
    from tests.support.diag_fixtures import make_long_pki, write_gallery
    from tests.support.gallery_fixtures import GALLERY_KEY

    key = secrets.token_bytes(16)
    pki = make_long_pki(tmp_path / "pki")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "turnstile.scbk").write_bytes(key)
    (creds / "gallery.key").write_bytes(GALLERY_KEY)
    for name, source in (
        ("mqtt-ca.pem", pki.ca),
        ("mqtt-client.pem", pki.client_cert),
        ("mqtt-client.key", pki.client_key),
    ):
        (creds / name).write_bytes(source.read_bytes())
    now = dt.datetime.now(dt.timezone.utc)
    sim = TurnstileSimulator(scbk=key, time_scale=0.02, link_path=tmp_path / "gate0", seed=3)
    sim.start()
    reader = ReaderSimulator()
    tls = BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_client_cert=True)
    try:
        with Mosquitto(tmp_path / "broker", tls=tls) as broker:
            extra = (
                f'[turnstile]\nurl = "{sim.path}"\n'
                f'[reader]\nserial_url = "{reader.port_path}"\n'
                f'[link]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            )
            config = write_config(tmp_path, model_dir=model_dir, extra=extra)
            state_dir = load_settings(config).state.state_dir
            write_gallery(state_dir, issued_at=now - dt.timedelta(hours=1), expires_at=now + dt.timedelta(days=1))
            env = {"CREDENTIALS_DIRECTORY": str(creds)}
            code, _, data = run_diag("selftest", "--config", str(config), "--json", env=env)
    finally:
        reader.close()
        sim.close()
    by_name = {c["name"]: c for c in data["checks"]}
    healthy = ("config", "models", "reader", "turnstile", "mqtt", "disk", "outbox", "gallery", "temperature")
    for name in healthy:
        assert by_name[name]["verdict"] == "PASS", by_name[name]
        assert by_name[name]["hint"] == ""
    assert by_name["turnstile"]["detail"].endswith("online, secure channel up")
    assert "(TLS)" in by_name["mqtt"]["detail"] and "expires in 399 days" in by_name["mqtt"]["detail"]
    assert by_name["gallery"]["detail"].startswith("version 7, 3 subjects")
    assert by_name["engine"]["verdict"] in ("PASS", "WARN")  # WARN only if this machine is very busy
    assert by_name["clock"]["verdict"] in ("PASS", "WARN")  # this container's kernel clock may be unsynchronised
    assert by_name["camera"]["verdict"] in ("PASS", "WARN")
    # Every device is healthy, but with the daemon stopped this gate serves nobody: the only FAIL.
    assert [c["name"] for c in data["checks"] if c["verdict"] == "FAIL"] == ["daemon"] and code == 1
    assert "not running" in by_name["daemon"]["detail"] and "systemctl start egate" in by_name["daemon"]["hint"]


def test_local_snapshot_opens_the_camera_and_draws_faces(tmp_path: Path, model_dir: Path) -> None:
    """Daemon stopped: the snapshot comes from the camera opened here (Settings with a [camera] section)."""
    from types import SimpleNamespace

    from egate.drivers.camera import CameraConfig
    from egate.edge.service.control_socket import ControlRefused
    from egate.edge.settings.core import StateConfig
    from egate.tools.diag.local import local_snapshot

    settings: Any = SimpleNamespace(
        camera=CameraConfig(kind="file", location=str(DEMO_GIF), loop=True),
        engine=EngineConfig(),
        state=StateConfig(state_dir=tmp_path, model_dir=model_dir),
    )
    result = local_snapshot(settings)
    assert result["width"] == 480 and result["camera"]["state"] == "streaming"
    assert len(result["faces"]) == 1 and "note" not in result
    image = cv2.imdecode(np.frombuffer(base64.b64decode(result["jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (270, 480, 3)
    settings.camera = CameraConfig(kind="file", location=str(tmp_path / "none.mp4"))
    with pytest.raises(ControlRefused) as info:
        local_snapshot(settings)
    assert "gave no frame" in info.value.error and "camera.location" in info.value.hint
