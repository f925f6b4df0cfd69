"""Start and stop a private `pcscd` for tests and the bench (there is no systemd here).

Only one pcscd can run per machine (it owns /run/pcscd). We record the pid of the one we start in
`PID_FILE`; a pcscd left behind by an earlier crashed run of ours is stopped and replaced, while a
pcscd someone else started is used as it is and left running. pcscd runs without `-a` so APDUs
(which carry personal data once decrypted by nobody, but MRZ-derived challenges all the same) are
never logged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

PID_FILE = Path(os.environ.get("EGATE_PCSCD_PIDFILE", "/tmp/egate-test-pcscd.pid"))
PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
PCSCD_PIDFILE = Path("/run/pcscd/pcscd.pid")


class PcscdError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": a zombie (Z) has exited already.
    name = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat[stat.rfind(")") + 2 :].split(" ", 1)[0]
    return name == "pcscd" and state != "Z"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _socket_answers() -> bool:
    if not PCSCD_SOCKET.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(PCSCD_SOCKET))
            return True
        except OSError:
            return False


def _wait(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise PcscdError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling a daemon's socket: there is no event to wait on


def _stop_pid(pid: int) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        _wait(lambda: not _alive(pid), 10.0, f"pcscd {pid} to stop")
    except PcscdError:
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not _alive(pid), 5.0, f"pcscd {pid} to die")


VPCD_PORTS = {35963, 35964}  # /etc/reader.conf.d/vpcd: "Virtual PCD 00 00" and "Virtual PCD 00 01"


def _time_wait_on(ports: set[int]) -> bool:
    """A TIME_WAIT socket on a vpcd port keeps vpcd (no SO_REUSEADDR) from listening for ~60 s."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if fields[3] == "06" and int(fields[1].split(":")[1], 16) in ports:
            return True
    return False


class Pcscd:
    """`with Pcscd() as p:` gives a running pcscd with vpcd's two virtual readers (the packaged
    /etc/reader.conf.d/vpcd; a second vpcd entry in one pcscd makes the readers talk over each other)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.adopted = False

    def start(self, timeout_s: float = 15.0) -> None:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> None:
        if PID_FILE.exists():
            try:
                old, owner = (int(x) for x in PID_FILE.read_text().split())
            except ValueError:
                old, owner = 0, 0
            if owner and _process_exists(owner):
                self.adopted = True  # a live test session or bench owns it: share, never stop it
            else:
                if old and _alive(old):
                    _stop_pid(old)  # ours, left by a run that crashed before stopping it
                PID_FILE.unlink(missing_ok=True)
        if self.adopted or _socket_answers():
            self.adopted = True  # someone else's pcscd: use it, never stop it
        else:
            if os.geteuid() != 0:
                raise PcscdError("starting pcscd needs root (it writes /run/pcscd)")
            if PCSCD_PIDFILE.exists():
                try:
                    stale = int(PCSCD_PIDFILE.read_text().strip() or "0")
                except ValueError:
                    stale = 0
                if not stale or not _alive(stale):
                    PCSCD_PIDFILE.unlink(missing_ok=True)
                    PCSCD_SOCKET.unlink(missing_ok=True)
            _wait(lambda: not _time_wait_on(VPCD_PORTS), 75.0, "vpcd's ports to leave TCP TIME_WAIT")
            self._proc = subprocess.Popen(
                ["/usr/sbin/pcscd", "-f"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            PID_FILE.write_text(f"{self._proc.pid} {os.getpid()}")
            _wait(lambda: _socket_answers() or self._proc.poll() is not None, timeout_s, "pcscd's socket")  # type: ignore[union-attr]
            if self._proc.poll() is not None:
                raise PcscdError(f"pcscd exited with {self._proc.returncode} at start")
        _wait(self._vpcd_reader_present, timeout_s, "vpcd's 'Virtual PCD' reader")

    @staticmethod
    def _vpcd_reader_present() -> bool:
        from smartcard.System import readers

        try:
            return any("Virtual PCD" in str(r) for r in readers())
        except Exception:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            _stop_pid(self._proc.pid)
            self._proc.wait(timeout=5)
            self._proc = None
            PID_FILE.unlink(missing_ok=True)

    def restart(self) -> None:
        """A fresh daemon (readers and their drivers re-initialised); an adopted one is left alone."""
        if self.adopted:
            return
        self.stop()
        self.start()

    def __enter__(self) -> Pcscd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
