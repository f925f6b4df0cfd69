"""systemd units: `systemd-analyze verify` is clean, and the daemon unit keeps its hardening."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("egate*"))


# Where the units expect the install (README "Configuring a real kiosk": a venv at /opt/egate).
INSTALL_PREFIX = Path("/opt/egate")


def exec_binaries(text: str) -> set[str]:
    return {line.split("=", 1)[1].split()[0] for line in text.splitlines() if line.startswith("ExecStart=")}


def test_units_start_the_console_script_where_the_documented_install_puts_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"python3 -m venv {INSTALL_PREFIX}" in readme and f"{INSTALL_PREFIX}/bin/pip install" in readme
    # pip writes a venv's console scripts to <prefix>/bin/<name> ([project.scripts] egate = ...).
    installed = Path(sys.prefix) / "bin" / "egate"
    assert installed.is_file() and os.access(installed, os.X_OK), f"no console script at {installed}"
    for unit in UNITS:
        for binary in exec_binaries(unit.read_text()):
            if Path(binary).name == "egate":  # the kiosk unit starts the compositor, not egate
                assert binary == str(INSTALL_PREFIX / "bin" / "egate"), (unit.name, binary)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing: make setup installs systemd"
)
def test_units_verify_cleanly_with_the_real_installed_console_script(tmp_path: Path) -> None:
    assert UNITS
    # The same units, with the install prefix pointing at this installation's real console script
    # (systemd-analyze has no root option for ExecStart: the path itself is what differs).
    installed = Path(sys.prefix) / "bin" / "egate"
    names = []
    for unit in UNITS:
        if unit.suffix not in (".service", ".timer"):
            continue
        (tmp_path / unit.name).write_text(
            # The kiosk unit's compositor is not installed here; /bin/true stands in for it.
            unit.read_text()
            .replace(str(INSTALL_PREFIX / "bin" / "egate"), str(installed))
            .replace("/usr/bin/cage", "/bin/true")
        )
        names.append(str(tmp_path / unit.name))
    result = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True, cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values and only warns on stderr: stderr must be empty.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_credentials_match_the_readme_and_optional_ones_are_optional() -> None:
    text = (ROOT / "systemd" / "egate.service").read_text()
    loaded = {line.split("=", 1)[1].split(":")[0] for line in text.splitlines() if line.startswith("LoadCredential")}
    # What the default config needs in exit mode with TLS, as plain files (README: encrypted only with a TPM).
    assert loaded == {"gallery.key", "turnstile.scbk", "mqtt-ca.pem", "mqtt-client.pem", "mqtt-client.key"}
    assert "LoadCredentialEncrypted=" not in "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    drop_in = (ROOT / "systemd" / "egate-credentials.conf.example").read_text()
    assert "subject-id.key" in drop_in and "mqtt-password" in drop_in
    readme = (ROOT / "README.md").read_text()
    for name in loaded | {"subject-id.key"}:
        assert name in readme, name


def test_model_service_waits_for_the_network() -> None:
    text = (ROOT / "systemd" / "egate-models.service").read_text()
    assert (
        "Wants=network-online.target" in text and "network-online.target" in text.split("After=", 1)[1].split("\n")[0]
    )


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
        "LoadCredential=gallery.key:",
        "LoadCredential=turnstile.scbk:",
    ):
        assert line in text, line
    assert "WatchdogSec=" in text and "TimeoutStopSec=5s" in text


def test_kiosk_units_show_the_loopback_page_full_screen_without_authority() -> None:
    kiosk = (ROOT / "systemd" / "egate-display.service").read_text()
    for part in ("/usr/bin/cage", "/usr/bin/chromium --kiosk", "http://127.0.0.1:8765/", "Restart=always"):
        assert part in kiosk, part
    server = (ROOT / "systemd" / "egate-display-server.service").read_text()
    for line in (
        "ExecStart=/opt/egate/bin/egate display serve",
        "User=egate-display",
        "NoNewPrivileges=yes",
        "PrivateDevices=yes",
    ):
        assert line in server, line
    # The display's user is not the daemon's: it cannot reach the control socket's group or the devices.
    assert "egate-tech" not in server and "dialout" not in server
