"""What the rig's local servers (mosquitto, PostgreSQL, a RabbitMQ cluster) share: `with` starts and stops them.

A start that fails half-way is stopped at once, so a half-started server never keeps its processes,
ports or work folder after the error.
"""

from __future__ import annotations

import signal
from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="LocalService")


def terminate_with_parent() -> None:
    """In a child process before exec: SIGTERM it when the thread that started it ends, which for a
    command-line tool's main thread is when the tool dies, however it died (prctl PR_SET_PDEATHSIG, Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class LocalService:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
