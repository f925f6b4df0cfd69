"""Lifecycle: systemd notifications from a real `egate run`, watchdog from health, clean and fatal stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from egate.edge.service.daemon import Daemon, Health
from egate.edge.service.sdnotify import Notifier
from egate.engines.models import default_model_dir
from egate.tools.paths import DEMO_MEDIA

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    """Stands in for systemd: a datagram socket collecting sd_notify messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(field in m.split("\n") for m in self.messages):
                return True
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return any(field in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self.sock.close()


DEMO_GIF = DEMO_MEDIA / "head-pose-face-detection-female.gif"


def _config(tmp_path: Path, state_dir: str) -> Path:
    """A whole lane whose turnstile port does not exist: the daemon must still start (gate safe, lane out
    of service) and stop on time."""
    creds = tmp_path / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "gallery.key").write_text(os.urandom(32).hex())
    (creds / "turnstile.scbk").write_text(os.urandom(16).hex())
    cfg = tmp_path / "egate.toml"
    cfg.write_text(
        'schema_version = 1\n[gate]\nsite_id = "site-t"\ngate_id = "gate-t1"\n'
        f'[state]\nstate_dir = "{state_dir}"\nmodel_dir = "{default_model_dir()}"\n'
        '[logging]\nformat = "json"\n'
        "[health]\ncheck_interval_s = 0.1\n"
        f'[control]\nsocket_path = "{tmp_path / "c.sock"}"\nsocket_group = ""\n'
        f'[camera]\nkind = "file"\nlocation = "{DEMO_GIF}"\nloop = true\n'
        f'[turnstile]\nurl = "{tmp_path / "no-such-port"}"\n'
        "[link]\nenabled = false\n"
    )
    return cfg


def _start(tmp_path: Path, cfg: Path, notify: NotifySocket) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "200000",
        "PYTHONPATH": str(ROOT),
        "CREDENTIALS_DIRECTORY": str(tmp_path / "creds"),
    }
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "egate.tools.cli", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_ready_watchdog_stopping_and_exit_within_5s(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = _start(tmp_path, _config(tmp_path, str(tmp_path / "state")), notify)
    try:
        assert notify.wait_for("READY=1"), notify.messages
        assert notify.wait_for("WATCHDOG=1"), notify.messages
        proc.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING=1"), notify.messages
        assert proc.wait(timeout=5) == 0  # systemd's TimeoutStopSec=5s is the contract
    finally:
        proc.kill()
        notify.close()
    out = proc.stdout.read() if proc.stdout else ""
    assert '"event": "daemon_ready"' in out
    assert '"gate_id": "gate-t1"' in out


@pytest.mark.slow
def test_fatal_start_error_exits_nonzero_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = _start(tmp_path, _config(tmp_path, str(blocker / "state")), notify)
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        proc.kill()
        notify.close()
    out = proc.stdout.read() if proc.stdout else ""
    assert "daemon_start_failed" in out
    assert "state.state_dir" in out
    assert not any("READY=1" in m for m in notify.messages)


class _Probe:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health_value = Health(True, "fine")
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def close(self) -> None:
        self.events.append("close")

    def health(self) -> Health:
        return self.health_value


@pytest.mark.slow
def test_watchdog_is_withheld_while_a_component_is_stuck(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "n.sock")
    first, second = _Probe("first"), _Probe("second")
    second.health_value = Health(False, "inference worker heartbeat 12 s old", stuck=True)
    daemon = Daemon([first, second], check_interval_s=0.05, notifier=Notifier(str(notify.path)))
    rounds = 0

    def until() -> bool:
        nonlocal rounds
        rounds += 1
        return rounds >= 3

    assert daemon.run(until=until) == 0
    notify.sock.settimeout(0.2)
    while True:
        try:
            notify.messages.append(notify.sock.recv(4096).decode())
        except TimeoutError:
            break
    notify.close()
    assert any("READY=1" in m for m in notify.messages)
    assert not any("WATCHDOG=1" in m for m in notify.messages)
    # started in order, closed in reverse
    assert first.events == ["start", "close"] and second.events == ["start", "close"]
    assert daemon.last_health["second"].stuck


def test_stop_request_from_another_thread_ends_run() -> None:
    probe = _Probe("only")
    daemon = Daemon([probe], check_interval_s=10, notifier=Notifier(""))
    stopper = threading.Timer(0.05, daemon.request_stop)
    stopper.start()
    assert daemon.run() == 0
    assert probe.events == ["start", "close"]
