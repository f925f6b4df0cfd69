"""The face pipeline: detect -> 5 landmarks -> aligned chip -> 128-D descriptor, per face.

`FaceEngine.analyze` serves live camera frames (every face, largest first, so the lane can ask for
one person at a time); `FaceEngine.enroll` serves the still photos ops and documents provide
(grayscale scans, tight crops where the face fills the image, photos of several thousand pixels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import structlog

from egate.engines.alignment import face_chip
from egate.engines.backends.base import Session
from egate.engines.backends.registry import backend_class, create_backend, load_session
from egate.engines.config import EngineConfig
from egate.engines.detector import BlazeFaceDetector, Detection, Variant
from egate.engines.embedder import Embedder
from egate.engines.landmarks import LandmarkPredictor, map_detector_box
from egate.engines.models import Manifest, Role, load_manifest
from egate.engines.quality import FaceQuality, assess

log = structlog.get_logger(__name__)

# Detection runs on at most this many pixels on the long side for still photos: BlazeFace sees a
# 128 px square anyway, and resizing a 6000 px scan costs more than the whole rest of the pipeline.
# Landmarks and the chip still use the full-resolution image (dlib's pyramid handles the scale).
ENROLL_DETECT_MAX_SIDE = 1280
# Widest border (fraction of the long side) tried when no face is found in a still photo: BlazeFace
# misses faces that fill the frame, as in document photos cropped to the head (ICAO 9303-3 portrait).
ENROLL_MAX_PAD = 0.6


@dataclass(frozen=True)
class FaceObservation:
    """One face as the pipeline saw it. `descriptor` is a biometric template: never log it."""

    box_xyxy: tuple[float, float, float, float]
    det_score: float
    landmarks5: np.ndarray = field(repr=False)
    quality: FaceQuality
    descriptor: np.ndarray = field(repr=False)
    model_id: str
    timings_ms: dict[str, float]

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box_xyxy
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """RGB uint8 from BGR, BGRA or grayscale uint8 (what OpenCV decodes photos and frames to)."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"image must be H x W (gray), H x W x 3 (BGR) or H x W x 4 (BGRA), got {image.shape}")


def _scaled(det: Detection, factor: float) -> Detection:
    x1, y1, x2, y2 = det.box_xyxy
    return Detection(
        box_xyxy=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
        score=det.score,
        keypoints6=(det.keypoints6 * factor).astype(np.float32),
    )


class FaceEngine:
    """Owns the three model sessions; not thread-safe (one engine per inference worker)."""

    def __init__(
        self,
        detector: BlazeFaceDetector,
        landmarks: LandmarkPredictor,
        embedder: Embedder,
        *,
        model_id: str,
        threshold: float,
        min_face_px: float = 0.0,
        retry_pad: float = 0.25,
    ) -> None:
        self.detector = detector
        self.min_face_px = min_face_px
        # Still photos: plain, then inside a border (config), then a wider one for head-only crops.
        self.enroll_pads = (0.0, retry_pad, max(retry_pad, ENROLL_MAX_PAD)) if retry_pad > 0 else (0.0,)
        self.landmarks = landmarks
        self.embedder = embedder
        self.model_id = model_id
        self.threshold = threshold
        self.configured_backend = ""

    def backend_status(self) -> dict[str, str | None]:
        """Which backend runs the models now and, when it is not the configured one, why.

        `running` is a single name when both models agree, else "detector:embedder" names; a GPU error
        at run time moves a model to the CPU, and this is how health and `egate diag` learn of it.
        """
        det, emb = self.detector.session, self.embedder.session
        names = {det.backend_name, emb.backend_name}
        running = names.pop() if len(names) == 1 else f"{det.backend_name}:{emb.backend_name}"
        reason = det.fallback_reason or emb.fallback_reason
        return {"configured": self.configured_backend or running, "running": running, "fallback_reason": reason}

    @classmethod
    def from_config(
        cls, config: EngineConfig, model_dir: Path, *, detector_variant: Variant | None = None
    ) -> FaceEngine:
        """Load the models listed in `model_dir`'s manifest on the configured backend."""
        manifest: Manifest = load_manifest(model_dir)
        if manifest.model_id is None:
            raise RuntimeError(
                f"model cache {model_dir} has no converted embedder (model_id is empty); "
                f"run `egate models build --dir {model_dir}`"
            )
        variant: Variant = detector_variant or config.detector_variant
        role: Role = "detector_full" if variant == "full" else "detector_short"
        settings = config.backend_settings()
        backend = create_backend(config.backend, config.fallback_backend, settings=settings, model_dir=model_dir)
        # Set when the configured backend cannot run here at all (create_backend chose the fallback).
        unavailable = None if backend.name == config.backend else backend_class(config.backend).unavailable_reason()
        sessions: list[Session] = []
        try:
            det_session = load_session(
                backend,
                manifest.path(model_dir, role),
                threads=config.threads,
                fallback=config.fallback_backend,
                settings=settings,
            )
            sessions.append(det_session)
            emb_session = load_session(
                backend,
                manifest.path(model_dir, "embedder"),
                threads=config.threads,
                fallback=config.fallback_backend,
                settings=settings,
            )
            sessions.append(emb_session)
            engine = cls(
                BlazeFaceDetector(det_session, variant, min_score=config.detector_min_score),
                LandmarkPredictor(manifest.path(model_dir, "landmarks5")),
                Embedder(emb_session),
                model_id=manifest.model_id,
                threshold=manifest.embedder.threshold,
                min_face_px=config.min_face_px,
                retry_pad=config.detector_retry_pad,
            )
            engine.configured_backend = config.backend
            for session in sessions:
                session.backend_name = session.backend_name or backend.name
                if unavailable is not None and session.fallback_reason is None:
                    session.fallback_reason = f"{config.backend} unavailable: {unavailable}"
        except BaseException:
            for s in sessions:
                s.close()
            raise
        log.info(
            "face_engine_ready", backend=backend.name, detector=variant, model_id=manifest.model_id,
            threshold=manifest.embedder.threshold,
        )  # fmt: skip
        return engine

    # ------------------------------------------------------------------ per face

    def _observe(self, rgb: np.ndarray, original: np.ndarray, det: Detection, detect_ms: float) -> FaceObservation:
        t0 = time.perf_counter()
        box = map_detector_box(det.box_xyxy, det.keypoints6)
        points = self.landmarks.predict(rgb, box)
        t1 = time.perf_counter()
        chip = face_chip(rgb, points)
        t2 = time.perf_counter()
        descriptor = self.embedder.embed(chip)
        t3 = time.perf_counter()
        # quality.assess reads BGR or grey (its grey conversion weights assume BGR order).
        quality = assess(original[:, :, :3] if original.ndim == 3 else original, det.box_xyxy, points, det.score)
        t4 = time.perf_counter()
        return FaceObservation(
            box_xyxy=det.box_xyxy,
            det_score=det.score,
            landmarks5=points,
            quality=quality,
            descriptor=descriptor,
            model_id=self.model_id,
            timings_ms={
                "detect": detect_ms,
                "landmarks": (t1 - t0) * 1e3,
                "align": (t2 - t1) * 1e3,
                "embed": (t3 - t2) * 1e3,
                "quality": (t4 - t3) * 1e3,
            },
        )

    # ------------------------------------------------------------------ public

    def analyze(self, frame_bgr: np.ndarray) -> list[FaceObservation]:
        """Every face in a camera frame (BGR, BGRA or gray uint8), largest first.

        Faces narrower than `engine.min_face_px` (people far behind the one at the gate) are left out.
        """
        rgb = _to_rgb(frame_bgr)
        t0 = time.perf_counter()
        detections = [d for d in self.detector.detect(rgb) if d.width >= self.min_face_px]
        detect_ms = (time.perf_counter() - t0) * 1e3
        detections.sort(key=lambda d: d.width * d.height, reverse=True)
        return [self._observe(rgb, frame_bgr, d, detect_ms) for d in detections]

    def enroll(self, image_bgr: np.ndarray) -> FaceObservation | None:
        """The largest face of a still photo, or None when no face is found.

        Grayscale is expanded to RGB (the ResNet sees equal channels, as dlib does for gray input);
        photos larger than ENROLL_DETECT_MAX_SIDE are detected on a downscaled copy and landmarked
        and aligned on the full resolution; when nothing is found a black border is added and the
        detector runs again (tight crops).
        """
        rgb = _to_rgb(image_bgr)
        h, w = rgb.shape[:2]
        factor = 1.0
        small = rgb
        if max(h, w) > ENROLL_DETECT_MAX_SIDE:
            factor = max(h, w) / ENROLL_DETECT_MAX_SIDE
            size = (max(1, round(w / factor)), max(1, round(h / factor)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        t0 = time.perf_counter()
        detections: list[Detection] = []
        for pad in self.enroll_pads:
            detections = self.detector.detect(small, pad=pad)
            if detections:
                break
        detect_ms = (time.perf_counter() - t0) * 1e3
        if not detections:
            log.info("face_enroll_no_face", width=w, height=h)
            return None
        best = max(detections, key=lambda d: d.width * d.height)
        if factor != 1.0:
            # Map back: pixel centres scale as (x + 0.5) * f - 0.5; the half-pixel is below the
            # landmark predictor's integer resolution, so a plain scale is kept.
            best = _scaled(best, factor)
        return self._observe(rgb, image_bgr, best, detect_ms)

    def distance(self, a: FaceObservation | np.ndarray, b: FaceObservation | np.ndarray) -> float:
        """Euclidean distance between two descriptors (accept when <= `threshold`)."""
        da = a.descriptor if isinstance(a, FaceObservation) else a
        db = b.descriptor if isinstance(b, FaceObservation) else b
        return float(np.linalg.norm(np.asarray(da, np.float64) - np.asarray(db, np.float64)))

    def close(self) -> None:
        self.detector.session.close()
        self.embedder.close()
        self.landmarks.close()

    def __enter__(self) -> FaceEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
