"""The test broker never mistakes another listener on its port for itself."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from egate.tools.rig.local_broker import Mosquitto


def test_start_refuses_a_port_someone_else_listens_on(tmp_path: Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        broker = Mosquitto(tmp_path / "broker", port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="mosquitto"):
            broker.start(timeout=5.0)
        assert not broker.running
    finally:
        squatter.close()


def test_start_and_restart_on_the_same_port(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        port = broker.port
        broker.restart()
        assert broker.running and broker.port == port
        with socket.create_connection((broker.host, port), timeout=2):
            pass
