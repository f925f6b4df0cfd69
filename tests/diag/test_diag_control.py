"""The control API over a real UNIX socket: protocol, errors with hints, permissions, daemon-not-running."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from egate.edge.service.control_socket import (
    MAX_REQUEST_BYTES,
    ControlClient,
    ControlError,
    ControlPermissionDenied,
    ControlRefused,
    ControlServer,
    DaemonNotRunning,
)
from egate.edge.service.daemon import StartError


def _sock_path(tmp_path: Path) -> Path:
    # pytest's tmp_path can be long; sun_path allows 107 bytes.
    return tmp_path / "c.sock"


def _raw(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        with s.makefile("rb") as f:
            return json.loads(f.readline())


class Echo(BaseModel):
    args: dict[str, Any]


class Done(BaseModel):
    by: str


class When(BaseModel):
    path: Path
    n: int


def _gate_open(_args: dict[str, Any]) -> Echo:
    raise ControlRefused(
        "gate.open refused: the lane is in service, not in maintenance mode",
        "enter maintenance mode: egate diag maintenance on / signed ops command set_mode maintenance",
    )


@pytest.fixture
def server(tmp_path: Path):
    handlers: dict[str, Any] = {
        "echo": lambda args: Echo(args=args),
        "gate.open": _gate_open,
        "boom": lambda args: 1 / 0,
        "not_a_model": lambda args: {"x": 1},
        "when": lambda args: When(path=Path("/x"), n=args.get("n", 0)),
    }
    with ControlServer(_sock_path(tmp_path), None, handlers) as srv:
        yield srv


def test_call_returns_result_and_args_round_trip(server: ControlServer) -> None:
    client = ControlClient(server.socket_path)
    assert client.call("echo", a=1, b=[1, "x"], on=True) == {"args": {"a": 1, "b": [1, "x"], "on": True}}
    assert client.call("when", n=3) == {"path": "/x", "n": 3}  # replies dumped as JSON (Path -> str)


def test_ping_lists_commands(server: ControlServer) -> None:
    result = ControlClient(server.socket_path).ping()
    assert result["protocol"] == 1
    assert "gate.open" in result["commands"] and "ping" in result["commands"]


def test_refusal_carries_error_and_hint(server: ControlServer) -> None:
    with pytest.raises(ControlError) as info:
        ControlClient(server.socket_path).call("gate.open")
    assert "not in maintenance mode" in info.value.error
    assert info.value.hint.startswith("enter maintenance mode: egate diag maintenance on")
    assert not isinstance(info.value, DaemonNotRunning)


def test_unknown_command_lists_known_ones(server: ControlServer) -> None:
    with pytest.raises(ControlError) as info:
        ControlClient(server.socket_path).call("gate.explode")
    assert info.value.error == "unknown command 'gate.explode'"
    assert "gate.open" in info.value.hint


def test_handler_crash_is_an_error_with_log_hint_and_server_survives(server: ControlServer) -> None:
    client = ControlClient(server.socket_path)
    with pytest.raises(ControlError) as info:
        client.call("boom")
    assert "ZeroDivisionError" in info.value.error
    assert "egate diag logs" in info.value.hint
    with pytest.raises(ControlError, match="not a reply model"):
        client.call("not_a_model")  # a bare dict is no contract: the handler is wrong, the server says so
    assert client.call("echo") == {"args": {}}
    assert server.health().ok


def test_wire_format_is_versioned(server: ControlServer) -> None:
    ok = _raw(server.socket_path, b'{"v": 1, "cmd": "echo", "args": {"x": 2}}\n')
    assert ok == {"v": 1, "ok": True, "result": {"args": {"x": 2}}}
    future = _raw(server.socket_path, b'{"v": 2, "cmd": "echo"}\n')
    assert future["v"] == 1 and future["ok"] is False
    assert "v2" in future["error"] and "same egate version" in future["hint"]
    garbage = _raw(server.socket_path, b"hello\n")
    assert garbage["ok"] is False and "not JSON" in garbage["error"]
    bad_name = _raw(server.socket_path, b'{"v": 1, "cmd": "Gate Open"}\n')
    assert bad_name["ok"] is False and bad_name["error"].startswith("bad request: cmd")
    extra = _raw(server.socket_path, b'{"v": 1, "cmd": "echo", "sudo": true}\n')
    assert extra["ok"] is False and "sudo" in extra["error"]


def test_several_requests_on_one_connection(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(server.socket_path))
        s.sendall(b'{"v":1,"cmd":"echo","args":{"i":1}}\n{"v":1,"cmd":"echo","args":{"i":2}}\n')
        with s.makefile("rb") as f:
            assert json.loads(f.readline())["result"] == {"args": {"i": 1}}
            assert json.loads(f.readline())["result"] == {"args": {"i": 2}}


def test_oversized_request_is_refused(server: ControlServer) -> None:
    reply = _raw(server.socket_path, b'{"v":1,"cmd":"echo","args":{"x":"' + b"a" * MAX_REQUEST_BYTES + b'"}}\n')
    assert reply["ok"] is False and "longer than" in reply["error"]


def test_slow_handler_does_not_block_other_clients(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(_args: dict[str, Any]) -> Done:
        entered.set()
        release.wait(10)
        return Done(by="slow")

    with ControlServer(_sock_path(tmp_path), None, {"slow": slow, "fast": lambda a: Done(by="fast")}) as srv:
        client = ControlClient(srv.socket_path)
        results: list[dict[str, Any]] = []
        t = threading.Thread(target=lambda: results.append(client.call("slow")))
        t.start()
        assert entered.wait(5)
        assert client.call("fast") == {"by": "fast"}
        release.set()
        t.join(5)
        assert results == [{"by": "slow"}]


def test_daemon_not_running_when_no_socket(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning) as info:
        ControlClient(tmp_path / "none.sock").call("status")
    assert "not running" in info.value.error and "systemctl start egate" in info.value.hint


def test_stale_socket_is_not_running_and_is_replaced_at_start(tmp_path: Path) -> None:
    path = _sock_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays; nobody listens: what a killed daemon leaves behind
    with pytest.raises(DaemonNotRunning, match="stale"):
        ControlClient(path).call("status")
    with ControlServer(path, None, {"echo": lambda a: Echo(args={"ok": 1})}) as srv:
        assert ControlClient(srv.socket_path).call("echo") == {"args": {"ok": 1}}


def test_second_server_on_live_socket_refuses_to_start(server: ControlServer) -> None:
    other = ControlServer(server.socket_path, None, {})
    with pytest.raises(StartError, match="another egate daemon already listens"):
        other.start()
    assert ControlClient(server.socket_path).call("echo") == {"args": {}}


def test_close_removes_socket_and_clients_see_daemon_not_running(tmp_path: Path) -> None:
    srv = ControlServer(_sock_path(tmp_path), None, {})
    srv.start()
    assert srv.health().ok
    srv.close()
    assert not srv.socket_path.exists()
    assert not srv.health().ok
    with pytest.raises(DaemonNotRunning):
        ControlClient(srv.socket_path).call("ping")


def test_removed_socket_file_makes_health_fail_with_fix(server: ControlServer) -> None:
    server.socket_path.unlink()
    health = server.health()
    assert not health.ok and "restart egate" in health.detail


def test_owner_only_without_group(server: ControlServer) -> None:
    mode = stat.S_IMODE(os.stat(server.socket_path).st_mode)
    assert mode == 0o600


def test_missing_group_is_a_clear_start_error(tmp_path: Path) -> None:
    srv = ControlServer(_sock_path(tmp_path), "egate-no-such-group", {})
    with pytest.raises(StartError) as info:
        srv.start()
    message = str(info.value)
    assert "'egate-no-such-group' does not exist" in message and "groupadd --system egate-no-such-group" in message
    assert not srv.socket_path.exists()


def test_empty_group_means_owner_only(tmp_path: Path) -> None:
    with ControlServer(_sock_path(tmp_path), "", {}) as srv:
        assert srv.group is None
        assert stat.S_IMODE(os.stat(srv.socket_path).st_mode) == 0o600


def test_too_long_socket_path_is_a_clear_start_error(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / ("x" * 120) / "c.sock", None, {})
    with pytest.raises(StartError, match="shorter path"):
        srv.start()


def _call_as(uid: int, gids: list[int], path: Path) -> str:
    """Call the server from a forked child running as another user (root ignores file modes)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, call, report through the pipe, never return to pytest
        code = 0
        try:
            os.setgroups(gids)
            os.setgid(gids[0])
            os.setuid(uid)
            try:
                out = repr(ControlClient(path).call("echo", who="other"))
            except ControlPermissionDenied as exc:
                out = f"DENIED {exc.error} | {exc.hint}"
            os.write(write_end, out.encode())
        except BaseException as exc:
            os.write(write_end, f"CHILD FAILED {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to call as another user")
def test_group_restricts_access_to_members(request: pytest.FixtureRequest) -> None:
    # The socket's folder must be traversable by the other user; the socket itself is the gate.
    # pytest's tmp_path sits under a 0700 folder, so use a fresh folder in /tmp.
    folder = Path(tempfile.mkdtemp(prefix="egate-diag-", dir="/tmp"))
    os.chmod(folder, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    nobody, nogroup, dialout = 65534, 65534, 20
    with ControlServer(folder / "c.sock", "dialout", {"echo": lambda a: Echo(args=a)}) as srv:
        st = os.stat(srv.socket_path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == dialout
        denied = _call_as(nobody, [nogroup], srv.socket_path)
        assert denied.startswith("DENIED"), denied
        assert "group dialout" in denied and "usermod -aG dialout" in denied
        allowed = _call_as(nobody, [nogroup, dialout], srv.socket_path)
        assert allowed == repr({"args": {"who": "other"}})
