"""What the rig's local servers (mosquitto, PostgreSQL, a RabbitMQ cluster) share: `with` starts and stops them.

A start that fails half-way is stopped at once, so a half-started server never keeps its processes,
ports or work folder after the error.
"""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

S = TypeVar("S", bound="LocalService")


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
