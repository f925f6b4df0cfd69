"""systemd units: `systemd-analyze verify` is clean, and the daemon unit keeps its hardening."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "systemd").glob("egate*"))


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing: make setup installs systemd"
)
def test_units_verify_cleanly(tmp_path: Path) -> None:
    assert UNITS
    for unit in UNITS:
        # verify exits 1 when ExecStart's binary is missing; point a copy at /bin/true (cage: the kiosk compositor).
        text = unit.read_text().replace("/usr/bin/egate", "/bin/true").replace("/usr/bin/cage", "/bin/true")
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / u.name) for u in UNITS]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    # verify exits 0 on unknown keys and bad values and only warns on stderr: stderr must be empty.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_daemon_unit_has_the_required_settings() -> None:
    text = (ROOT / "systemd" / "egate.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=egate",
        "User=egate",
        "StartLimitBurst=5",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=/dev/nvhost-ctrl-gpu rw",
        "LoadCredentialEncrypted=gallery.key:",
        "LoadCredentialEncrypted=turnstile.scbk:",
    ):
        assert line in text, line
    assert "WatchdogSec=" in text and "TimeoutStopSec=5s" in text


def test_kiosk_units_show_the_loopback_page_full_screen_without_authority() -> None:
    kiosk = (ROOT / "systemd" / "egate-display.service").read_text()
    for part in ("/usr/bin/cage", "/usr/bin/chromium --kiosk", "http://127.0.0.1:8765/", "Restart=always"):
        assert part in kiosk, part
    server = (ROOT / "systemd" / "egate-display-server.service").read_text()
    for line in (
        "ExecStart=/usr/bin/egate display serve",
        "User=egate-display",
        "NoNewPrivileges=yes",
        "PrivateDevices=yes",
    ):
        assert line in server, line
    # The display's user is not the daemon's: it cannot reach the control socket's group or the devices.
    assert "egate-tech" not in server and "dialout" not in server
