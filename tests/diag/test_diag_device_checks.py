"""egate.edge.lane.device_checks: the daemon's `selftest.device` verdicts from live devices (real camera, PTY reader,
OSDP panel against the simulated controller), with the same hints as `egate diag selftest`."""

from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path

import pytest

from egate.drivers.camera import Camera, CameraConfig
from egate.drivers.document.serial_reader import SerialDocumentReader
from egate.edge.lane.device_checks import (
    HINT_READER_PORT,
    camera_check,
    device_result,
    hint_turnstile_key,
    mqtt_check,
    reader_check,
    turnstile_check,
)
from egate.edge.service.control_socket import SelftestDeviceResult
from egate.edge.uplink.link import classify_connect_error
from tests.support.diag_fixtures import DEMO_GIF
from tests.support.turnstile_fixtures import GateFactory, wait_until


def test_camera_streaming_passes_and_lost_camera_fails(tmp_path: Path) -> None:
    config = CameraConfig(kind="file", location=str(DEMO_GIF), loop=True)
    with Camera(config) as camera:
        first = camera.latest(timeout=5.0)
        assert first is not None
        assert camera.latest(after_seq=first.seq, timeout=5.0) is not None
        wait_until(lambda: camera.stats().fps > 0, 5.0, "fps measured")
        check = camera_check(camera.stats().model_dump(), mean_level=172.0)
    assert check.verdict in ("PASS", "WARN")  # WARN only if this machine is too busy to play 12 fps
    assert "streaming, 480x270" in check.detail
    with Camera(CameraConfig(kind="file", location=str(tmp_path / "gone.mp4"))) as camera:
        wait_until(lambda: camera.stats().reconnect_attempts >= 1, 5.0, "open attempt")
        lost = camera_check(camera.stats().model_dump())
    assert lost.verdict == "FAIL" and "camera.location" in lost.hint


def test_camera_dark_image_warns() -> None:
    stats = {"kind": "v4l2", "state": "streaming", "fps": 25.0, "width": 640, "height": 480}
    assert camera_check(stats, expected_fps=25.0, mean_level=12.0).hint.startswith("check the lens cap")
    assert camera_check(stats, expected_fps=25.0, mean_level=120.0).verdict == "PASS"


def test_reader_on_pty_passes_missing_port_fails(tmp_path: Path) -> None:
    from egate.tools.sim.reader import ReaderSimulator

    sim = ReaderSimulator()
    errors: list[str] = []
    try:
        with SerialDocumentReader(sim.port_path, lambda r: None) as reader:
            assert reader.connected.wait(5.0)
            ok = reader_check(sim.port_path, connected=reader.connected.is_set())
    finally:
        sim.close()
    assert ok.verdict == "PASS"
    seen = threading.Event()

    def on_result(result: object) -> None:
        errors.append(str(getattr(result, "message", "")))
        seen.set()

    missing = str(tmp_path / "ttyGONE")
    with SerialDocumentReader(missing, on_result, reconnect_s=5.0) as reader:
        assert seen.wait(5.0)
        bad = reader_check(missing, connected=reader.connected.is_set(), last_error=errors[0])
    assert bad.verdict == "FAIL" and bad.hint == HINT_READER_PORT and "cannot open" in bad.detail


@pytest.mark.slow
def test_turnstile_wrong_key_fails_with_key_hint(gate_factory: GateFactory) -> None:
    pair = gate_factory(sim_scbk=secrets.token_bytes(16), wait=False)
    wait_until(lambda: bool(pair.gate.status().link_auth_failed), 10.0, "secure channel failure")
    check = turnstile_check(pair.gate.status())
    assert check.verdict == "FAIL" and check.hint == hint_turnstile_key("turnstile.scbk")


@pytest.mark.slow
def test_turnstile_up_passes(gate_factory: GateFactory) -> None:
    pair = gate_factory()
    check = turnstile_check(pair.gate.status())
    assert check.verdict == "PASS" and check.detail.endswith("online, secure channel up")


def test_mqtt_verdicts_from_link_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = classify_connect_error(ConnectionRefusedError(), "127.0.0.1", port)
    down = mqtt_check(
        enabled=True,
        connected=False,
        host="127.0.0.1",
        port=port,
        error_category=err.category,
        error_message=err.message,
    )
    assert down.verdict == "FAIL" and down.hint.startswith("start the broker") and f"port {port}" in down.hint
    up = mqtt_check(enabled=True, connected=True, host="b", port=8883, error_category=None, error_message=None)
    assert up.verdict == "PASS"


def test_device_result_is_the_wire_model() -> None:
    result = device_result(
        mqtt_check(enabled=False, connected=False, host="h", port=1, error_category=None, error_message=None)
    )
    parsed = SelftestDeviceResult.model_validate(result)
    assert parsed.v == 1 and parsed.checks[0].verdict == "WARN"
    with pytest.raises(ValueError):
        SelftestDeviceResult.model_validate({"v": 1, "checks": [{"name": "x", "verdict": "MAYBE"}]})
