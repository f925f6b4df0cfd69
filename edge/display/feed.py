"""The daemon's side of the traveller's screen: a write-only UNIX socket streaming the lane's view.

The daemon only writes: it shuts the read side of every connection and never parses a byte from a
client, so the display process (and the kiosk page behind it) cannot send anything that reaches the
gate. One thread serves every client without blocking the lane loop: `update()` (called on the lane
loop's thread after each handled event) only compares and enqueues. A client that stops reading is
dropped once its backlog passes a bound; on (re)connect a client gets the current view at once, then
every change and a heartbeat (with the supervisor's view) every `heartbeat_s`.

The socket is bound under a temporary name, given its mode and group, then renamed into place, so it
is never reachable with looser permissions (as the control socket).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from egate.edge.display.model import (
    DeviceView,
    HeartbeatMessage,
    LaneMessage,
    LaneView,
    ReferralView,
    SupervisorView,
)
from egate.edge.service.daemon import Health, StartError
from egate.edge.service.unix_socket import group_id, is_live, listen_unix

if TYPE_CHECKING:
    from egate.edge.lane.view import RunningLane

log = structlog.get_logger(__name__)

MAX_CLIENTS = 8
MAX_BACKLOG_BYTES = 256 * 1024  # a client this far behind is not reading: drop it, it reconnects
RECENT_REFERRALS = 10


class DisplayFeed:
    """Daemon component: serves `LaneView` changes and heartbeats to display processes."""

    name = "display"

    def __init__(
        self,
        socket_path: Path,
        group: str | None,
        supervisor: Callable[[], SupervisorView],
        *,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.group = group or None
        self._supervisor = supervisor
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._view: LaneView | None = None
        self._pending: list[bytes] = []
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._clients: dict[socket.socket, bytearray] = {}
        self.published = 0

    # ---- from the lane loop --------------------------------------------------------------------

    def update(
        self,
        *,
        at: float,
        state: str,
        mode: str,
        guidance: str | None,
        maintenance: bool,
        alarm: str | None,
        language: str | None,
    ) -> LaneView | None:
        """Publish a new view when anything the screen shows changed; returns it (None: unchanged)."""
        with self._lock:
            last = self._view
            fields = (state, mode, guidance, maintenance, alarm, language)
            if last is not None and fields == (
                last.state,
                last.mode,
                last.guidance,
                last.maintenance,
                last.alarm,
                last.language,
            ):
                return None
            view = LaneView(
                seq=0 if last is None else last.seq + 1,
                at=at,
                state=state,
                mode=mode,
                guidance=guidance,
                maintenance=maintenance,
                alarm=alarm,
                language=language,
            )
            self._view = view
            self._pending.append(_line(LaneMessage(lane=view)))
            self.published += 1
        self._wake()
        return view

    @property
    def view(self) -> LaneView | None:
        return self._view

    # ---- component -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("DisplayFeed.start() called twice")
        try:
            gid = group_id(self.group)
        except KeyError:
            raise StartError(
                f"display: display.feed_group {self.group!r} does not exist: create it (groupadd --system "
                f'{self.group}) and add the display\'s user, or set display.feed_group = ""'
            ) from None
        try:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if self.socket_path.is_socket() or self.socket_path.exists():
                self._replace_stale()
            listener = listen_unix(self.socket_path, gid, MAX_CLIENTS)
        except PermissionError as exc:
            raise StartError(
                f"display: cannot create the feed socket {self.socket_path} ({exc.strerror}); the daemon's user must "
                f"be in group {self.group!r} (SupplementaryGroups=) and own the folder, or set display.feed_socket"
            ) from None
        except OSError as exc:
            raise StartError(
                f"display: cannot create the feed socket {self.socket_path} ({exc.strerror}): set display.feed_socket "
                "to a writable place (systemd RuntimeDirectory=egate) or display.enabled = false"
            ) from None
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="display-feed", daemon=True)
        self._thread.start()
        log.info("display_feed_listening", socket=str(self.socket_path), group=self.group or "-")

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for conn in list(self._clients):
            conn.close()
        self._clients.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def health(self) -> Health:
        if self._thread is None or not self._thread.is_alive():
            # Not stuck: the gate works without its screen; restarting the lane for it would not help.
            return Health(False, "display feed thread not running: restart egate for the traveller's screen")
        return Health(True, f"{len(self._clients)} display client(s); {self.published} views published")

    # ---- set-up helpers ------------------------------------------------------------------------

    def _replace_stale(self) -> None:
        if is_live(self.socket_path):
            raise StartError(
                f"display: another egate daemon already serves {self.socket_path}: stop it or set display.feed_socket"
            )
        self.socket_path.unlink()  # left by a killed daemon

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # ---- the feed thread -----------------------------------------------------------------------

    def _run(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        next_beat = time.monotonic()
        try:
            while not self._stop.is_set():
                # Clients are written without the selector: a backlog is retried every 50 ms.
                wait = max(0.0, next_beat - time.monotonic())
                for key, _ in sel.select(min(wait, 0.05) if self._backlogged() else wait):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                with self._lock:
                    pending, self._pending = self._pending, []
                for line in pending:
                    self._queue_all(line)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self._heartbeat_s
                    self._queue_all(self._heartbeat())
                self._flush()
        except Exception:
            log.exception("display_feed_failed")
        finally:
            sel.close()

    def _heartbeat(self) -> bytes:
        try:
            supervisor = self._supervisor()
        except Exception as exc:  # the screen's heartbeat must not stop for a supervisor detail
            log.warning("display_supervisor_view_failed", error=repr(exc))
            supervisor = SupervisorView(gate_id="?", in_service=False, out_of_service_reasons=["status unavailable"])
        return _line(HeartbeatMessage(at=time.time(), supervisor=supervisor))

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._clients) >= MAX_CLIENTS:
            conn.close()
            return
        # Write-only: whatever a client sends is never read.
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RD)
        conn.setblocking(False)
        first = bytearray()
        with self._lock:
            if self._view is not None:
                first += _line(LaneMessage(lane=self._view))
        first += self._heartbeat()
        self._clients[conn] = first
        log.info("display_client_connected", clients=len(self._clients))

    def _queue_all(self, line: bytes) -> None:
        for buf in self._clients.values():
            buf += line

    def _flush(self) -> None:
        for conn, buf in list(self._clients.items()):
            try:
                while buf:
                    sent = conn.send(buf)
                    del buf[:sent]
            except BlockingIOError:
                pass
            except OSError:
                self._drop(conn, "gone")
                continue
            if len(buf) > MAX_BACKLOG_BYTES:
                self._drop(conn, "not reading")

    def _backlogged(self) -> bool:
        return any(self._clients.values())

    def _drop(self, conn: socket.socket, why: str) -> None:
        self._clients.pop(conn, None)
        conn.close()
        log.info("display_client_dropped", why=why, clients=len(self._clients))


def _line(message: LaneMessage | HeartbeatMessage) -> bytes:
    return message.model_dump_json().encode() + b"\n"


def supervisor_view(lane: RunningLane) -> SupervisorView:
    """The officer's view: states, devices and recent referral reasons; nothing personal."""
    st = lane.status()
    devices = {name: DeviceView(ok=d.ok, detail=d.detail[:300]) for name, d in lane.device_summary().items()}
    records = list(lane.recent_outcomes)
    referrals = [
        ReferralView(at=r.ended_at.isoformat(), mode=r.mode.value, reasons=[x.value for x in r.reasons])
        for r in records
        if r.decision.value == "refer"
    ][:RECENT_REFERRALS]
    return SupervisorView(
        gate_id=st.gate_id,
        in_service=st.in_service,
        out_of_service_reasons=list(st.out_of_service_reasons),
        devices=devices,
        referrals=referrals,
        outcomes_total=len(records),
        accepted_total=sum(1 for r in records if r.decision.value == "accept"),
    )
