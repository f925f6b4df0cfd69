"""MQTT 5 with fallback to 3.1.1, against a scripted broker on a real loopback socket (paho's own test style).

mosquitto speaks both versions, so a 3.1.1-only broker is played byte for byte here.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from egate.edge.settings.link import LinkConfig
from tests.support.broker import wait_until
from tests.support.link_fixtures import make_link


def _read_connect(conn: socket.socket) -> int:
    """Read one CONNECT (MQTT 3.1.1 section 3.1) and return its protocol level (4 = 3.1.1, 5 = 5.0)."""
    first = conn.recv(1)
    assert first == b"\x10", f"expected CONNECT, got {first!r}"
    length, shift = 0, 0
    while True:
        byte = conn.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    assert body[2:6] == b"MQTT"
    return body[6]


class ScriptedBroker:
    """Refuses MQTT 5 like a 3.1.1-only broker (CONNACK return code 1), accepts 3.1.1."""

    def __init__(self, refusal: bytes) -> None:
        self.refusal = refusal
        self.levels: list[int] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                level = _read_connect(conn)
            except (AssertionError, IndexError, OSError):
                conn.close()
                continue
            self.levels.append(level)
            if level == 5:
                conn.sendall(self.refusal)
                conn.close()
            else:
                conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, session present 0, accepted
                self._open.append(conn)  # keep it open; the gate's packets are not answered

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


@pytest.mark.slow  # a second of subprocess start-up or network timeouts per case
@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(b"\x20\x02\x00\x01", id="v3-broker-return-code-1"),
        pytest.param(b"\x20\x03\x00\x84\x00", id="v5-reason-0x84"),
    ],
)
def test_auto_falls_back_to_311(tmp_path: Path, refusal: bytes) -> None:
    fake = ScriptedBroker(refusal)
    config = LinkConfig(
        host="127.0.0.1",
        port=fake.port,
        tls=False,
        cert_credential=None,
        key_credential=None,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        protocol="auto",
    )
    outbox, link = make_link(tmp_path, config)
    link.start()
    try:
        wait_until(lambda: link.connected, 15, "connected after fallback")
        assert link.protocol == "3.1.1"
        assert fake.levels[0] == 5 and fake.levels[-1] == 4
    finally:
        link.close()
        outbox.close()
        fake.close()


def test_forced_v5_does_not_fall_back(tmp_path: Path) -> None:
    fake = ScriptedBroker(b"\x20\x03\x00\x84\x00")
    config = LinkConfig(
        host="127.0.0.1",
        port=fake.port,
        tls=False,
        cert_credential=None,
        key_credential=None,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        protocol="5",
    )
    outbox, link = make_link(tmp_path, config)
    link.start()
    try:
        wait_until(lambda: len(fake.levels) >= 3, 15, "retries")
        assert set(fake.levels) == {5}
        assert not link.connected
        assert link.last_error is not None and link.last_error.category == "protocol"
    finally:
        link.close()
        outbox.close()
        fake.close()
