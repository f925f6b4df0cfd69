"""Camera -> face engine -> lane: one inference thread that always works on the newest frame.

The camera thread keeps only the newest frame; this worker takes it, runs the engine and posts one
`FaceObserved` per processed frame to the lane loop. When inference is slower than the camera, frames
are skipped (counted by the camera as dropped), never queued: a traveller is judged on what the camera
sees now, and the lane's latency stays bounded.

The last frame and its observations are kept in memory only, for the technician's `camera.snapshot`;
nothing here is written to disk.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog

from egate.drivers.camera import Camera
from egate.edge.lane.faces import frame_timings, lane_faces
from egate.edge.session.events import DeviceHealth, Event, FaceObserved
from egate.engines.pipeline import FaceEngine, FaceObservation
from egate.engines.quality import QualityThresholds

log = structlog.get_logger(__name__)

# A worker whose loop has not turned for this long is stuck (a hung backend), not merely idle: the
# loop turns at least once per camera wait (1 s) even when no frame arrives.
STUCK_AFTER_S = 30.0


@dataclass(frozen=True)
class LastFrame:
    image: np.ndarray
    observations: list[FaceObservation]
    at: float
    captured: float = 0.0  # the camera's timestamp of the frame (monotonic), before inference


class FaceWorker:
    """Runs `engine.analyze` on the newest camera frame, in its own thread, and posts the results."""

    def __init__(
        self,
        camera: Camera,
        engine: FaceEngine,
        thresholds: QualityThresholds,
        post: Callable[[Event], None],
        *,
        bystander_ratio: float = 0.5,
    ) -> None:
        self._camera = camera
        self._engine = engine
        self._thresholds = thresholds
        self._post = post
        self._bystander_ratio = bystander_ratio
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat = time.monotonic()
        self._last: LastFrame | None = None
        self._processed: deque[float] = deque(maxlen=64)
        self._stage_ms: dict[str, deque[float]] = {}
        self._engine_ok: bool | None = None
        self.errors = 0
        self.last_error: str | None = None
        self.last_inference_ms: float | None = None

    # ---- lifetime ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lane-faces", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("face_worker_stuck_on_close", timeout_s=timeout)
        self._thread = None

    # ---- what the daemon reads ----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stuck(self) -> bool:
        return self.alive and time.monotonic() - self._heartbeat > STUCK_AFTER_S

    def last_frame(self) -> LastFrame | None:
        return self._last

    def fps(self) -> float:
        times = list(self._processed)
        now = time.monotonic()
        recent = [t for t in times if now - t <= 5.0]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return round((len(recent) - 1) / (recent[-1] - recent[0]), 2)

    def stage_percentiles(self) -> dict[str, dict[str, float]]:
        """Per engine stage p50/p95/p99 in ms over the last frames (for the health topic)."""
        out: dict[str, dict[str, float]] = {}
        for stage, values in list(self._stage_ms.items()):
            data = np.asarray(list(values), dtype=np.float64)
            if data.size:
                p50, p95, p99 = np.percentile(data, [50, 95, 99])
                out[stage] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2)}
        return out

    # ---- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        seq: int | None = None
        while not self._stop.is_set():
            self._heartbeat = time.monotonic()
            frame = self._camera.latest(after_seq=seq, timeout=1.0)
            if frame is None:
                continue
            seq = frame.seq
            t0 = time.perf_counter()
            try:
                observations = self._engine.analyze(frame.image)
            except Exception as exc:  # a backend failure takes the lane out of service, not the daemon down
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("face_engine_failed", errors=self.errors)
                self._engine_health(False, f"inference failed: {self.last_error}")
                self._stop.wait(min(5.0, 0.2 * self.errors))
                continue
            elapsed_ms = (time.perf_counter() - t0) * 1e3
            self.last_inference_ms = round(elapsed_ms, 2)
            self._engine_health(True, "")
            self._processed.append(time.monotonic())
            timings = frame_timings(observations)
            timings["frame"] = round(elapsed_ms, 3)
            for stage, ms in timings.items():
                self._stage_ms.setdefault(stage, deque(maxlen=256)).append(ms)
            self._last = LastFrame(frame.image, observations, time.monotonic(), frame.timestamp)
            faces = lane_faces(
                observations,
                self._thresholds,
                bystander_ratio=self._bystander_ratio,
                frame_width=int(frame.image.shape[1]),
            )
            self._post(FaceObserved(faces=faces, frame_seq=frame.seq, frame_time=frame.timestamp, timings_ms=timings))

    def _engine_health(self, ok: bool, reason: str) -> None:
        if ok is self._engine_ok:
            return
        self._engine_ok = ok
        self._post(DeviceHealth("engine", ok, reason))
