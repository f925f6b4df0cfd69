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
        # verify exits 1 when ExecStart's binary is missing; point a copy at /bin/true.
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/bin/egate", "/bin/true"))
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
