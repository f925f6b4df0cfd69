"""Daemon lifecycle: start components in order, tell systemd, watch health, stop within budget.

The watchdog is fed only after a real health round completes and no component reports itself
stuck: a hung inference worker or session thread stops the WATCHDOG=1 pings and systemd restarts
us. A device that is merely down (camera unplugged) is not stuck: the lane goes out of service and
the gate stays safe, which a restart would not improve.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

import structlog

from egate.edge.service.sdnotify import Notifier, watchdog_interval_s

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    stuck: bool = False  # True only when restarting the process is the right fix


class Component(Protocol):
    name: str

    def start(self) -> None: ...

    def close(self) -> None: ...

    def health(self) -> Health: ...


class StartError(RuntimeError):
    """A component could not start; the message names the component and the fix."""


class Daemon:
    def __init__(
        self,
        components: Sequence[Component],
        *,
        check_interval_s: float = 2.0,
        stop_timeout_s: float = 4.0,
        notifier: Notifier | None = None,
    ) -> None:
        self._components = list(components)
        self._started: list[Component] = []
        self._notifier = notifier or Notifier()
        interval = watchdog_interval_s()
        self._interval = min(check_interval_s, interval) if interval else check_interval_s
        self._stop_timeout = stop_timeout_s
        self._stop = threading.Event()
        self.last_health: dict[str, Health] = {}

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            log.info("daemon_stop_requested", reason=reason)
            self._notifier.stopping()
            self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, *, until: Callable[[], bool] | None = None) -> int:
        """Start, serve until stopped (or `until()` is true), stop. Returns the process exit code."""
        try:
            self._start_all()
        except StartError as exc:
            log.error("daemon_start_failed", error=str(exc))
            self._close_all()
            return 1
        self._notifier.ready(f"serving {len(self._started)} components")
        log.info("daemon_ready", components=[c.name for c in self._started])
        while not self._stop.is_set():
            if self._health_round():
                self._notifier.watchdog()
            if until is not None and until():
                self.request_stop("finished")
                break
            self._stop.wait(self._interval)
        self._close_all()
        log.info("daemon_stopped")
        return 0

    def _start_all(self) -> None:
        for component in self._components:
            if self._stop.is_set():
                raise StartError("stop requested during start-up")
            began = time.monotonic()
            try:
                component.start()
            except StartError:
                raise
            except Exception as exc:
                raise StartError(f"{component.name}: {exc}") from exc
            self._started.append(component)
            log.info("component_started", component=component.name, ms=round((time.monotonic() - began) * 1000))

    def _health_round(self) -> bool:
        healthy = True
        for component in self._started:
            try:
                health = component.health()
            except Exception as exc:
                health = Health(False, f"health check raised {exc!r}", stuck=True)
            previous = self.last_health.get(component.name)
            if previous is None or previous.ok != health.ok or previous.detail != health.detail:
                log.info("component_health", component=component.name, ok=health.ok, detail=health.detail)
            self.last_health[component.name] = health
            healthy = healthy and not health.stuck
        return healthy

    def _close_all(self) -> None:
        deadline = time.monotonic() + self._stop_timeout
        for component in reversed(self._started):
            remaining = deadline - time.monotonic()
            closer = threading.Thread(target=self._close_one, args=(component,), daemon=True)
            closer.start()
            closer.join(max(0.05, remaining))
            if closer.is_alive():
                log.error("component_close_overran", component=component.name, budget_s=self._stop_timeout)
        self._started.clear()

    @staticmethod
    def _close_one(component: Component) -> None:
        try:
            component.close()
        except Exception as exc:
            log.error("component_close_failed", component=component.name, error=repr(exc))
