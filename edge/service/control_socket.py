"""Local control API on a UNIX socket: how `egate diag` talks to the running daemon.

One owner per device (docs/architecture.md): the daemon holds the camera, the reader and the gate's
serial port, so technician tools ask the daemon instead of opening them a second time. The protocol
is one JSON object per line each way (docs/control-api.md):

    request   {"v": 1, "cmd": "gate.status", "args": {}}
    response  {"v": 1, "ok": true, "result": {...}}
              {"v": 1, "ok": false, "error": "...", "hint": "..."}

Access control is the file system's: the socket is mode 0660 and owned by `control.socket_group`
(0600 when no group is set), so only root, the daemon's user and that group's technicians may connect.
The socket is bound under a temporary name, given its mode and group, then renamed into place, so it
is never reachable with looser permissions.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from egate.edge.service.daemon import Health, StartError
from egate.edge.service.unix_socket import SocketGroupDenied, group_id, is_live, listen_unix

log = structlog.get_logger(__name__)

PROTOCOL_VERSION: Literal[1] = 1
# One request or response line. A snapshot JPEG in base64 is the largest answer (a few hundred KiB);
# requests are small, so a long request line is a wrong peer, not a big command.
MAX_REQUEST_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Defaults of control.request_deadline_s / control.connection_deadline_s. A request line must be complete
# this long after the connection opened (or after the previous answer); the deadline is absolute, so a peer
# trickling one byte at a time cannot hold a slot past it. No connection lives longer than the second,
# whatever it sends: eight slow peers cannot lock technicians out for long.
REQUEST_DEADLINE_S = 10.0
CONNECTION_DEADLINE_S = 120.0
# Brackets a request may nest: arguments are flat values, so anything deep is hostile (and would cost
# the JSON parser its recursion limit).
MAX_REQUEST_DEPTH = 16
# Connections served at once; more wait in the listen backlog.
MAX_CONNECTIONS = 8
# Kernel limit for sun_path on Linux (108 bytes including the terminating NUL).
_MAX_SOCKET_PATH = 107

_CMD_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
# Built-in command answered by the server itself: lets a client learn the daemon's commands.
PING = "ping"

# A handler takes the request's arguments and returns its reply model (edge/lane/replies.py); the
# server puts `model_dump(mode="json")` of it on the wire as the response's `result`.
Handler = Callable[[dict[str, Any]], BaseModel]


# ------------------------------------------------------------------------------------------ wire models


class ControlRequest(BaseModel):
    """One request line."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = Field(PROTOCOL_VERSION, description="Control protocol version.")
    cmd: str = Field(pattern=_CMD_PATTERN, max_length=64, description="Command name, e.g. gate.status.")
    args: dict[str, Any] = Field(default_factory=dict, description="Command arguments.")


class ControlOk(BaseModel):
    """A successful response line."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = Field(PROTOCOL_VERSION, description="Control protocol version.")
    ok: Literal[True] = True
    result: dict[str, Any] = Field(default_factory=dict, description="The command's result.")


class ControlFailure(BaseModel):
    """A failed or refused command: what is wrong and what the technician should do next."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = Field(PROTOCOL_VERSION, description="Control protocol version.")
    ok: Literal[False] = False
    error: str = Field(min_length=1, description="What went wrong.")
    hint: str = Field("", description="The next step for the technician.")


ControlResponse = Annotated[ControlOk | ControlFailure, Field(discriminator="ok")]
_RESPONSE = TypeAdapter(ControlResponse)


class PingReply(BaseModel):
    """Result of `ping`, answered by the server itself: the protocol and every command it serves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION
    pong: Literal[True] = True
    protocol: Literal[1] = PROTOCOL_VERSION
    commands: list[str] = Field(description="Every command name this daemon answers, ping included.")


class DeviceCheck(BaseModel):
    """One device check in the `selftest.device` result (same fields as `egate diag selftest` rows)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Check name, e.g. camera, reader, turnstile, mqtt.")
    verdict: Literal["PASS", "WARN", "FAIL"]
    detail: str = Field("", description="What was measured.")
    hint: str = Field("", description="One-line fix; empty on PASS.")


class SelftestDeviceResult(BaseModel):
    """Result of `selftest.device`: the checks the daemon ran on the devices it owns."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = PROTOCOL_VERSION
    checks: list[DeviceCheck] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------ errors


class ControlRefused(Exception):
    """Raised by a handler to refuse a command; `error` and `hint` go to the technician unchanged."""

    def __init__(self, error: str, hint: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.hint = hint


class ControlError(RuntimeError):
    """The daemon answered with an error (or an answer we cannot use)."""

    def __init__(self, error: str, hint: str = "") -> None:
        super().__init__(f"{error} (hint: {hint})" if hint else error)
        self.error = error
        self.hint = hint


class ControlPermissionDenied(ControlError):
    """The socket exists but this user may not connect to it."""


class DaemonNotRunning(ControlError):
    """No daemon listens on the control socket (missing or stale socket)."""


def _socket_path_error(path: Path) -> str | None:
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        return (
            f"control.socket_path {path} is {len(os.fsencode(path))} bytes long; UNIX sockets allow "
            f"{_MAX_SOCKET_PATH}: choose a shorter path (default /run/egate/control.sock)"
        )
    return None


# ------------------------------------------------------------------------------------------ server


class ControlServer:
    """A daemon Component serving `handlers` on a UNIX socket, one thread per connection (bounded)."""

    name = "control"

    def __init__(
        self,
        socket_path: Path,
        group: str | None,
        handlers: Mapping[str, Handler],
        *,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        connection_deadline_s: float = CONNECTION_DEADLINE_S,
    ) -> None:
        self.socket_path = Path(socket_path)
        self._request_deadline_s = request_deadline_s
        self._connection_deadline_s = connection_deadline_s
        # The demo config writes `socket_group = ""`: an empty group means "owner only" like None.
        self.group = group or None
        self._handlers: dict[str, Handler] = dict(handlers)
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._inode: tuple[int, int] | None = None
        self._served = 0
        self._failures = 0

    # ---- registration -------------------------------------------------------------------------

    def add_handler(self, cmd: str, handler: Handler) -> None:
        """Register (or replace) a command before or after start; names follow `gate.status` style."""
        ControlRequest(cmd=cmd)  # validates the name
        self._handlers[cmd] = handler

    @property
    def commands(self) -> list[str]:
        return sorted([PING, *self._handlers])

    # ---- Component -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ControlServer.start() called twice: close() it first")
        problem = _socket_path_error(self.socket_path)
        if problem:
            raise StartError(f"control: {problem}")
        try:
            gid = group_id(self.group)
        except KeyError:
            raise StartError(
                f"control: control.socket_group {self.group!r} does not exist on this machine: create it "
                f"(groupadd --system {self.group}; usermod -aG {self.group} <technician>) or set "
                'control.socket_group = "" to keep the socket owner-only'
            ) from None
        self._claim_path()
        try:
            listener = listen_unix(self.socket_path, gid, 16)
        except SocketGroupDenied:
            raise StartError(
                f"control: cannot give {self.socket_path} to group {self.group!r}: the daemon's user "
                f"(uid {os.getuid()}) is not a member; add SupplementaryGroups={self.group} to "
                "egate.service or set control.socket_group to one of its groups"
            ) from None
        except OSError as exc:
            raise StartError(
                f"control: cannot create socket {self.socket_path} ({exc.strerror}): make its folder writable "
                "(systemd RuntimeDirectory=egate) or set control.socket_path"
            ) from None
        st = os.stat(self.socket_path)
        self._inode = (st.st_dev, st.st_ino)
        listener.setblocking(False)
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)
        self._thread.start()
        log.info(
            "control_listening",
            socket=str(self.socket_path),
            group=self.group or "-",
            mode=oct(stat.S_IMODE(st.st_mode)),
            commands=self.commands,
        )

    def close(self) -> None:
        self._stop.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        with self._conn_lock:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None
        # Remove the socket only if it is still ours (a second daemon may have replaced it).
        if self._inode is not None and self._path_inode() == self._inode:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._inode = None

    def health(self) -> Health:
        if self._thread is None or not self._thread.is_alive():
            # Not `stuck`: the lane works without the control API; restarting the gate for it would not help.
            return Health(False, "control socket thread not running: restart egate so `egate diag` works")
        if self._path_inode() != self._inode:
            return Health(
                False,
                f"control socket {self.socket_path} was removed or replaced: restart egate so `egate diag` works",
            )
        return Health(True, f"listening on {self.socket_path}; {self._served} requests served")

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- set-up helpers ------------------------------------------------------------------------

    def _claim_path(self) -> None:
        """Create the folder; refuse a live socket (another daemon), remove a stale one."""
        try:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise StartError(
                f"control: cannot create folder {self.socket_path.parent} ({exc.strerror}): set "
                "control.socket_path to a writable place or use systemd RuntimeDirectory=egate"
            ) from None
        try:
            st = os.lstat(self.socket_path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise StartError(
                f"control: {self.socket_path} exists and is not a socket: remove it or set control.socket_path"
            )
        if not is_live(self.socket_path):
            # Nobody listens: left behind by a daemon that was killed. Safe to replace.
            self.socket_path.unlink()
            log.info("control_stale_socket_removed", socket=str(self.socket_path))
            return
        raise StartError(
            f"control: another egate daemon already listens on {self.socket_path}: stop it first "
            "(systemctl stop egate) or give this one another control.socket_path"
        )

    def _path_inode(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.socket_path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    # ---- serving -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = sel.select()
                if self._stop.is_set():
                    break
                if not any(key.fileobj is self._listener for key, _ in ready):
                    continue
                try:
                    conn, _ = self._listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    log.error("control_accept_failed", error=repr(exc))
                    continue
                if not self._slots.acquire(blocking=False):
                    self._refuse_busy(conn)
                    continue
                worker = threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True)
                worker.start()

    def _refuse_busy(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.sendall(
                    _encode(
                        ControlFailure(
                            error=f"control API busy ({MAX_CONNECTIONS} connections open)",
                            hint="close other `egate diag` sessions (status --watch) and retry",
                        )
                    )
                )

    def _serve(self, conn: socket.socket) -> None:
        with self._conn_lock:
            self._connections.add(conn)
        try:
            conn.setblocking(True)
            closes_at = time.monotonic() + self._connection_deadline_s
            buffered = b""
            while not self._stop.is_set():
                deadline = min(closes_at, time.monotonic() + self._request_deadline_s)
                line, buffered = _read_line(conn, buffered, deadline)
                if line is None:
                    return  # closed, timed out or half a line at the deadline: nothing to answer
                if len(line) > MAX_REQUEST_BYTES:
                    conn.sendall(
                        _encode(
                            ControlFailure(
                                error=f"request longer than {MAX_REQUEST_BYTES} bytes",
                                hint="send one JSON object per line; arguments are small",
                            )
                        )
                    )
                    return
                try:
                    answer = self.dispatch(line)
                except Exception as exc:  # a hostile line must cost an error reply, never the thread
                    self._failures += 1
                    answer = ControlFailure(error=f"request could not be handled ({type(exc).__name__})")
                conn.sendall(_encode(answer))
        except OSError:
            return
        finally:
            with self._conn_lock:
                self._connections.discard(conn)
            conn.close()
            self._slots.release()

    def dispatch(self, line: bytes) -> ControlOk | ControlFailure:
        """Answer one request line (public so the lane can be tested without a socket)."""
        depth = _nesting(line)
        if depth > MAX_REQUEST_DEPTH:
            self._failures += 1
            return ControlFailure(
                error=f"request nested {depth} levels deep (at most {MAX_REQUEST_DEPTH})",
                hint='arguments are flat: send {"v": 1, "cmd": "<name>", "args": {...}}',
            )
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError) as exc:
            self._failures += 1
            return ControlFailure(error=f"request is not JSON ({str(exc)[:200]})", hint="send one JSON object per line")
        if isinstance(raw, dict) and raw.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
            self._failures += 1
            return ControlFailure(
                error=f"control protocol v{raw.get('v')!r} not supported; this daemon speaks v{PROTOCOL_VERSION}",
                hint="use the egate diag that came with this daemon (same egate version)",
            )
        try:
            request = ControlRequest.model_validate(raw)
        except ValidationError as exc:
            self._failures += 1
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            return ControlFailure(
                error=f"bad request: {where}: {first['msg']}",
                hint='send {"v": 1, "cmd": "<name>", "args": {...}}; see docs/control-api.md',
            )
        self._served += 1
        if request.cmd == PING:
            return ControlOk(result=PingReply(commands=self.commands).model_dump(mode="json"))
        handler = self._handlers.get(request.cmd)
        if handler is None:
            self._failures += 1
            return ControlFailure(
                error=f"unknown command {request.cmd!r}",
                hint=f"this daemon knows: {', '.join(self.commands)}; update egate diag to the daemon's version",
            )
        try:
            reply = handler(dict(request.args))
            if not isinstance(reply, BaseModel):
                raise TypeError(f"handler returned {type(reply).__name__}, not a reply model")
            result = reply.model_dump(mode="json")
            if not isinstance(result, dict):
                raise TypeError(f"handler's {type(reply).__name__} is not a JSON object")
        except ControlRefused as refused:
            self._failures += 1
            log.info("control_refused", cmd=request.cmd, error=refused.error)
            return ControlFailure(error=refused.error, hint=refused.hint)
        except Exception as exc:
            self._failures += 1
            log.error("control_handler_failed", cmd=request.cmd, error=repr(exc))
            return ControlFailure(
                error=f"{request.cmd} failed inside the daemon: {type(exc).__name__}: {exc}",
                hint="see the daemon log: egate diag logs --since 10m",
            )
        log.debug("control_served", cmd=request.cmd)
        return ControlOk(result=result)


def _nesting(line: bytes) -> int:
    """Deepest bracket nesting of a JSON text, counted without parsing it (brackets inside strings count
    too, which only errs towards refusing)."""
    depth = deepest = 0
    for byte in line.translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _read_line(conn: socket.socket, buffered: bytes, deadline: float) -> tuple[bytes | None, bytes]:
    """One line (with its newline) from `conn` by `deadline`, at most MAX_REQUEST_BYTES + 1 bytes of it.

    Returns (None, rest) when the peer closed, the deadline passed first, or the socket failed; a line
    over the limit comes back as MAX_REQUEST_BYTES + 1 bytes so the caller can refuse it."""
    data = buffered
    while True:
        newline = data.find(b"\n")
        if newline >= 0:
            return data[: newline + 1], data[newline + 1 :]
        if len(data) > MAX_REQUEST_BYTES:
            return data[: MAX_REQUEST_BYTES + 1], b""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, data
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(MAX_REQUEST_BYTES + 1 - len(data))
        except (TimeoutError, OSError):
            return None, data
        if not chunk:
            return None, data
        data += chunk


def _encode(response: ControlOk | ControlFailure) -> bytes:
    return response.model_dump_json().encode() + b"\n"


# ------------------------------------------------------------------------------------------ client


class ControlClient:
    """Calls the daemon's control API; one connection per call (the daemon serves each in a thread)."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 15.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def call(self, cmd: str, /, **args: Any) -> dict[str, Any]:
        """Run `cmd` with `args`; the result dict, or DaemonNotRunning / ControlPermissionDenied / ControlError."""
        request = ControlRequest(cmd=cmd, args=to_jsonable_python(args))
        sock = self._connect()
        try:
            sock.settimeout(self.timeout_s)
            sock.sendall(request.model_dump_json().encode() + b"\n")
            with sock.makefile("rb") as reader:
                line = reader.readline(MAX_RESPONSE_BYTES + 1)
        except TimeoutError:
            raise ControlError(
                f"the daemon did not answer {cmd!r} within {self.timeout_s:g} s",
                "it may be stuck: check `egate diag logs --since 10m`, then `systemctl restart egate`",
            ) from None
        except OSError as exc:
            raise ControlError(
                f"control connection to {self.socket_path} failed during {cmd!r}: {exc.strerror or exc}",
                "retry; if it persists check `egate diag logs --since 10m`",
            ) from None
        finally:
            sock.close()
        if not line:
            raise ControlError(
                f"the daemon closed the control connection without answering {cmd!r}",
                "it may be stopping or restarting: check `systemctl status egate`",
            )
        return self._parse(cmd, line)

    def ping(self) -> dict[str, Any]:
        return self.call(PING)

    def _connect(self) -> socket.socket:
        problem = _socket_path_error(self.socket_path)
        if problem:
            raise ControlError(problem, "fix control.socket_path in the config")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(os.fsencode(self.socket_path))
        except FileNotFoundError:
            sock.close()
            raise DaemonNotRunning(
                f"no control socket at {self.socket_path}: the egate daemon is not running",
                "start it (systemctl start egate) or check control.socket_path in --config",
            ) from None
        except ConnectionRefusedError:
            sock.close()
            raise DaemonNotRunning(
                f"control socket {self.socket_path} is stale: the egate daemon is not running",
                "start it (systemctl start egate); the stale socket is replaced at start",
            ) from None
        except PermissionError:
            sock.close()
            group = _group_of(self.socket_path)
            if group is None:
                raise ControlPermissionDenied(
                    f"permission denied on {self.socket_path}: its folder is closed to this user",
                    f"run as root (sudo) or let others traverse {self.socket_path.parent} (systemd "
                    "RuntimeDirectoryMode=0751): the socket's own mode and group keep everyone else out",
                ) from None
            raise ControlPermissionDenied(
                f"permission denied on {self.socket_path} (owned by group {group})",
                f"add your user to it: sudo usermod -aG {group} $USER, then log in again (or use sudo)",
            ) from None
        except TimeoutError:
            sock.close()
            raise ControlError(
                f"connecting to {self.socket_path} timed out",
                "the daemon may be overloaded or stuck: check `egate diag logs --since 10m`",
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlError(
                f"cannot connect to {self.socket_path}: {exc.strerror or exc}",
                "check control.socket_path in --config",
            ) from None
        return sock

    @staticmethod
    def _parse(cmd: str, line: bytes) -> dict[str, Any]:
        try:
            raw = json.loads(line)
        except ValueError:
            raise ControlError(
                f"the daemon's answer to {cmd!r} is not JSON", "use the egate diag of the daemon's version"
            ) from None
        if isinstance(raw, dict) and raw.get("v") != PROTOCOL_VERSION:
            raise ControlError(
                f"the daemon speaks control protocol v{raw.get('v')!r}; this egate diag speaks v{PROTOCOL_VERSION}",
                "use the egate diag installed with the daemon (same egate version)",
            )
        try:
            response = _RESPONSE.validate_python(raw)
        except ValidationError as exc:
            raise ControlError(
                f"the daemon's answer to {cmd!r} does not follow the control protocol ({exc.error_count()} errors)",
                "use the egate diag installed with the daemon (same egate version)",
            ) from None
        if isinstance(response, ControlFailure):
            raise ControlError(response.error, response.hint)
        return response.result


def _group_of(path: Path) -> str | None:
    """Group name owning `path`; None when this user cannot even see the file."""
    try:
        gid = os.stat(path).st_gid
    except OSError:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
