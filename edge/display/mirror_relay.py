"""The display process's side of the camera mirror: the daemon's frames to the kiosk page, loopback only.

While at least one page watches (`/mirror/events`, a Server-Sent Events stream of frames: JSON
`{"at": capture time, "jpeg": base64}`),
one task reads the daemon's mirror socket and keeps the newest frame in memory; when the last page
stops watching the connection is closed, so the daemon takes and encodes no frame. A page that reads
slowly simply gets the newest frame when it is ready again: frames are replaced, never queued.
Nothing is written to disk or logged but counters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import structlog

from egate.edge.display.mirror import FRAME_HEADER, MAX_FRAME_BYTES

log = structlog.get_logger(__name__)

RECONNECT_S = 0.5
KEEPALIVE_S = 5.0


class MirrorRelay:
    """The newest mirror frame, read from the daemon only while someone watches."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)
        self.frame: bytes | None = None
        self.captured_at = 0.0
        self.seq = 0
        self.watchers = 0
        self.frames_in = 0
        # Replaced by a fresh Event at every frame: a waiter holds the one for "the next frame" and needs no lock
        # (one event loop, no awaits between reading and changing the fields).
        self._next = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        self.watchers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read())
        try:
            yield
        finally:
            self.watchers -= 1
            if self.watchers == 0 and self._task is not None:
                self._task.cancel()
                self._task = None
                self.frame = None  # nothing of the camera stays in memory once nobody watches

    async def next_frame(self, after: int, timeout: float) -> tuple[int, bytes, float] | None:
        """The newest frame newer than `after` (seq, JPEG, capture time), waiting up to `timeout` s."""
        if self.seq <= after or self.frame is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._next.wait(), timeout)
        if self.seq > after and self.frame is not None:
            return self.seq, self.frame, self.captured_at
        return None

    async def _read(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            except OSError:
                await asyncio.sleep(RECONNECT_S)
                continue
            try:
                while True:
                    size, captured_at = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
                    if size > MAX_FRAME_BYTES:
                        log.warning("display_mirror_frame_too_large", size=size)
                        break
                    data = await reader.readexactly(size)
                    self.frame = data
                    self.captured_at = captured_at
                    self.seq += 1
                    self.frames_in += 1
                    self._next.set()
                    self._next = asyncio.Event()
            except (asyncio.IncompleteReadError, OSError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(RECONNECT_S)


async def mirror_stream(relay: MirrorRelay) -> AsyncGenerator[str, None]:
    """SSE: `frame` events (capture time and base64 JPEG), the newest each time the page is ready for one."""
    async with relay.watching():
        yield "retry: 1000\n\n"
        seq = 0
        while True:
            got = await relay.next_frame(seq, KEEPALIVE_S)
            if got is None:
                yield ": keep-alive\n\n"
                continue
            seq, data, captured_at = got
            frame = {"at": captured_at, "jpeg": base64.b64encode(data).decode("ascii")}
            yield f"event: frame\ndata: {json.dumps(frame)}\n\n"
