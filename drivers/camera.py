"""Camera capture: one thread per camera that keeps only the newest frame.

Sources (by `CameraConfig.kind`): a V4L2 device, a GStreamer pipeline (Jetson CSI cameras through
`nvarguscamerasrc`, see `jetson_csi_pipeline`), an RTSP URL, a video or GIF file, or a folder of images.
The consumer asks `latest(after_seq, timeout)` for a frame newer than the one it already has; frames it
did not take in time are counted as dropped, never queued. A lost source is reopened with exponential
backoff; the state and counters are in `stats()`, and `on_state` tells the daemon when the camera goes
down or comes back.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
import structlog
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from egate.drivers.credentials import CREDENTIAL_NAME_PATTERN

log = structlog.get_logger(__name__)

SourceKind = Literal["v4l2", "gstreamer", "rtsp", "file", "folder"]
CameraState = Literal["stopped", "connecting", "streaming", "reconnecting", "ended", "closed"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


class CameraConfig(BaseModel):
    """`[camera]` config section."""

    model_config = ConfigDict(extra="forbid")

    kind: SourceKind = Field(
        "v4l2",
        description="Source: v4l2 (USB/CSI device via V4L2), gstreamer (a pipeline ending in appsink, e.g. "
        "Jetson CSI through nvarguscamerasrc), rtsp (IP camera URL), file (video or GIF), folder (images, "
        "played in name order).",
    )
    location: str = Field(
        "0",
        min_length=1,
        max_length=4096,
        description="v4l2: device index ('0') or path ('/dev/video0'); gstreamer: the pipeline string; "
        "rtsp: rtsp:// or rtsps:// URL (no password here: use `credential`); file/folder: a path.",
    )
    credential: str | None = Field(
        None,
        pattern=CREDENTIAL_NAME_PATTERN,
        description="rtsp only: name of a systemd credential holding 'user:password' for the URL.",
    )
    pacing: Literal["realtime", "fast", "lockstep"] = Field(
        "realtime",
        description="file/folder only. realtime: at the source's frame rate (like a live camera); fast: as "
        "fast as the source decodes (the consumer sees the newest, the rest count as dropped); lockstep: "
        "the next frame is read only after the consumer took the previous one (no drops; for benchmarks "
        "and tests). Live sources are always paced by the device.",
    )
    loop: bool = Field(False, description="file/folder only: start again at the end instead of ending.")
    width: int = Field(0, ge=0, le=8192, description="Requested frame width in pixels; 0 = source default.")
    height: int = Field(0, ge=0, le=8192, description="Requested frame height in pixels; 0 = source default.")
    fps: float = Field(
        0.0,
        ge=0.0,
        le=240.0,
        description="Requested frame rate (v4l2), or playback rate for file/folder in realtime pacing; "
        "0 = the source's own rate (10 fps for folders).",
    )
    fourcc: str = Field(
        "",
        pattern=r"^([A-Za-z0-9 ]{4})?$",
        description="v4l2 only: pixel format to request, e.g. 'MJPG' for high resolutions over USB 2.",
    )
    open_timeout_s: float = Field(10.0, gt=0.0, le=120.0, description="rtsp: give up opening after this long.")
    read_timeout_s: float = Field(
        5.0, gt=0.0, le=120.0, description="rtsp: a read that gets no frame this long counts as a lost camera."
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0.0, le=60.0, description="First wait before reopening a lost source; doubles on each failure."
    )
    reconnect_max_s: float = Field(10.0, gt=0.0, le=600.0, description="Longest wait between reopen attempts.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"camera.reconnect_max_s ({self.reconnect_max_s}) is below camera.reconnect_initial_s "
                f"({self.reconnect_initial_s}); make the maximum at least the initial wait"
            )
        if (self.width == 0) != (self.height == 0):
            raise ValueError("camera.width and camera.height go together: set both, or leave both 0")
        if self.kind == "rtsp" and not self.location.startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"camera.location must be an rtsp:// or rtsps:// URL for kind rtsp, got {self.location!r}")
        if self.kind == "rtsp" and "@" in self.location.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError(
                "camera.location must not carry user:password (secrets never in config); "
                "put 'user:password' in a credential file and name it in camera.credential"
            )
        if self.credential is not None and self.kind != "rtsp":
            raise ValueError("camera.credential is only used with kind rtsp; remove it")
        if self.kind == "gstreamer" and "appsink" not in self.location:
            raise ValueError("camera.location (a GStreamer pipeline) must end in an appsink element")
        if self.kind == "v4l2" and not (self.location.isdigit() or self.location.startswith("/dev/")):
            raise ValueError(
                f"camera.location for kind v4l2 must be a device index like '0' or a path like "
                f"'/dev/video0', got {self.location!r}"
            )
        return self


def jetson_csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30) -> str:
    """A GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc -> BGR appsink keeping one buffer)."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


@dataclass(frozen=True)
class Frame:
    seq: int  # 1, 2, 3... across reconnects, never reused
    timestamp: float  # time.monotonic() when the frame was read from the source
    image: NDArray[np.uint8]  # BGR, H x W x 3


class CameraStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: SourceKind
    state: CameraState
    frames: int = Field(description="Frames read from the source since start.")
    delivered: int = Field(description="Frames handed to the consumer by latest().")
    dropped: int = Field(description="Frames replaced by a newer one before the consumer took them.")
    fps: float = Field(description="Frames per second read from the source over the last ~2 s.")
    reconnects: int = Field(description="Successful reopenings after a loss.")
    reconnect_attempts: int = Field(description="Failed attempts to open the source.")
    last_error: str | None = None
    width: int = 0
    height: int = 0


class CameraOpenError(RuntimeError):
    """The source could not be opened; the message says which and what to check."""


class _Source(Protocol):
    finite: bool  # a recording (file/folder) rather than a live device
    native_fps: float

    def read(self) -> NDArray[np.uint8] | None:
        """The next frame, or None: end of a finite source (`ended` True) or a read failure."""
        ...

    @property
    def ended(self) -> bool: ...

    def close(self) -> None: ...


class _CvSource:
    """cv2.VideoCapture over a device, pipeline, URL or file."""

    def __init__(self, cfg: CameraConfig, credential: bytes | None) -> None:
        self.finite = cfg.kind == "file"
        self._ended = False
        self._frames = 0
        location = cfg.location
        params: list[int] = []
        if cfg.kind == "v4l2":
            device: int | str = int(location) if location.isdigit() else location
            self._cap = cv2.VideoCapture(device, cv2.CAP_V4L2)  # type: ignore[call-overload]
            if cfg.fourcc:
                self._cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
            if cfg.width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                self._cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            # The driver's own queue would add latency: keep one buffer (honoured by V4L2).
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        elif cfg.kind == "gstreamer":
            if not _has_gstreamer():
                raise CameraOpenError(
                    "this OpenCV build has no GStreamer support (cv2.getBuildInformation: GStreamer NO); "
                    "on Jetson use the JetPack OpenCV, or use kind v4l2"
                )
            self._cap = cv2.VideoCapture(location, cv2.CAP_GSTREAMER)
        elif cfg.kind == "rtsp":
            if credential:
                scheme, rest = location.split("//", 1)
                location = f"{scheme}//{credential.decode().strip()}@{rest}"
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                int(cfg.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                int(cfg.read_timeout_s * 1000),
            ]
            self._cap = cv2.VideoCapture(location, cv2.CAP_FFMPEG, params)
        else:
            path = Path(location)
            if not path.is_file():
                raise CameraOpenError(f"camera.location {location!r}: no such video file")
            self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise CameraOpenError(f"could not open {cfg.kind} source {_safe_location(cfg)!r}")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.native_fps = fps if 0.5 <= fps <= 240 else 25.0

    @property
    def ended(self) -> bool:
        return self._ended

    def read(self) -> NDArray[np.uint8] | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            # A file that gave frames and then none has ended; a file that gives none at all is broken.
            self._ended = self.finite and self._frames > 0
            return None
        self._frames += 1
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(image)

    def close(self) -> None:
        self._cap.release()


class _FolderSource:
    """Images in a folder, in name order. Files are read one at a time, so a folder that disappears
    mid-run behaves like a camera that was unplugged."""

    finite = True

    def __init__(self, cfg: CameraConfig) -> None:
        folder = Path(cfg.location)
        if not folder.is_dir():
            raise CameraOpenError(f"camera.location {cfg.location!r}: no such folder")
        self._files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraOpenError(f"camera.location {cfg.location!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        self._next = 0
        self._ended = False
        self.native_fps = 10.0

    @property
    def ended(self) -> bool:
        return self._ended

    def read(self) -> NDArray[np.uint8] | None:
        if self._next >= len(self._files):
            self._ended = True
            return None
        path = self._files[self._next]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("camera_image_unreadable", path=str(path))
            return None  # file gone or corrupt: a read failure, not the end
        return np.ascontiguousarray(image)

    def close(self) -> None:
        self._files = []


def _has_gstreamer() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def _safe_location(cfg: CameraConfig) -> str:
    return cfg.location if cfg.kind != "rtsp" else cfg.location.split("?", 1)[0]


class Camera:
    """One capture thread; `latest()` hands out the newest frame. Use `with Camera(cfg) as cam:` or
    `start()` / `close()`."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        credential: bytes | None = None,
        on_state: Callable[[CameraState, str | None], None] | None = None,
        name: str = "camera",
    ) -> None:
        if config.kind == "rtsp" and config.credential is not None and credential is None:
            raise ValueError(
                f"camera.credential names {config.credential!r}: pass its bytes as `credential` "
                "(egate.edge.service.secrets.read_credential)"
            )
        self._cfg = config
        self._credential = credential
        self._on_state = on_state
        self._name = name
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame: Frame | None = None
        self._frame_taken = True
        self._seq = 0
        self._state: CameraState = "stopped"
        self._delivered = 0
        self._dropped = 0
        self._reconnects = 0
        self._attempts = 0
        self._last_error: str | None = None
        self._times: deque[float] = deque(maxlen=64)
        self._size = (0, 0)
        self._log = log.bind(camera=name, kind=config.kind)

    # ---- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._set_state("connecting", None)
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-capture", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 3.0) -> None:
        """Stop the capture thread and release the device. Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                # A live source's read() can block inside the driver; the thread is a daemon and exits
                # with the process; we only report it.
                self._log.warning("camera_thread_stuck_on_close", timeout_s=timeout)
            self._thread = None
        self._set_state("closed", None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- consumer side -------------------------------------------------------------------------

    def latest(self, after_seq: int | None = None, timeout: float = 1.0) -> Frame | None:
        """The newest frame with seq > after_seq (any frame if None), waiting up to `timeout` seconds.

        None when no such frame arrived in time (camera lost, ended or closed: see `stats()`).
        """
        threshold = after_seq if after_seq is not None else 0
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frame = self._frame
                if frame is not None and frame.seq > threshold:
                    if not self._frame_taken:
                        self._frame_taken = True
                        self._delivered += 1
                        self._cond.notify_all()  # lockstep: the reader may fetch the next frame
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set() or self._state == "ended":
                    return None
                self._cond.wait(remaining)

    def stats(self) -> CameraStats:
        with self._cond:
            times = list(self._times)
            now = time.monotonic()
            recent = [t for t in times if now - t <= 2.0]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
            return CameraStats(
                kind=self._cfg.kind,
                state=self._state,
                frames=self._seq,
                delivered=self._delivered,
                dropped=self._dropped,
                fps=round(fps, 2),
                reconnects=self._reconnects,
                reconnect_attempts=self._attempts,
                last_error=self._last_error,
                width=self._size[0],
                height=self._size[1],
            )

    @property
    def state(self) -> CameraState:
        return self._state

    # ---- capture thread --------------------------------------------------------------------------

    def _open(self) -> _Source:
        if self._cfg.kind == "folder":
            return _FolderSource(self._cfg)
        return _CvSource(self._cfg, self._credential)

    def _run(self) -> None:
        cfg = self._cfg
        backoff = cfg.reconnect_initial_s
        source: _Source | None = None
        ever_opened = False
        lost = False
        next_due = 0.0
        try:
            while not self._stop.is_set():
                if source is None:
                    try:
                        source = self._open()
                    except Exception as exc:  # any open failure is a lost camera, retried with backoff
                        self._attempts += 1
                        lost = lost or ever_opened
                        self._set_state("reconnecting" if ever_opened else "connecting", str(exc))
                        self._log.warning("camera_open_failed", error=str(exc), retry_in_s=backoff)
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, cfg.reconnect_max_s)
                        continue
                    if lost:
                        self._reconnects += 1
                        self._log.info("camera_reconnected", reconnects=self._reconnects)
                    ever_opened = True
                    lost = False
                image = source.read()
                if image is None:
                    ended = source.ended
                    source.close()
                    source = None
                    if ended and cfg.loop:
                        continue  # reopen: a removed file shows up as a loss at the loop point
                    if ended:
                        self._set_state("ended", None)
                        self._log.info("camera_source_ended", frames=self._seq)
                        return
                    lost = True
                    self._set_state("reconnecting", "no frame from source")
                    self._log.warning("camera_lost", retry_in_s=backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, cfg.reconnect_max_s)
                    continue
                backoff = cfg.reconnect_initial_s
                if source.finite and cfg.pacing == "realtime":
                    now = time.monotonic()
                    if next_due > now:
                        self._stop.wait(next_due - now)
                    # Paced from the actual publish time: a late frame is never followed by a burst.
                    next_due = time.monotonic() + 1.0 / (cfg.fps or source.native_fps)
                if source.finite and cfg.pacing == "lockstep":
                    with self._cond:
                        self._cond.wait_for(lambda: self._frame_taken or self._stop.is_set())
                self._publish(image)
        finally:
            if source is not None:
                source.close()

    def _publish(self, image: NDArray[np.uint8]) -> None:
        now = time.monotonic()
        with self._cond:
            if not self._frame_taken:
                self._dropped += 1
            self._seq += 1
            self._frame = Frame(self._seq, now, image)
            self._frame_taken = False
            self._times.append(now)
            self._size = (int(image.shape[1]), int(image.shape[0]))
            self._cond.notify_all()
        if self._state != "streaming":
            self._set_state("streaming", None)

    def _set_state(self, state: CameraState, error: str | None) -> None:
        with self._cond:
            changed = state != self._state
            self._state = state
            if error is not None:
                self._last_error = error
            self._cond.notify_all()
        if changed and self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception:
                self._log.exception("camera_on_state_callback_failed")
