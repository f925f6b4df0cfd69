"""A real `egate run` for tests: the daemon as a subprocess against real parts that each test may break.

`GateDaemon` writes a config and a credentials folder, starts the daemon and waits (on the control
socket, with a deadline) until it answers. The turnstile is a libosdp simulator on a PTY in the test
process, the broker a real mosquitto; a test leaves either out, or gives a wrong key, to break them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egate.edge.service.control_socket import ControlClient, ControlError
from egate.engines.models import default_model_dir
from egate.tools.paths import DEMO_MEDIA
from egate.tools.rig.local_broker import Mosquitto
from egate.tools.sim.osdp_gate import TurnstileSimulator

ROOT = Path(__file__).resolve().parents[2]

FEMALE_GIF = DEMO_MEDIA / "head-pose-face-detection-female.gif"
START_DEADLINE_S = 60.0


def lab_quality() -> str:
    """The demo clips are 480x270: faces are ~30 px between the eyes, below a kiosk camera's gate."""
    return "[engine.quality]\nmin_eye_distance_px = 12.0\n"


class GateDaemon:
    def __init__(
        self,
        workdir: Path,
        *,
        broker: Mosquitto | None = None,
        sim: TurnstileSimulator | None = None,
        scbk: bytes | None = None,
        camera: Path | None = FEMALE_GIF,
        site: str = "site-t",
        gate: str = "gate-t1",
        extra: str = "",
        gallery_key: bytes | None = None,
        turnstile: str | None = None,
    ) -> None:
        """`turnstile`: the whole `[turnstile]` table's body to use instead of OSDP on `sim` (another driver)."""
        self.workdir = workdir
        self.state = workdir / "state"
        self.creds = workdir / "creds"
        self.creds.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "c.sock"
        self.scbk = (
            scbk if scbk is not None else (sim.scbk if sim is not None and sim.scbk else secrets.token_bytes(16))
        )
        (self.creds / "gallery.key").write_text((gallery_key or secrets.token_bytes(32)).hex())
        (self.creds / "turnstile.scbk").write_text(self.scbk.hex())
        turnstile_url = sim.path if sim is not None else str(workdir / "no-such-serial-port")
        camera_cfg = (
            f'[camera]\nkind = "file"\nlocation = "{camera}"\nloop = true\n'
            if camera is not None
            else f'[camera]\nkind = "file"\nlocation = "{workdir / "no-such-clip.gif"}"\nloop = true\n'
        )
        link_cfg = (
            f'[link]\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\nreconnect_min_s = 0.1\n'
            "reconnect_max_s = 1.0\n"
            if broker is not None
            else f'[link]\nhost = "127.0.0.1"\nport = {_closed_port()}\ntls = false\nreconnect_max_s = 1.0\n'
        )
        self.config = workdir / "egate.toml"
        self.config.write_text(
            "schema_version = 1\n"
            f'[gate]\nsite_id = "{site}"\ngate_id = "{gate}"\n'
            f'[state]\nstate_dir = "{self.state}"\nmodel_dir = "{default_model_dir()}"\n'
            f'[control]\nsocket_path = "{self.socket}"\nsocket_group = ""\n'
            '[logging]\nformat = "json"\n'
            + (
                f"[turnstile]\n{turnstile}\n"
                if turnstile is not None
                else f'[turnstile]\nurl = "{turnstile_url}"\nreconnect_max_s = 1.0\n'
            )
            + camera_cfg
            + link_cfg
            + lab_quality()
            + extra
        )
        self.env = {**os.environ, "CREDENTIALS_DIRECTORY": str(self.creds), "PYTHONPATH": str(ROOT)}
        self.log_path = workdir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GateDaemon:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "egate.tools.cli", "run", "--config", str(self.config)],
            env=self.env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        try:
            self.wait(lambda c: c.ping().get("pong") is True, START_DEADLINE_S, "the control socket to answer")
        except BaseException:
            # A daemon that never answered must not outlive the test that started it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    @property
    def client(self) -> ControlClient:
        return ControlClient(self.socket)

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        return self.client.call(cmd, **args)

    def wait(self, predicate: Callable[[ControlClient], bool], timeout: float, what: str) -> None:
        """Poll the daemon until `predicate(client)` holds; fail with the log tail at the deadline."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if predicate(self.client):
                    return
            except ControlError as exc:
                last = exc
            time.sleep(0.1)  # polling interval of a condition with a deadline, not a synchronisation
        raise AssertionError(f"timed out waiting for {what} (last: {last})\n{self.log_tail()}")

    def wait_status(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        self.wait(lambda c: predicate(c.call("status")), timeout, what)
        return self.call("status")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _closed_port() -> int:
    """A loopback port with nothing listening (the broker is down)."""
    from egate.tools.rig.local_broker import free_port

    return free_port()
