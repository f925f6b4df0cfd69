"""A local mosquitto on a free loopback port in a folder of its own: tests and `egate bench link` use it.

Optional TLS and passwords, restartable on the same port (outage tests). tests/support/broker.py re-exports it
for the test suite; see there for usage.

Facts this relies on (mosquitto 2.0 as Debian 12 ships it): it accepts connections ~20 ms after start;
started as root it drops to the `mosquitto` user unless the config says `user root`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from egate.tools.rig.local_service import LocalService, terminate_with_parent

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    ca: Path
    cert: Path
    key: Path
    require_client_cert: bool = True


class Mosquitto(LocalService):
    """One mosquitto process bound to 127.0.0.1:<port>; the port stays the same across restarts."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: BrokerTls | None = None,
        users: dict[str, str] | None = None,
        max_packet_size: int | None = None,
        extra_config: str = "",
        dies_with_parent: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        # For a command-line tool's broker (the demo): gone when the tool is, even killed outright. Not for
        # tests, which start brokers from threads that end before the broker should.
        self.dies_with_parent = dies_with_parent
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.users = users
        self._proc: subprocess.Popen[bytes] | None = None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._write_config(max_packet_size, extra_config)

    def _write_config(self, max_packet_size: int | None, extra: str) -> None:
        lines = []
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, which cannot write our 0700 temp dir
        lines += [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Room for test bursts (1,000+ outcomes) queued for an offline persistent subscriber.
            "max_queued_messages 100000",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                f"require_certificate {'true' if self.tls.require_client_cert else 'false'}",
            ]
        if self.users is not None:
            pw = self.workdir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if max_packet_size is not None:
            lines.append(f"max_packet_size {max_packet_size}")
        if extra:
            lines.append(extra)
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=terminate_with_parent if self.dies_with_parent else None,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err} {log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                # Something answers on the port; make sure it is this mosquitto. Another process may have
                # taken the port between free_port() and our bind (mosquitto then logs "Address already in
                # use" and exits): "running" in our own log is written only after every listener opened.
                if self._proc.poll() is None and self._says_running():
                    return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"mosquitto on port {self.port} did not report running: {self.log_text()[-2000:]}"
                    )
                time.sleep(0.01)
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s"
                    ) from None
                time.sleep(0.01)

    def _says_running(self) -> bool:
        """Our own log's last start says "running" (restarts append to the same log)."""
        text = self.log_text()
        start = text.rfind(" starting")
        return "running" in text[start:] if start >= 0 else False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto writes its persistence (retained messages) and exits."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
