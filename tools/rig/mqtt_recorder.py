"""Record what a gate publishes, as central ops would see it: every message on a topic filter, with waits.

One recorder serves the lane rig (everything one gate sends, deduplicated on the envelope id) and the
link tests (any filter, any broker credentials). Waiting is on a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from egate.tools.ops.client import OpsClient, OpsTls

T = TypeVar("T")


@dataclass
class Received:
    topic: str
    raw: bytes
    retain: bool
    at: float  # monotonic arrival
    # The JSON payload, parsed once on arrival; one that is not JSON (a bundle chunk) stands as its size.
    payload: Any = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.payload = json.loads(self.raw) if self.raw else None
        except ValueError:
            self.payload = {"bytes": len(self.raw)}

    def json(self) -> Any:
        return json.loads(self.raw)


class MqttRecorder:
    """Subscribes to `topic_filter` and keeps every message in arrival order.

    `client_id` with `session_expiry_s` gives a broker-side session that survives broker and recorder
    restarts, so nothing published meanwhile is missed. `keep` may refuse a message (e.g. a redelivery).
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        *,
        tls: OpsTls | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        session_expiry_s: int = 0,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 0.5,
    ) -> None:
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.client = OpsClient(
            host,
            port,
            tls=tls,
            username=username,
            password=password,
            client_id=client_id,
            session_expiry_s=session_expiry_s,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(timeout)
        self.client.subscribe(self.topic_filter, self._record)

    def close(self) -> None:
        self.client.close()

    def keep(self, message: Received) -> bool:
        """Whether to record `message` (called under the lock); every message by default."""
        return True

    def _record(self, message: Any) -> None:
        received = Received(message.topic, bytes(message.payload), bool(message.retain), time.monotonic())
        with self._cond:
            if self.keep(received):
                self.messages.append(received)
                self._cond.notify_all()

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends in `/<suffix>`."""
        with self._cond:
            return [m for m in self.messages if m.topic.endswith("/" + suffix)]

    def distinct(self, suffix: str) -> dict[str, int]:
        """Envelope id -> seq of the outbox messages on `suffix`, first occurrence order kept."""
        found: dict[str, int] = {}
        for m in self.on(suffix):
            env = m.json()
            found.setdefault(env["id"], env["seq"])
        return found

    def wait_for(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """The first true value of `predicate`, checked on every message; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
                self._cond.wait(min(left, 0.25))

    def __enter__(self) -> MqttRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
