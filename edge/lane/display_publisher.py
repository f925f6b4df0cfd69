"""The daemon's side of the traveller's screen: after each event the lane loop handled, its state goes to
the display feed (edge/display/feed.py). Only the screen language derived from a document leaves, never
the nationality, and it is forgotten when the lane returns to idle."""

from __future__ import annotations

import time
from collections.abc import Callable

from egate.drivers.document.models import MrzResult
from egate.edge.display.feed import DisplayFeed
from egate.edge.display.languages import document_language
from egate.edge.display.mirror import MirrorFeed, MirrorFrame
from egate.edge.display.model import SupervisorView
from egate.edge.lane.session_part import SessionPart
from egate.edge.lane.sinks import LaneSinks
from egate.edge.lane.vision import LastFrame
from egate.edge.service.daemon import Component
from egate.edge.session.states import LaneState
from egate.edge.settings import Settings


class DisplayPublisher:
    def __init__(
        self, settings: Settings, *, session: SessionPart, sinks: LaneSinks, last_frame: Callable[[], LastFrame | None]
    ) -> None:
        """`last_frame`: the frame the face engine analysed last (the camera mirror shows it; the camera has
        one reader, the face worker)."""
        self._settings = settings
        self._session = session
        self._sinks = sinks
        self._last_frame = last_frame
        self._feed: DisplayFeed | None = None
        self._language: str | None = None
        self._state: LaneState | None = None

    def components(self, supervisor_view: Callable[[], SupervisorView]) -> list[Component]:
        """The feed (and the camera mirror when configured) when the screen is enabled; the daemon starts and
        closes them."""
        cfg = self._settings.display
        if not cfg.enabled:
            return []
        self._feed = DisplayFeed(cfg.feed_socket, cfg.feed_group, supervisor_view, heartbeat_s=cfg.heartbeat_s)
        if not cfg.mirror.enabled:
            return [self._feed]
        mirror = MirrorFeed(
            cfg.mirror_socket(),
            cfg.feed_group,
            self._mirror_frame,
            fps=cfg.mirror.fps,
            width=cfg.mirror.width,
            jpeg_quality=cfg.mirror.jpeg_quality,
        )
        return [self._feed, mirror]

    def _mirror_frame(self) -> MirrorFrame | None:
        last = self._last_frame()
        if last is None:
            return None
        captured_wall = time.time() - (time.monotonic() - last.captured) if last.captured else time.time()
        return MirrorFrame(key=last.at, image=last.image, captured_at=captured_wall)

    def on_document(self, result: MrzResult) -> None:
        if result.document is not None:
            self._language = document_language(result.document.nationality, result.document.issuer)

    def publish(self) -> None:
        """On the lane loop's thread after each handled event: the status is that event's."""
        if self._feed is None or not self._session.running:
            return
        st = self._session.status()
        if st.state is LaneState.IDLE and self._state is not LaneState.IDLE:
            # A traveller's session is over: the next one starts in the idle languages again. In entry mode the
            # document is read while idle and the session starts at once, so only a return to idle clears it.
            self._language = None
        self._state = st.state
        guidance = self._sinks.guidance
        self._feed.update(
            at=self._sinks.last_event_at,
            state=st.state.value,
            mode=st.mode.value,
            guidance=guidance.value if guidance else None,
            maintenance=st.maintenance,
            alarm=st.alarm,
            language=self._language,
        )
