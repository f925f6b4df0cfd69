"""`egate display serve`: the traveller's screen as its own process, reading the daemon's feed.

Two Starlette apps on one event loop, both read-only (GET only):
- the kiosk page on `display.host:port` (loopback only): `/` the page, `/config.json` its settings and
  catalogues, `/events` Server-Sent Events with the screen to show (`lane`) and a heartbeat (`hb`);
- with `display.mirror.enabled`, `/mirror/events` on the kiosk page only: the live camera picture
  (edge/display/mirror_relay.py), answered to loopback clients only;
- the supervisor page on `display.supervisor_bind` when set (the officer's tablet): lane state,
  alarms, device health and the reason codes of recent referrals, no personal data.

The feed reader connects to the daemon's feed socket and reconnects every half second while the
daemon is away; while it has no fresh heartbeat the page is told "out of service" (never a stale
"please proceed"). The page runs its own watchdog on the stream too, so a dead display process also
ends on "out of service" (static/display.js).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from egate.edge.display.languages import DEFAULT_LANGUAGE, load_catalogues
from egate.edge.display.mirror_relay import MirrorRelay, mirror_stream
from egate.edge.display.model import FeedMessage, HeartbeatMessage, LaneMessage, LaneView, SupervisorView
from egate.edge.display.screens import ScreenView, disconnected_view, screen_view
from egate.edge.settings.display import DisplayConfig

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_FEED_LINE = 256 * 1024
RECONNECT_S = 0.5
SUBSCRIBER_QUEUE = 64
_FEED = TypeAdapter(FeedMessage)
# The page loads nothing from anywhere else; no inline script or style.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class FeedState:
    """The display's picture of the lane, fed by `read_feed`, fanned out to SSE subscribers."""

    def __init__(self, cfg: DisplayConfig) -> None:
        self.cfg = cfg
        self.view: LaneView | None = None
        self.supervisor: SupervisorView | None = None
        self.connected = False
        self.last_message = 0.0
        self.disconnects = 0
        self._subscribers: set[asyncio.Queue[tuple[str, str]]] = set()
        self._supervisors: set[asyncio.Queue[tuple[str, str]]] = set()

    # ---- what the page shows -------------------------------------------------------------------

    def screen(self) -> ScreenView:
        if self.connected and self.view is not None:
            return screen_view(self.view)
        return disconnected_view(-1, time.time(), self.view.mode if self.view else "exit")

    def supervisor_payload(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "screen": self.screen().model_dump(),
            "lane": self.view.model_dump() if self.view and self.connected else None,
            "supervisor": self.supervisor.model_dump() if self.supervisor and self.connected else None,
            "at": time.time(),
        }

    # ---- subscribers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def subscription(self, supervisor: bool = False) -> Iterator[asyncio.Queue[tuple[str, str]]]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        group = self._supervisors if supervisor else self._subscribers
        group.add(queue)
        try:
            yield queue
        finally:
            group.discard(queue)

    def _broadcast(self, group: set[asyncio.Queue[tuple[str, str]]], event: str, data: str) -> None:
        for queue in list(group):
            try:
                queue.put_nowait((event, data))
            except asyncio.QueueFull:
                # A page that does not read is dropped; its EventSource reconnects and gets the current screen.
                group.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(("close", ""))

    def publish_screen(self) -> None:
        self._broadcast(self._subscribers, "lane", self.screen().model_dump_json())
        self._broadcast(self._supervisors, "supervisor", json.dumps(self.supervisor_payload()))

    # ---- feed -----------------------------------------------------------------------------------

    def on_message(self, message: LaneMessage | HeartbeatMessage) -> None:
        self.last_message = time.monotonic()
        was_connected = self.connected
        self.connected = True
        if isinstance(message, LaneMessage):
            self.view = message.lane
            self.publish_screen()
        else:
            self.supervisor = message.supervisor
            if not was_connected and self.view is not None:
                self.publish_screen()
            else:
                self._broadcast(self._supervisors, "supervisor", json.dumps(self.supervisor_payload()))

    def on_lost(self, why: str) -> None:
        if self.connected:
            self.disconnects += 1
            log.warning("display_feed_lost", why=why, socket=str(self.cfg.feed_socket))
        self.connected = False
        self.publish_screen()


async def read_feed(state: FeedState, stop: asyncio.Event) -> None:
    """Keep a connection to the daemon's feed; every line is a `FeedMessage`. Never writes to it."""
    path = str(state.cfg.feed_socket)
    stale = state.cfg.stale_after_s
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FEED_LINE)
        except OSError:
            if state.connected or state.view is None:
                state.on_lost("feed socket not reachable")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT_S)
            continue
        why = "closed by the daemon"
        try:
            while not stop.is_set():
                try:
                    line = await asyncio.wait_for(reader.readline(), stale)
                except asyncio.TimeoutError:
                    why = f"no heartbeat for {stale:g} s"
                    break
                if not line:
                    break
                try:
                    state.on_message(_FEED.validate_json(line))
                except ValidationError as exc:
                    why = f"unreadable feed line ({exc.error_count()} errors): daemon and display versions differ?"
                    break
        except (OSError, ValueError) as exc:  # ValueError: a line over MAX_FEED_LINE
            why = f"{type(exc).__name__}: {exc}"
        finally:
            writer.close()
        state.on_lost(why)


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


async def _stream(state: FeedState, request: Request, supervisor: bool) -> AsyncIterator[str]:
    with state.subscription(supervisor) as queue:
        yield "retry: 500\n\n"
        if supervisor:
            yield _sse("supervisor", json.dumps(state.supervisor_payload()))
        else:
            yield _sse("lane", state.screen().model_dump_json())
        while True:
            try:
                event, data = await asyncio.wait_for(queue.get(), state.cfg.heartbeat_s)
            except asyncio.TimeoutError:
                event, data = "hb", json.dumps({"at": time.time(), "connected": state.connected})
            if event == "close":
                return
            yield _sse(event, data)


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def kiosk_app(state: FeedState, mirror: MirrorRelay | None = None) -> Starlette:
    """The kiosk page; `mirror` adds the live camera stream (never on the supervisor app)."""
    cfg = state.cfg
    catalogues = load_catalogues(cfg.languages)
    page_config = {
        "languages": cfg.languages,
        "default_language": DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in cfg.languages else cfg.languages[0],
        "catalogues": {code: c.model_dump() for code, c in catalogues.items()},
        "idle_cycle_s": cfg.idle_cycle_s,
        "choice_hold_s": cfg.choice_hold_s,
        "audio": cfg.audio,
        "speech": cfg.speech,
        "heartbeat_s": cfg.heartbeat_s,
        "stale_after_s": cfg.stale_after_s,
        "proceed_direction": cfg.proceed_direction,
        "mirror": mirror is not None,
    }

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_HEADERS)

    async def config(_request: Request) -> Response:
        return JSONResponse(page_config, headers=_HEADERS)

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(state, request, supervisor=False), media_type="text/event-stream", headers=_HEADERS
        )

    async def health(_request: Request) -> Response:
        body: dict[str, Any] = {"connected": state.connected, "screen": state.screen().screen}
        if mirror is not None:
            body["mirror"] = {"watchers": mirror.watchers, "frames_in": mirror.frames_in}
        return JSONResponse(body, headers=_HEADERS)

    routes = [
        Route("/", index),
        Route("/config.json", config),
        Route("/events", events),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if mirror is not None:
        relay = mirror

        async def mirror_events(request: Request) -> Response:
            # The kiosk is bound to loopback already; a request relayed from elsewhere is still refused.
            if not _loopback(request.client.host if request.client else None):
                return Response("the camera picture is served to this machine only", status_code=403)
            return StreamingResponse(mirror_stream(relay), media_type="text/event-stream", headers=_HEADERS)

        routes.insert(3, Route("/mirror/events", mirror_events))
    return Starlette(routes=routes)


def supervisor_app(state: FeedState) -> Starlette:
    async def index(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "supervisor.html", headers=_HEADERS)

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(state, request, supervisor=True), media_type="text/event-stream", headers=_HEADERS
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/events", events),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: `serve()` below stops both servers on SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(cfg: DisplayConfig, *, port: int | None = None) -> None:
    """Run the display until SIGTERM/SIGINT. `port` overrides `cfg.port` (0: any free port, printed)."""
    state = FeedState(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mirror = MirrorRelay(cfg.mirror_socket()) if cfg.mirror.enabled else None
    servers = [
        _Server(
            uvicorn.Config(
                kiosk_app(state, mirror),
                host=cfg.host,
                port=cfg.port if port is None else port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
    ]
    supervisor = cfg.supervisor_address()
    if supervisor is not None:
        servers.append(
            _Server(
                uvicorn.Config(
                    supervisor_app(state),
                    host=supervisor[0],
                    port=supervisor[1],
                    log_level="warning",
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=1,
                )
            )
        )
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    feed = asyncio.create_task(read_feed(state, stop))
    for s in servers:
        while not s.started and not any(t.done() for t in tasks):
            await asyncio.sleep(0.02)
    for task in tasks:
        if task.done() and task.exception() is not None:
            stop.set()
            raise RuntimeError(f"display server did not start: {task.exception()}")
    if mirror is not None:
        kiosk_hosts = [sock.getsockname()[0] for server in servers[0].servers for sock in server.sockets]
        if not all(_loopback(h) for h in kiosk_hosts):
            stop.set()
            for s in servers:
                s.should_exit = True
            raise RuntimeError(f"the kiosk page is bound to {kiosk_hosts}, not loopback: the mirror stays off")
    for s in servers:
        for server in s.servers:
            for sock in server.sockets:
                host, bound = sock.getsockname()[:2]
                print(json.dumps({"display_url": f"http://{host}:{bound}/"}), flush=True)
    await stop.wait()
    for s in servers:
        s.should_exit = True
    feed.cancel()
    await asyncio.gather(*tasks, feed, return_exceptions=True)
