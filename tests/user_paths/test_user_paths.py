"""Each user's path through the tools, end to end against the demo rig (tools/rig/lane.py).

The field technician (selftest healthy, broken, in maintenance, without a usable gallery), the central
ops engineer (keys, a gallery built from bad photos, a push to a wrong gate, a signed command) and the
integrator (an empty and a wrong config). Every command runs as a separate `egate` process, the way a
person types it; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from egate.tools.rig.lane import GATE, SITE, LaneRig, prepare_ops
from egate.tools.rig.local_broker import MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / ".cache" / "models"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (shutil.which("mosquitto") or os.path.exists(MOSQUITTO)), reason="mosquitto is not installed"
    ),
    pytest.mark.skipif(
        not (MODEL_DIR / "manifest.json").exists() and not os.environ.get("EGATE_MODEL_DIR"),
        reason="face models not provisioned: run `egate models build` (make setup does)",
    ),
]


def egate(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    return result.returncode, result.stdout, result.stderr


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    work = tmp_path_factory.mktemp("paths")
    ops = prepare_ops(work / "ops", scope=f"{SITE}:{GATE}")
    lane = LaneRig(work / "lane", ops=ops, plan=None)
    lane.start()
    try:
        yield lane
    finally:
        lane.close()
    assert lane.daemon_exit_code == 0, lane.log_tail()


def selftest(rig: LaneRig) -> tuple[int, dict[str, dict[str, str]], str]:
    code, out, err = egate("diag", "selftest", "--config", str(rig.config_path), "--json")
    data = json.loads(out)
    return code, {c["name"]: c for c in data["checks"]}, out + err


def broker_args(rig: LaneRig) -> list[str]:
    return ["--host", rig.broker.host, "--port", str(rig.broker.port)]


# ------------------------------------------------------------------------------------------ technician


def test_technician_healthy_then_maintenance_then_a_broken_camera(rig: LaneRig) -> None:
    code, checks, out = selftest(rig)
    assert code == 0, out
    assert checks["lane"]["verdict"] == "PASS" and checks["gallery"]["verdict"] == "PASS"
    assert checks["turnstile"]["verdict"] == "PASS" and "daemon" not in checks

    assert egate("diag", "maintenance", "on", "--config", str(rig.config_path))[0] == 0
    try:
        code, checks, out = selftest(rig)
        assert code == 1 and checks["lane"]["verdict"] == "FAIL", out
        assert "maintenance off" in checks["lane"]["hint"]
    finally:
        assert egate("diag", "maintenance", "off", "--config", str(rig.config_path))[0] == 0
    rig.wait_status(lambda s: s["in_service"], 20, "the lane back in service")

    rig.remove_camera_source()
    try:
        rig.wait_status(lambda s: not s["in_service"], 30, "the lane out of service without its camera")
        code, checks, out = selftest(rig)
        assert code == 1, out
        assert checks["lane"]["verdict"] == "FAIL" and "camera" in checks["lane"]["detail"]
        assert checks["camera"]["verdict"] == "FAIL" and checks["camera"]["hint"]
    finally:
        rig.restore_camera_source()
    rig.wait_status(lambda s: s["in_service"], 30, "the lane back in service with its camera")


# ------------------------------------------------------------------------------------------ ops engineer


def test_ops_engineer_keys_bad_photos_wrong_gate_and_a_command(rig: LaneRig, tmp_path: Path) -> None:
    assert rig.ops is not None
    # A second key installed on the running gate: the tool says the daemon does not see it yet.
    code, out, err = egate("ops", "keys", "new", "--out", str(tmp_path / "keys"), "--json")
    assert code == 0, err
    new_key = last_json(out)
    trust = rig.state_dir / "trust"
    code, out, err = egate(
        "ops", "keys", "install", new_key["public_key"], "--trust-dir", str(trust), "--config", str(rig.config_path)
    )
    assert code == 0 and "does not trust" in err and "systemctl restart egate" in err, out + err

    # A gallery from photos where one subject has only a corrupt JPEG: listed, refused, exit 1.
    photos = tmp_path / "photos"
    shutil.copytree(rig.workdir.parent / "ops" / "enrolment-photos", photos)
    (photos / "subject-bad").mkdir()
    import cv2

    good = cv2.imread(str(next((photos / "subject-0001").iterdir())))
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    (photos / "subject-bad" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # a copy cut short
    args = [
        "ops", "gallery", "build", "--photos", str(photos), "--out", str(tmp_path / "g.egb"), "--ids-as-given",
        "--signing-key", str(rig.ops.key), "--scope", f"{SITE}:{GATE}", "--json",
    ]  # fmt: skip
    code, out, err = egate(*args)
    assert code == 1 and not (tmp_path / "g.egb").exists()
    assert "corrupt JPEG" in err and "subject-bad" in last_json(out)["dropped"]

    # A push to a gate id that does not exist: at once, naming the gates the broker knows.
    args = ["ops", "push", str(rig.ops.gallery), "--gate", "demo-gate-99", "--site", SITE, "--json"]
    code, out, _ = egate(*args, *broker_args(rig), timeout=60)
    result = last_json(out)
    assert code == 2 and result["error"].startswith(f"unknown gate {SITE}/demo-gate-99") and GATE in result["hint"]

    # A signed command: the mode is checked before signing, then the gate obeys and says so.
    base = ["ops", "cmd", "set-mode", "--gate", GATE, "--site", SITE, "--signing-key", str(rig.ops.key), "--json"]
    code, out, _ = egate(*base, "--mode", "banana", *broker_args(rig))
    assert code == 2 and "'banana' is not a mode" in last_json(out)["error"]
    code, out, err = egate(*base, "--mode", "maintenance", *broker_args(rig), timeout=60)
    assert code == 0 and last_json(out)["ack"]["status"] == "done", out + err
    rig.wait_status(lambda s: s["maintenance"], 10, "maintenance by the ops command")
    code, out, err = egate(*base, "--mode", "open", *broker_args(rig), timeout=60)
    assert code == 0, out + err
    rig.wait_status(lambda s: s["in_service"], 20, "the lane back in service")

    # Purged by ops: the technician's selftest now fails on the gallery, naming the push that fixes it.
    version = int(rig.status()["gallery"]["version"])
    purge = ["ops", "cmd", "purge-gallery", "--gate", GATE, "--site", SITE, "--signing-key", str(rig.ops.key)]
    code, out, err = egate(*purge, "--json", *broker_args(rig), timeout=60)
    assert code == 0, out + err
    rig.wait_status(lambda s: s["gallery"]["version"] is None, 10, "the gallery purged")
    code, checks, out = selftest(rig)
    assert code == 1 and checks["gallery"]["verdict"] == "FAIL", out
    assert "GALLERY_UNAVAILABLE" in checks["gallery"]["detail"] and "egate ops push" in checks["gallery"]["hint"]
    fresh = tmp_path / "fresh.egb"  # a gate refuses an older or equal version (rollback guard)
    args = [
        "ops", "gallery", "build", "--photos", str(rig.workdir.parent / "ops" / "enrolment-photos"),
        "--out", str(fresh), "--signing-key", str(rig.ops.key), "--scope", f"{SITE}:{GATE}",
        "--version", str(version + 1), "--ids-as-given", "--json",
    ]  # fmt: skip
    assert egate(*args)[0] == 0
    rig.push_gallery(fresh)
    code, checks, out = selftest(rig)
    assert code == 0 and checks["gallery"]["verdict"] == "PASS", out


# ------------------------------------------------------------------------------------------ integrator


def test_integrator_empty_and_wrong_configs(rig: LaneRig, tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    code, out, err = egate("config", "check", str(empty))
    assert code == 2 and "gate.site_id: required" in err and "gate.gate_id: required" in err

    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        '[gate]\nsite_id = "demo site"\ngate_id = "g1"\n[link]\nport = "8883"\n'
        'cert_credential = "none"\n[camera]\nkind = "file"\nlocation = "/nonexistent/clip.gif"\n'
    )
    code, out, err = egate("config", "check", str(wrong), "--json")
    errors = {e["key"]: e for e in json.loads(out)["errors"]}
    assert code == 2 and set(errors) == {"gate.site_id", "link.port"}
    assert "without quotes" in errors["link.port"]["message"] and errors["link.port"]["line"] == 5
    assert "letters, digits" in errors["gate.site_id"]["message"] and "^" not in errors["gate.site_id"]["message"]

    # Fixed fields, a missing clip: now the path check speaks (cross-field rule in words too).
    wrong.write_text(
        '[gate]\nsite_id = "demo-site"\ngate_id = "g1"\n[link]\nport = 8883\ncert_credential = "none"\n'
        '[camera]\nkind = "file"\nlocation = "/nonexistent/clip.gif"\n'
    )
    code, out, err = egate("config", "check", str(wrong))
    assert code == 2 and "key_credential go together" in err and "Value error" not in err
    wrong.write_text(
        '[gate]\nsite_id = "demo-site"\ngate_id = "g1"\n[turnstile.io]\nbuzzer_output = "none"\n'
        '[camera]\nkind = "file"\nlocation = "/nonexistent/clip.gif"\n'
    )
    code, out, err = egate("config", "check", str(wrong))
    assert code == 2 and "error:" in err and "camera.location" in err and "/nonexistent/clip.gif" in err

    code, out, err = egate("config", "check", str(rig.config_path))
    assert code == 0 and f"site {SITE}, gate {GATE}" in out, err
