"""The outbox as a lane part: opened first, closed last; a required device (no commit, no decision)."""

from __future__ import annotations

from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.part import Part
from egate.edge.service.daemon import Health
from egate.edge.settings import Settings
from egate.edge.uplink.outbox import Outbox


class OutboxPart(Part):
    name = "outbox"

    def __init__(self, settings: Settings, board: HealthBoard) -> None:
        self._settings = settings
        self._board = board
        self._outbox: Outbox | None = None

    @property
    def outbox(self) -> Outbox:
        return self._require(self._outbox, "the outbox")

    @property
    def opened(self) -> Outbox | None:
        return self._outbox

    def start(self) -> None:
        s = self._settings
        self._outbox = Outbox(s.state.state_dir / "outbox.sqlite", s.outbox, s.gate.gate_id)

    def close(self) -> None:
        if self._outbox is not None:
            self._outbox.close()

    def health(self) -> Health:
        h = self.outbox.health(self._settings.outbox.min_free_disk_bytes)
        return Health(h.ok, h.detail)

    def poll(self) -> None:
        """After a failed commit, a write probe tells when the disk takes writes again."""
        if self._outbox is None:
            return
        floor = self._settings.outbox.min_free_disk_bytes
        h = self._outbox.health(floor)
        if h.condition == "disk_error" and self._outbox.probe():
            h = self._outbox.health(floor)
        self._board.report("outbox", h.ok, "" if h.condition == "ok" else f"{h.condition}: {h.detail}")
