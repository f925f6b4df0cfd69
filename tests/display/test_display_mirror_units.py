"""The camera mirror without a browser: the config rules (`egate config check`), the daemon's mirror socket
with a real client on a real UNIX socket (downscaled JPEG, frames only while someone watches, at most
`fps`, a slow client skipped instead of buffered, a client that talks dropped), and the display's relay."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from egate.edge.display.mirror import FRAME_HEADER, MirrorFeed, MirrorFrame
from egate.edge.display.mirror_relay import MirrorRelay, mirror_stream
from egate.edge.settings import load_settings
from egate.edge.settings.display import DisplayConfig
from tests.shared_data import shared_data

REPO = Path(__file__).resolve().parents[2]
PHOTO = "faces/lfw_krasserm/Colin_Powell/Colin_Powell_0001.jpg"


class FrameSource:
    """A camera that has a new analysed frame at every call (the worst case for the rate limit)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> MirrorFrame:
        with self.lock:
            self.calls += 1
            return MirrorFrame(key=float(self.calls), image=self.image, captured_at=time.time())


@pytest.fixture
def camera_image() -> np.ndarray:
    photo = cv2.imread(str(shared_data(PHOTO)), cv2.IMREAD_COLOR)
    assert photo is not None
    return cv2.resize(photo, (640, 480), interpolation=cv2.INTER_CUBIC)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="egate-mirror-") as d:  # sun_path is short: not under tmp_path
        yield Path(d)


def _connect(path: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(os.fsencode(path))
    return conn


def _read_frame(conn: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = conn.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    size, _captured_at = FRAME_HEADER.unpack(exactly(FRAME_HEADER.size))
    return exactly(size)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------ config


def _check(tmp_path: Path, display: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "egate.toml"
    config.write_text(f'schema_version = 1\n[gate]\nsite_id = "s"\ngate_id = "g"\n{display}')
    return subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "config", "check", str(config), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_config_check_refuses_a_mirror_that_could_leave_loopback(tmp_path: Path) -> None:
    # The default: no mirror.
    assert DisplayConfig().mirror.enabled is False
    # A host name may resolve anywhere (/etc/hosts, DNS): with the mirror on, only a literal loopback address.
    refused = _check(tmp_path, '[display]\nhost = "localhost"\n[display.mirror]\nenabled = true\n')
    assert refused.returncode == 2, refused.stdout + refused.stderr
    result = json.loads(refused.stdout)
    assert result["valid"] is False
    assert any("literal loopback" in e["message"] for e in result["errors"]), result
    # The same host without the mirror is fine (the page itself carries no camera picture).
    assert DisplayConfig.model_validate({"host": "localhost"}).host == "localhost"
    accepted = tmp_path / "accepted.toml"
    accepted.write_text(
        '[gate]\nsite_id = "s"\ngate_id = "g"\n[display]\nhost = "127.0.0.1"\n[display.mirror]\nenabled = true\n'
    )
    assert load_settings(accepted, environ={}).display.mirror.enabled is True
    with pytest.raises(ValidationError, match="loopback"):
        DisplayConfig.model_validate({"host": "10.0.0.5", "mirror": {"enabled": True}})
    with pytest.raises(ValidationError, match="must differ"):
        DisplayConfig.model_validate(
            {"feed_socket": "/run/egate/x.sock", "mirror": {"enabled": True, "socket": "/run/egate/x.sock"}}
        )
    with pytest.raises(ValidationError):
        DisplayConfig.model_validate({"mirror": {"enabled": True, "fps": 60}})
    cfg = DisplayConfig.model_validate({"feed_socket": "/run/egate/display.sock", "mirror": {"enabled": True}})
    assert cfg.mirror_socket() == Path("/run/egate/display-mirror.sock")


# ------------------------------------------------------------------------------------------ daemon side


@contextlib.contextmanager
def _mirror(short_dir: Path, source: FrameSource, **kwargs: float) -> Iterator[MirrorFeed]:
    feed = MirrorFeed(short_dir / "mirror.sock", None, source, **kwargs)  # type: ignore[arg-type]
    feed.start()
    try:
        yield feed
    finally:
        feed.close()


def test_frames_are_downscaled_jpeg_taken_only_while_watched_and_rate_limited(
    short_dir: Path, camera_image: np.ndarray
) -> None:
    source = FrameSource(camera_image)
    with _mirror(short_dir, source, fps=10.0, width=320) as feed:
        mode = stat.S_IMODE(os.stat(feed.socket_path).st_mode)
        assert mode == 0o600  # no group configured: the owner only
        # Nobody connected: the camera's frames are not even looked at.
        assert feed.health().ok and source.calls == 0
        conn = _connect(feed.socket_path)
        began = time.monotonic()
        frames = [_read_frame(conn) for _ in range(5)]
        elapsed = time.monotonic() - began
        image = cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[:2] == (240, 320)  # 640x480 -> 320 wide, same aspect
        # At most fps frames a second, however fast the camera (an upper bound: a busy CPU only lowers it).
        assert len(frames) - 1 <= 10.0 * elapsed + 1
        conn.close()
        _wait(lambda: not feed._clients, 10, "the closed client dropped")
        calls = source.calls
        # Nobody watching again: no more frames taken (a few turns of the loop prove it, not a sleep).
        second = _connect(feed.socket_path)
        second.close()
        _wait(lambda: feed.connections == 2 and not feed._clients, 10, "the second client gone")
        assert source.calls - calls <= 2
    assert not feed.socket_path.exists()


def test_a_slow_client_gets_skipped_frames_not_a_growing_buffer(short_dir: Path, camera_image: np.ndarray) -> None:
    noisy = np.random.default_rng(1).integers(0, 255, camera_image.shape, dtype=np.uint8)  # big JPEGs
    with _mirror(short_dir, FrameSource(noisy), fps=15.0, width=960, jpeg_quality=90) as feed:
        conn = _connect(feed.socket_path)  # never reads
        _wait(lambda: feed.dropped >= 3, 30, "frames dropped for the client that does not read")
        # Memory: at most one frame waits per client.
        packet = max(len(b) for b in feed._clients.values())
        assert packet <= FRAME_HEADER.size + 1024 * 1024
        # It is still served once it reads again: the next whole frame.
        frame = _read_frame(conn)
        assert cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR) is not None
        conn.close()


def test_a_client_that_sends_anything_is_dropped(short_dir: Path, camera_image: np.ndarray) -> None:
    with _mirror(short_dir, FrameSource(camera_image), fps=5.0) as feed:
        conn = _connect(feed.socket_path)
        _read_frame(conn)
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        _wait(lambda: not feed._clients, 10, "the talking client dropped")
        with pytest.raises((ConnectionError, OSError)):
            while True:
                _read_frame(conn)
        conn.close()


# ------------------------------------------------------------------------------------------ display side


def test_relay_reads_the_daemon_only_while_a_page_watches(short_dir: Path, camera_image: np.ndarray) -> None:
    source = FrameSource(camera_image)
    with _mirror(short_dir, source, fps=10.0, width=320) as feed:

        async def run() -> list[bytes]:
            relay = MirrorRelay(feed.socket_path)
            stream = mirror_stream(relay)
            got: list[bytes] = []
            async for chunk in stream:
                if chunk.startswith("event: frame"):
                    frame = json.loads(chunk.split("data: ", 1)[1])
                    assert abs(frame["at"] - time.time()) < 60  # the camera's capture time, wall clock
                    got.append(base64.b64decode(frame["jpeg"]))
                    if len(got) == 3:
                        break
            assert relay.watchers == 1
            await stream.aclose()  # the page went away
            assert relay.watchers == 0 and relay.frame is None
            return got

        frames = asyncio.run(run())
        decoded = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]
        assert all(image is not None and image.shape[1] == 320 for image in decoded)
        _wait(lambda: not feed._clients, 10, "the relay's connection closed once nobody watches")


def test_a_mirror_group_that_does_not_exist_is_a_clear_start_error(tmp_path: Path) -> None:
    from egate.edge.service.daemon import StartError

    feed = MirrorFeed(tmp_path / "mirror.sock", "egate-no-such-group", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(StartError, match=r"'egate-no-such-group'.*does not exist"):
        feed.start()
    assert not (tmp_path / "mirror.sock").exists()  # nothing made before the group was known
