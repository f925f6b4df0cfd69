"""The control socket against hostile or careless peers, and the shipped unit's access for technicians."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from egate.edge.lane.control import GateTimeoutArgs, MaintenanceArgs, NoArgs, OutcomesArgs, strict_args
from egate.edge.service.control_socket import ControlClient, ControlRefused, ControlServer

ROOT = Path(__file__).resolve().parents[2]


class Echo(BaseModel):
    args: dict[str, Any]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    with ControlServer(tmp_path / "c.sock", None, {"echo": lambda args: Echo(args=args)}) as srv:
        yield srv


def _exchange(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        with s.makefile("rb") as f:
            return json.loads(f.readline())


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 60_000 + b"\n",
        b'{"v":1,"cmd":"echo","args":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}\n",
        b'{"v":1,"cmd":"echo","args":[1,2]}\n',
        b'{"v":1,"cmd":["echo"]}\n',
        b'{"v":"1","cmd":"echo"}\n',
        b"\xff\xfe\x00garbage\n",
        b"null\n",
        b'"just a string"\n',
        b'{"v":1,"cmd":"echo","args":{"x":' + b"9" * 5000 + b"}}\n",
    ],
    ids=["brackets", "deep-args", "args-list", "cmd-list", "v-string", "bytes", "null", "string", "huge-int"],
)
def test_hostile_request_gets_an_error_reply_and_the_server_keeps_serving(
    server: ControlServer, payload: bytes
) -> None:
    reply = _exchange(server.socket_path, payload)
    assert reply["ok"] is False and reply["error"], reply
    assert len(json.dumps(reply)) < 2000  # the reply does not echo the input
    assert ControlClient(server.socket_path).call("echo", n=1) == {"args": {"n": 1}}


def test_trickling_bytes_cannot_extend_the_deadline(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "t.sock", None, {"echo": lambda args: Echo(args=args)}, request_deadline_s=0.5)
    server.start()
    sent = 0
    closed = False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(server.socket_path))
        s.settimeout(0.2)
        # One byte every 0.1 s for up to 100 bytes: far longer than the deadline if each byte reset it.
        for _ in range(100):
            try:
                s.sendall(b" ")
                sent += 1
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    try:
        assert closed, "the server kept a trickling connection open"
        assert sent < 100
        assert ControlClient(server.socket_path).call("echo") == {"args": {}}
    finally:
        server.close()


def test_arguments_are_strictly_typed() -> None:
    assert strict_args(MaintenanceArgs, {"on": False}, "maintenance").on is False
    for bad in ({"on": "false"}, {"on": 0}, {"on": None}, {}, {"on": True, "force": True}):
        with pytest.raises(ControlRefused, match="maintenance: argument"):
            strict_args(MaintenanceArgs, bad, "maintenance")
    assert strict_args(OutcomesArgs, {}, "outcomes").n == 10
    for bad_n in ({"n": "5"}, {"n": 5.5}, {"n": True}, {"n": 10**9}):
        with pytest.raises(ControlRefused):
            strict_args(OutcomesArgs, bad_n, "outcomes")
    assert strict_args(GateTimeoutArgs, {"timeout_s": 3}, "gate.open").timeout_s == 3.0
    for bad_t in ({"timeout_s": "3"}, {"timeout_s": True}, {"timeout_s": 1e9}, {"timeout_s": -1}):
        with pytest.raises(ControlRefused):
            strict_args(GateTimeoutArgs, bad_t, "gate.open")
    with pytest.raises(ControlRefused):
        strict_args(NoArgs, {"x": 1}, "status")


# ---------------------------------------------------------------- the shipped unit, a real technician account


def _unit_runtime_mode() -> int:
    text = (ROOT / "systemd" / "egate.service").read_text()
    match = re.search(r"^RuntimeDirectoryMode=(\d+)$", text, re.M)
    assert match, "egate.service sets RuntimeDirectoryMode"
    assert re.search(r"^SupplementaryGroups=.*\begate-tech\b", text, re.M), "the daemon is in egate-tech"
    return int(match.group(1), 8)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def _socat_as(user: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", "socat", "-t", "5", "-", f"UNIX-CONNECT:{path}"],
        input='{"v": 1, "cmd": "ping"}\n',
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create users and groups")
@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("useradd", "groupadd", "runuser", "socat")),
    reason="needs useradd, groupadd, runuser and socat",
)
def test_a_technician_in_the_group_reaches_the_socket_of_the_shipped_unit() -> None:
    from egate.edge.settings.core import ControlConfig

    assert ControlConfig().socket_group == "egate-tech"
    tag = uuid.uuid4().hex[:6]
    group, tech, other = f"egtech{tag}", f"egtu{tag}", f"egtx{tag}"
    folder = Path(tempfile.mkdtemp(prefix="egate-run-", dir="/tmp"))  # stands in for /run/egate
    try:
        _run("groupadd", group)
        _run("useradd", "--no-create-home", "-G", group, tech)
        _run("useradd", "--no-create-home", other)
        os.chmod(folder, _unit_runtime_mode())  # owned by the daemon's user, mode as the unit makes it
        with ControlServer(folder / "control.sock", group, {}) as srv:
            member = _socat_as(tech, srv.socket_path)
            assert member.returncode == 0 and '"pong":true' in member.stdout, member.stderr
            stranger = _socat_as(other, srv.socket_path)
            assert '"pong"' not in stranger.stdout and "Permission denied" in stranger.stderr
            # The mode the unit used to have kept the technicians out: the folder was the wall.
            os.chmod(folder, 0o750)
            assert "Permission denied" in _socat_as(tech, srv.socket_path).stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for user in (tech, other):
            subprocess.run(["userdel", user], capture_output=True, timeout=30)
        subprocess.run(["groupdel", group], capture_output=True, timeout=30)
