"""What every part of the lane shares: the daemon's component interface and a clear error for a
dependency used before it started.

Parts are built with the parts they need (constructor arguments, so the dependencies read from the
code) and open their own resources in `start()`; the daemon starts them in the lane's order. A part
asked for a resource it has not opened raises `PartNotStarted` naming it, rather than an `assert`
(which `python -O` strips) or an AttributeError on None.
"""

from __future__ import annotations

from typing import TypeVar

from egate.edge.service.daemon import Health

T = TypeVar("T")


class PartNotStarted(RuntimeError):
    """A lane part's resource was used before the part started (a start-order bug, not a device fault)."""


class Part:
    """A daemon component with a name; subclasses open in `start()` and release in `close()`."""

    name = "part"

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None

    def health(self) -> Health:
        return Health(True, "")

    def _require(self, resource: T | None, what: str) -> T:
        if resource is None:
            raise PartNotStarted(f"{self.name}: {what} used before the {self.name} part started")
        return resource
