"""The lane's device health: each device's last (ok, reason), turned into `DeviceHealth` events for the
session only when it changes. Every part reports here; the session decides what takes the lane out."""

from __future__ import annotations

import threading
from collections.abc import Callable

from egate.edge.session.events import DeviceHealth, Event


class HealthBoard:
    def __init__(self, post: Callable[[Event], None]) -> None:
        self._post = post
        self._lock = threading.Lock()
        self._health: dict[str, tuple[bool, str]] = {}
        self._stopping = threading.Event()

    def report(self, device: str, ok: bool, reason: str) -> None:
        if self._stopping.is_set():
            return  # devices closing during shutdown are not faults to report to ops
        with self._lock:
            if self._health.get(device) == (ok, reason):
                return
            self._health[device] = (ok, reason)
        self._post(DeviceHealth(device, ok, reason))

    def forget(self, device: str, ok: bool, reason: str) -> None:
        """Record a state without posting it (the session already knows, e.g. it saw the commit fail):
        the next `report` of the device is posted even when it reads the same as before."""
        with self._lock:
            self._health[device] = (ok, reason)

    def snapshot(self) -> dict[str, tuple[bool, str]]:
        with self._lock:
            return dict(self._health)

    def stop_reporting(self) -> None:
        self._stopping.set()
