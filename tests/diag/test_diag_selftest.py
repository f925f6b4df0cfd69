"""Self-test checks against broken and healthy real parts: verdict AND fix hint.

Real parts: the demo GIF through egate.drivers.camera, the real models, a PTY reader simulator, a real
mosquitto (plain and TLS), an encrypted gallery file, a real SQLite outbox.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from egate.drivers.camera import CameraConfig
from egate.drivers.document.config import ReaderConfig
from egate.drivers.turnstile.config import parse_scbk
from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.uplink.link import LinkCredentials
from egate.edge.uplink.outbox import Outbox
from egate.engines.config import EngineConfig
from egate.tools.diag import selftest_checks as checks
from egate.tools.sim.reader import ReaderSimulator
from tests.support.broker import BrokerTls, Mosquitto
from tests.support.diag_fixtures import DEMO_GIF, make_long_pki, write_gallery
from tests.support.gallery_fixtures import GALLERY_KEY
from tests.support.link_fixtures import make_pki

NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def engine(model_dir: Path):
    from egate.engines.pipeline import FaceEngine

    with FaceEngine.from_config(EngineConfig(), model_dir) as face_engine:
        yield face_engine


# ---------------------------------------------------------------------------------------- config, models, engine


def test_config_invalid_fails_with_line_and_check_command(tmp_path: Path) -> None:
    bad = tmp_path / "egate.toml"
    bad.write_text("schema_version = 1\n[link]\nport = 99999\n")
    result = checks.check_config(bad)
    assert result.verdict == "FAIL"
    assert "link.port" in result.detail and ":3" in result.detail
    assert result.hint == f"fix the setting above, then run: egate config check {bad}"


def test_config_valid_passes(tmp_path: Path) -> None:
    good = tmp_path / "egate.toml"
    good.write_text('schema_version = 1\n[gate]\nsite_id = "s9"\ngate_id = "g9"\n')
    result = checks.check_config(good)
    assert result.verdict == "PASS" and "g9" in result.detail and result.hint == ""


def test_models_missing_fails_with_build_command(tmp_path: Path) -> None:
    result = checks.check_models(tmp_path / "models")
    assert result.verdict == "FAIL"
    assert result.hint == f"rebuild the model cache: egate models build --model-dir {tmp_path / 'models'}"


def test_models_tampered_fails(tmp_path: Path, model_dir: Path) -> None:
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(model_dir, copy)
    victim = next(p for p in sorted(copy.iterdir()) if p.suffix == ".dat" or p.suffix == ".onnx")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = checks.check_models(copy)
    assert result.verdict == "FAIL" and "egate models build" in result.hint


def test_models_and_engine_pass_on_real_models(model_dir: Path, engine) -> None:
    assert checks.check_models(model_dir).verdict == "PASS"
    result = checks.check_engine(EngineConfig(), model_dir, DEMO_GIF, engine=engine)
    assert result.verdict == "PASS", result
    assert result.detail.startswith("1 face(s) in ")


def test_engine_without_golden_media_warns(model_dir: Path) -> None:
    result = checks.check_engine(EngineConfig(), model_dir, None)
    assert result.verdict == "WARN" and "--golden" in result.hint


def test_engine_over_budget_warns(model_dir: Path, engine) -> None:
    result = checks.check_engine(EngineConfig(), model_dir, DEMO_GIF, engine=engine, budget_ms=0.0)
    assert result.verdict == "WARN" and "throttled" in result.hint


def test_engine_that_cannot_load_fails(tmp_path: Path) -> None:
    result = checks.check_engine(EngineConfig(), tmp_path / "nomodels", DEMO_GIF)
    assert result.verdict == "FAIL" and "egate models build" in result.hint


# ---------------------------------------------------------------------------------------- camera


def test_no_camera_fails_with_location_hint(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-clip.mp4"
    result = checks.check_camera(CameraConfig(kind="file", location=str(missing)))
    assert result.verdict == "FAIL"
    assert "no frame" in result.detail
    assert result.hint == f"camera.location {str(missing)!r} must be an existing file: fix the path in the config"


@pytest.mark.slow  # a second of subprocess start-up or network timeouts per case
def test_missing_v4l2_device_fails_with_cable_hint() -> None:
    result = checks.check_camera(CameraConfig(kind="v4l2", location="/dev/video42"), sample_s=0.5)
    assert result.verdict == "FAIL"
    assert "ls /dev/video*" in result.hint and "camera.location" in result.hint


def test_healthy_camera_passes_with_fps_exposure_and_face(engine) -> None:
    config = CameraConfig(kind="file", location=str(DEMO_GIF), loop=True, pacing="realtime")
    result = checks.check_camera(config, engine=engine, sample_s=1.5)
    assert result.verdict == "PASS", result
    assert "480x270" in result.detail and "fps measured" in result.detail
    assert "face in 0 of" not in result.detail


def test_dark_camera_warns(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    folder = tmp_path / "dark"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((120, 160, 3), 10, np.uint8))
    config = CameraConfig(kind="folder", location=str(folder), loop=True, fps=20)
    result = checks.check_camera(config, sample_s=1.0)
    assert result.verdict == "WARN" and "too dark" in result.detail and "lens cap" in result.hint


# ---------------------------------------------------------------------------------------- reader


def test_wrong_reader_port_fails_with_port_hint() -> None:
    result = checks.check_reader(ReaderConfig(serial_url="/dev/ttyDOESNOTEXIST"))
    assert result.verdict == "FAIL"
    assert "/dev/ttyDOESNOTEXIST" in result.detail
    assert "reader.serial_url" in result.hint and "dialout" in result.hint


def test_reader_on_real_pty_passes() -> None:
    sim = ReaderSimulator()
    try:
        result = checks.check_reader(ReaderConfig(serial_url=sim.port_path))
    finally:
        sim.close()
    assert result.verdict == "PASS" and sim.port_path in result.detail


def test_reader_not_configured_passes() -> None:
    assert checks.check_reader(ReaderConfig()).verdict == "PASS"


# ---------------------------------------------------------------------------------------- mqtt


def test_broker_down_fails_with_start_hint(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    port = broker.port
    broker.stop()
    config = LinkConfig(host="127.0.0.1", port=port, tls=False, cert_credential=None, key_credential=None)
    result = checks.check_mqtt(config, LinkCredentials(), client_id="diag-test")
    assert result.verdict == "FAIL"
    assert f"127.0.0.1:{port}" in result.detail and "is the broker up?" in result.detail
    assert result.hint.startswith("start the broker or fix link.host/link.port")


def test_plain_broker_connects_but_warns_about_tls(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        config = LinkConfig(host="127.0.0.1", port=broker.port, tls=False, cert_credential=None, key_credential=None)
        result = checks.check_mqtt(config, LinkCredentials(), client_id="diag-test")
    assert result.verdict == "WARN" and "connected" in result.detail and "link.tls = true" in result.hint


def test_tls_broker_with_healthy_certificates_passes(tmp_path: Path) -> None:
    pki = make_long_pki(tmp_path / "pki")
    tls = BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_client_cert=False)
    with Mosquitto(tmp_path / "broker", tls=tls) as broker:
        config = LinkConfig(host="127.0.0.1", port=broker.port, tls=True, cert_credential=None, key_credential=None)
        result = checks.check_mqtt(config, LinkCredentials(ca_path=pki.ca), client_id="diag-test")
    assert result.verdict == "PASS", result
    assert "(TLS)" in result.detail and "broker certificate expires in 399 days" in result.detail


def test_tls_certificate_about_to_expire_warns(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")  # the link tests' PKI: leaf certificates valid one day
    tls = BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_client_cert=True)
    with Mosquitto(tmp_path / "broker", tls=tls) as broker:
        config = LinkConfig(host="127.0.0.1", port=broker.port, tls=True)
        creds = LinkCredentials(ca_path=pki.ca, cert_path=pki.client_cert, key_path=pki.client_key)
        result = checks.check_mqtt(config, creds, client_id="diag-test")
    assert result.verdict == "WARN"
    assert "expires in 0 days" in result.detail and result.hint.startswith("renew the ")


def test_tls_with_wrong_ca_fails_with_ca_hint(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_client_cert=False)
    with Mosquitto(tmp_path / "broker", tls=tls) as broker:
        config = LinkConfig(host="127.0.0.1", port=broker.port, tls=True, cert_credential=None, key_credential=None)
        result = checks.check_mqtt(config, LinkCredentials(ca_path=pki.other_ca), client_id="diag-test")
    assert result.verdict == "FAIL"
    assert "not trusted" in result.detail and "link.ca_credential" in result.hint


# ---------------------------------------------------------------------------------------- gallery, outbox


def test_expired_gallery_fails_with_push_hint(tmp_path: Path) -> None:
    path = write_gallery(tmp_path, issued_at=NOW - dt.timedelta(days=2), expires_at=NOW - dt.timedelta(hours=3))
    result = checks.check_gallery(path, GALLERY_KEY, now=NOW)
    assert result.verdict == "FAIL"
    assert "version 7, 3 subjects" in result.detail and "EXPIRED 3:00:00 ago" in result.detail
    assert result.hint.startswith("push a current gallery from ops (egate ops push)")
    assert path.exists()  # diag reports; only the daemon purges


def test_gallery_expiring_soon_warns_and_current_passes(tmp_path: Path) -> None:
    path = write_gallery(tmp_path, issued_at=NOW - dt.timedelta(hours=1), expires_at=NOW + dt.timedelta(minutes=20))
    soon = checks.check_gallery(path, GALLERY_KEY, now=NOW)
    assert soon.verdict == "WARN" and soon.hint == "push the next gallery soon"
    later = checks.check_gallery(path, GALLERY_KEY, now=NOW - dt.timedelta(hours=2))
    assert later.verdict == "PASS" and "version 7" in later.detail


def test_gallery_with_wrong_key_fails_and_missing_fails_where_the_mode_needs_one(tmp_path: Path) -> None:
    path = write_gallery(tmp_path, issued_at=NOW - dt.timedelta(hours=1), expires_at=NOW + dt.timedelta(hours=5))
    wrong = checks.check_gallery(path, bytes(32), now=NOW)
    assert wrong.verdict == "FAIL" and "egate ops push" in wrong.hint
    nowhere = tmp_path / "none" / "gallery.egal"
    for mode in ("exit", "boarding"):
        missing = checks.check_gallery(nowhere, GALLERY_KEY, now=NOW, mode=mode)
        assert missing.verdict == "FAIL" and "GALLERY_UNAVAILABLE" in missing.detail, mode
        assert "egate ops push" in missing.hint
    # Entry compares with the document page's portrait when the reader gives one: a gallery is optional.
    entry = checks.check_gallery(nowhere, GALLERY_KEY, now=NOW, mode="entry", page_reference=True)
    assert entry.verdict == "WARN" and "portrait" in entry.detail
    assert checks.check_gallery(nowhere, GALLERY_KEY, now=NOW, mode="entry").verdict == "FAIL"


def test_outbox_not_draining_warns_full_fails_empty_passes(tmp_path: Path) -> None:
    import time

    config = OutboxConfig()
    assert checks.check_outbox(tmp_path / "absent.sqlite", config).verdict == "PASS"
    path = tmp_path / "outbox.sqlite"
    # Messages committed two hours ago and never acknowledged: the link is not delivering.
    with Outbox(path, config, "g1", clock=lambda: time.time() - 2 * 3600) as outbox:
        outbox.append("outcome", {"decision": "ACCEPT"})
    stale = checks.check_outbox(path, config)
    assert stale.verdict == "WARN"
    assert "1 queued" in stale.detail and "oldest 2:00:0" in stale.detail and "egate diag mqtt" in stale.hint
    with Outbox(path, config, "g1") as outbox:
        outbox.ack([outbox.last_seq()])
    drained = checks.check_outbox(path, config)
    assert drained.verdict == "PASS" and "0 queued" in drained.detail
    # Older than outbox.max_age_s: the outbox counts as full and the lane would refuse new outcomes.
    with Outbox(path, config, "g1", clock=lambda: time.time() - config.max_age_s - 60) as outbox:
        outbox.append("outcome", {"decision": "REFER"})
    before = path.read_bytes()
    full = checks.check_outbox(path, config)
    assert full.verdict == "FAIL" and "full" in full.detail and "egate diag mqtt" in full.hint
    assert path.read_bytes() == before  # read only: no alarm event queued by diag
    assert checks.read_outbox_facts(path, config).depth == 1


def test_outbox_below_its_disk_floor_fails_with_the_fix(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    low = checks.check_outbox(tmp_path / "outbox.sqlite", OutboxConfig(min_free_disk_bytes=min(free * 2, 1024**4)))
    assert low.verdict == "FAIL" and "out of service" in low.detail and "min_free_disk_bytes" in low.hint


def test_selftest_shows_the_daemons_outbox_and_gallery_faults_with_their_fix() -> None:
    from egate.tools.diag.selftest import device_fault_from_status, gallery_from_status

    status = {
        "devices": {
            "outbox": {"ok": False, "detail": "full: full (100% of its limits): restore the link to central ops"},
            "camera": {"ok": True, "detail": "streaming"},
        },
        "gallery": {"version": None},
    }
    fault = device_fault_from_status(status, "outbox")
    assert fault is not None and fault.verdict == "FAIL"
    assert "full (100% of its limits)" in fault.detail and fault.hint == "restore the link to central ops"
    assert device_fault_from_status(status, "camera") is None
    refused = {"devices": {"gallery": {"ok": False, "detail": "gallery on disk refused (wrong_model): x: push one"}}}
    result = gallery_from_status(refused, dt.datetime.now(dt.timezone.utc))
    assert result is not None and result.verdict == "FAIL" and "wrong_model" in result.detail


# ---------------------------------------------------------------------------------------- host


def test_clock_verdicts() -> None:
    assert checks.check_clock(state=(0, 12.0)).verdict == "PASS"
    unsync = checks.check_clock(state=(5, 16000.0))
    assert unsync.verdict == "WARN" and "timedatectl set-ntp true" in unsync.hint
    past = checks.check_clock(now=dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc), state=(0, 1.0))
    assert past.verdict == "FAIL" and "timedatectl set-time" in past.hint
    assert checks.check_clock().verdict in ("PASS", "WARN")  # the real kernel state, whatever it is here


def test_disk_passes_here(tmp_path: Path) -> None:
    result = checks.check_disk(tmp_path / "not" / "yet")
    assert result.verdict in ("PASS", "WARN") and "GiB free" in result.detail


def test_temperature_from_thermal_zones(tmp_path: Path) -> None:
    def zone(n: int, kind: str, millideg: int) -> None:
        folder = tmp_path / f"thermal_zone{n}"
        folder.mkdir()
        (folder / "type").write_text(kind + "\n")
        (folder / "temp").write_text(f"{millideg}\n")

    assert checks.check_temperature(tmp_path).verdict == "PASS"  # nothing readable: not a fault
    zone(0, "CPU-therm", 51500)
    ok = checks.check_temperature(tmp_path)
    assert ok.verdict == "PASS" and "CPU-therm 52 C" in ok.detail
    zone(1, "GPU-therm", 97000)
    hot = checks.check_temperature(tmp_path)
    assert hot.verdict == "FAIL" and "fan" in hot.hint


def test_scbk_credential_formats() -> None:
    key = bytes(range(16))
    assert parse_scbk(key) == key
    assert parse_scbk(key.hex().encode() + b"\n") == key
    with pytest.raises(ValueError, match="expected 16"):
        parse_scbk(b"abcd")


# ---------------------------------------------------------------------------------------- turnstile


@pytest.fixture
def turnstile_sim(tmp_path: Path):
    import secrets

    from egate.tools.sim.osdp_gate import TurnstileSimulator

    key = secrets.token_bytes(16)
    sim = TurnstileSimulator(scbk=key, time_scale=0.02, link_path=tmp_path / "gate0", seed=1)
    sim.start()
    try:
        yield sim, key
    finally:
        sim.close()


@pytest.mark.slow
def test_wrong_secure_channel_key_fails_with_key_hint(turnstile_sim) -> None:
    import secrets

    from tests.support.turnstile_fixtures import make_config

    sim, _ = turnstile_sim
    wrong_key = secrets.token_bytes(16)
    result = checks.check_turnstile(make_config(sim.path), lambda name: wrong_key)
    assert result.verdict == "FAIL"
    assert "refuses our key" in result.detail
    assert result.hint.startswith("the SCBK in credential 'turnstile.scbk' does not match the gate controller's")


@pytest.mark.slow
def test_turnstile_with_right_key_passes(turnstile_sim) -> None:
    from tests.support.turnstile_fixtures import make_config

    sim, key = turnstile_sim
    result = checks.check_turnstile(make_config(sim.path), {"turnstile.scbk": key}.__getitem__)
    assert result.verdict == "PASS", result
    assert result.detail == f"osdp {sim.path} address 0: online, secure channel up"
    assert sim.egress_free and not sim.entry_free  # the check leaves the gate in its safe state


def test_wrong_turnstile_port_fails_with_port_hint(tmp_path: Path) -> None:
    from tests.support.turnstile_fixtures import make_config

    def no_credentials(name: str) -> bytes:
        raise AssertionError(f"a plaintext link reads no key, asked for {name}")

    result = checks.check_turnstile(make_config(str(tmp_path / "ttyNONE"), secure_channel=False), no_credentials)
    assert result.verdict == "FAIL"
    assert "cannot open" in result.detail and "turnstile.url" in result.hint


def test_turnstile_key_of_wrong_length_fails() -> None:
    from tests.support.turnstile_fixtures import make_config

    result = checks.check_turnstile(make_config("/dev/null"), lambda name: b"short")
    assert result.verdict == "FAIL" and "turnstile.scbk" in result.hint and "16 bytes" in result.hint
