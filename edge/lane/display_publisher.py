"""The daemon's side of the traveller's screen: after each event the lane loop handled, its state goes to
the display feed (edge/display/feed.py). Only the screen language derived from a document leaves, never
the nationality, and it is forgotten when the lane returns to idle."""

from __future__ import annotations

from collections.abc import Callable

from egate.drivers.document.models import MrzResult
from egate.edge.display.feed import DisplayFeed
from egate.edge.display.languages import document_language
from egate.edge.display.model import SupervisorView
from egate.edge.lane.session_part import SessionPart
from egate.edge.lane.sinks import LaneSinks
from egate.edge.session.states import LaneState
from egate.edge.settings import Settings


class DisplayPublisher:
    def __init__(self, settings: Settings, *, session: SessionPart, sinks: LaneSinks) -> None:
        self._settings = settings
        self._session = session
        self._sinks = sinks
        self._feed: DisplayFeed | None = None
        self._language: str | None = None
        self._state: LaneState | None = None

    def feed(self, supervisor_view: Callable[[], SupervisorView]) -> DisplayFeed | None:
        """The feed component when the screen is enabled (the daemon starts and closes it)."""
        cfg = self._settings.display
        if cfg.enabled and self._feed is None:
            self._feed = DisplayFeed(cfg.feed_socket, cfg.feed_group, supervisor_view, heartbeat_s=cfg.heartbeat_s)
        return self._feed

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
