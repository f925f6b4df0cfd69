"""The daemon's side of the camera mirror: downscaled JPEG frames on a write-only UNIX socket.

The daemon stays the camera's only reader: the frames are the ones the face engine just analysed
(`FaceWorker.last_frame`, in memory), taken at most `fps` times a second and only while a client is
connected (the display process connects only while a page shows a positioning screen). Nothing is
written anywhere: a frame is encoded in memory, sent, and forgotten; logs carry counters only.

A client that has not taken the previous frame does not get the next one (dropped, counted): memory
stays at one frame per client and a slow screen never slows the lane. Clients must send nothing: a
client that sends a byte or hangs up is dropped. Wire format: a 4-byte big-endian length and the
frame's capture time (8-byte big-endian double, Unix seconds, for the screen's latency figures), then
the JPEG bytes.

The socket is bound under a temporary name, given its mode and group, then renamed into place (as the
feed socket).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog

from egate.edge.service.daemon import Health, StartError
from egate.edge.service.unix_socket import group_id, is_live, listen_unix

log = structlog.get_logger(__name__)

MAX_CLIENTS = 2
FRAME_HEADER = struct.Struct(">Id")  # JPEG length, capture time
MAX_FRAME_BYTES = 1024 * 1024  # a 960-px JPEG is far below this; the reader refuses anything larger
POLL_S = 0.01  # how often a new analysed frame is looked for while a client watches (an attribute read)


@dataclass(frozen=True)
class MirrorFrame:
    key: float  # changes with every new frame (the face worker's analysis time)
    image: np.ndarray  # BGR, as the camera gave it
    captured_at: float  # wall time (Unix seconds) the camera took it


# The newest analysed frame, or None when there is none.
FrameSource = Callable[[], "MirrorFrame | None"]


def encode_frame(image: np.ndarray, width: int, quality: int) -> bytes:
    """The frame downscaled to `width` (never upscaled) as JPEG bytes, in memory."""
    height, src_width = image.shape[:2]
    if src_width > width:
        image = cv2.resize(image, (width, round(height * width / src_width)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data)


class MirrorFeed:
    """Daemon component: serves the newest analysed camera frame to the display process, rate-limited."""

    name = "display_mirror"

    def __init__(
        self,
        socket_path: Path,
        group: str | None,
        frames: FrameSource,
        *,
        fps: float = 8.0,
        width: int = 480,
        jpeg_quality: int = 70,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.group = group or None
        self._frames = frames
        self._period = 1.0 / fps
        self._width = width
        self._quality = jpeg_quality
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._clients: dict[socket.socket, bytearray] = {}
        self.sent = 0
        self.dropped = 0
        self.connections = 0

    # ---- component -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MirrorFeed.start() called twice")
        try:
            gid = group_id(self.group)
        except KeyError:
            raise StartError(f"display mirror: group {self.group!r} (display.feed_group) does not exist") from None
        path = self.socket_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if path.is_socket() or path.exists():
                self._replace_stale()
            listener = listen_unix(path, gid, MAX_CLIENTS)
        except OSError as exc:
            raise StartError(
                f"display mirror: cannot create {path} ({exc.strerror}): set display.mirror.socket to a writable "
                "place or display.mirror.enabled = false"
            ) from None
        listener.setblocking(False)
        self._listener = listener
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="display-mirror", daemon=True)
        self._thread.start()
        log.info("display_mirror_listening", socket=str(path), fps=round(1 / self._period, 2), width=self._width)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for conn in list(self._clients):
            conn.close()
        self._clients.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def health(self) -> Health:
        if self._thread is None or not self._thread.is_alive():
            return Health(False, "camera mirror thread not running: restart egate for the mirror on the screen")
        return Health(True, f"{len(self._clients)} mirror client(s); {self.sent} frames sent, {self.dropped} dropped")

    # ---- set-up helpers ------------------------------------------------------------------------

    def _replace_stale(self) -> None:
        if is_live(self.socket_path):
            raise StartError(f"display mirror: another egate daemon already serves {self.socket_path}")
        self.socket_path.unlink()  # left by a killed daemon

    # ---- the mirror thread ---------------------------------------------------------------------

    def _run(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        next_frame = time.monotonic()
        last_at: float | None = None
        try:
            while not self._stop.is_set():
                if not self._clients:
                    wait = 0.25  # nobody watching: no frame is taken or encoded
                elif any(self._clients.values()):
                    wait = POLL_S  # a client is still taking a frame
                else:
                    # Look for the engine's next frame every POLL_S once the rate allows one: a frame goes out
                    # within POLL_S of its analysis instead of waiting for a fixed tick.
                    wait = max(0.0, next_frame - time.monotonic()) or POLL_S
                for key, _ in sel.select(wait):
                    if key.fileobj is self._listener:
                        self._accept(sel)
                    else:
                        # A client never sends: a byte or end of stream means it is gone or misbehaving.
                        self._drop(sel, key.fileobj, "sent data or hung up")  # type: ignore[arg-type]
                now = time.monotonic()
                if self._clients and now >= next_frame:
                    offered = self._offer(last_at)
                    if offered != last_at:
                        next_frame = now + self._period
                    last_at = offered
                self._flush(sel)
        except Exception:
            log.exception("display_mirror_failed")
        finally:
            sel.close()

    def _offer(self, last_at: float | None) -> float | None:
        frame = self._frames()
        if frame is None or frame.key == last_at:
            return last_at
        try:
            data = encode_frame(frame.image, self._width, self._quality)
        except (ValueError, cv2.error) as exc:
            log.warning("display_mirror_encode_failed", error=type(exc).__name__)
            return frame.key
        packet = FRAME_HEADER.pack(len(data), frame.captured_at) + data
        for buf in self._clients.values():
            if buf:
                self.dropped += 1  # still sending the previous frame: this one is skipped
            else:
                buf += packet
                self.sent += 1
        return frame.key

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._clients) >= MAX_CLIENTS:
            conn.close()
            return
        conn.setblocking(False)
        self._clients[conn] = bytearray()
        sel.register(conn, selectors.EVENT_READ)
        self.connections += 1
        log.info("display_mirror_client_connected", clients=len(self._clients))

    def _flush(self, sel: selectors.BaseSelector) -> None:
        for conn, buf in list(self._clients.items()):
            try:
                while buf:
                    sent = conn.send(buf)
                    del buf[:sent]
            except BlockingIOError:
                pass
            except OSError:
                self._drop(sel, conn, "gone")

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket, why: str) -> None:
        if self._clients.pop(conn, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        conn.close()
        log.info("display_mirror_client_dropped", why=why, clients=len(self._clients))
