"""The lane's monitor as a part: polls the devices into the health board, re-publishes the retained status
after a change, and sends health metrics to ops. Started last, closed first: stopping takes the lane out of
service on purpose, so a traveller's session ends with an outcome record while the link is still up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from egate.edge.lane.gate_part import GatePart
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.link_part import LinkPart
from egate.edge.lane.outbox_part import OutboxPart
from egate.edge.lane.part import Part
from egate.edge.lane.reader_part import ReaderPart
from egate.edge.lane.session_part import SessionPart
from egate.edge.session.events import Maintenance
from egate.edge.settings import Settings
from egate.edge.uplink.messages import HealthPayload

log = structlog.get_logger(__name__)

MONITOR_INTERVAL_S = 0.25


class StatusRefresh:
    """A request to re-publish the retained status, taken by the monitor on its next turn, after the lane
    loop has handled the change (a status built inside the handler would still show the old one)."""

    def __init__(self) -> None:
        self._wanted = threading.Event()

    def request(self) -> None:
        self._wanted.set()

    def take(self) -> bool:
        if not self._wanted.is_set():
            return False
        self._wanted.clear()
        return True


class Monitor(Part):
    name = "monitor"

    def __init__(
        self,
        settings: Settings,
        *,
        board: HealthBoard,
        outbox: OutboxPart,
        gate: GatePart,
        reader: ReaderPart,
        link: LinkPart,
        session: SessionPart,
        refresh: StatusRefresh,
        health_payload: Callable[[], HealthPayload],
    ) -> None:
        self._settings = settings
        self._board = board
        self._outbox = outbox
        self._gate = gate
        self._reader = reader
        self._link = link
        self._session = session
        self._health_payload = health_payload
        self._refresh = refresh
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_health_publish = 0.0

    def start(self) -> None:
        self._reader.poll()  # a lane without any document reader is out of service from the start
        self._thread = threading.Thread(target=self._run, name="lane-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._session.running:
            loop = self._session.loop
            before = loop.handled
            self._session.post(Maintenance(True, reason="daemon stopping", owner="daemon"))
            loop.wait_handled(before + 1, timeout=1.0)
        self._board.stop_reporting()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL_S):
            try:
                self._outbox.poll()
                self._gate.poll()
                self._reader.poll()
                link = self._link.link
                if link is not None and self._refresh.take():
                    link.publish_status()
                if time.monotonic() - self._last_health_publish >= self._settings.link.health_interval_s:
                    self._last_health_publish = time.monotonic()
                    if link is not None:
                        link.publish_health(self._health_payload())
            except Exception:
                log.exception("lane_monitor_failed")
