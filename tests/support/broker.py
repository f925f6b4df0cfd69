"""A real mosquitto for tests: free loopback port, temp dir, optional TLS and passwords, restartable.

Reusable by any test (the lane tests use it too)::

    from tests.support.broker import Mosquitto

    with Mosquitto(tmp_path / "broker") as broker:      # started, ready to accept
        broker.port                                      # the loopback port
        broker.stop(); broker.start()                    # outage on the same port (retained kept)
        broker.kill()                                    # SIGKILL: no persistence write

TLS: `Mosquitto(dir, tls=BrokerTls(ca, cert, key, require_client_cert=True))` (see tests/support/link_fixtures.py
`make_pki` for a CA, server and client certificates made with `cryptography`). Passwords:
`Mosquitto(dir, users={"gate": "secret"})`. Pytest fixtures live in tests/support/link_fixtures.py.

The implementation lives in tools/rig/local_broker.py (so `egate bench link` can start one too).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from egate.tools.rig.local_broker import MOSQUITTO, BrokerTls, Mosquitto, free_port

__all__ = ["MOSQUITTO", "BrokerTls", "Mosquitto", "free_port", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `predicate()` until true or raise AssertionError naming `what` (tests sync on conditions)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)
