"""From the face engine's observations to the faces a lane session counts and ranks.

The engine measures quality as a set of numbers with a pass/fail gate (`egate.engines.quality`); a session
needs one number to pick the best of N frames and to know who is at the gate. This module is that
bridge, so the session itself stays free of engine types (and testable with plain `LaneFace`s).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from egate.edge.session.machine import MAX_FACE_WIDTH_RATIO
from egate.engines.pipeline import FaceObservation
from egate.engines.quality import FaceQuality, QualityThresholds

# Added to the engine's codes for a face wider than MAX_FACE_WIDTH_RATIO of the frame: the traveller leans
# into the camera (close-range distortion, the face about to leave the frame). Such a frame is not matched;
# the screen asks them to step back.
FACE_TOO_CLOSE = "face_too_close"


@dataclass(frozen=True)
class LaneFace:
    """One face as the session sees it (satisfies `egate.edge.session.ports.FaceLike`). `descriptor` is a
    biometric template: never log or store it."""

    quality: float  # 0..1 ranking score, see quality_score
    descriptor: NDArray[np.float32] = field(repr=False)
    quality_issues: tuple[str, ...] = ()  # the engine's quality-gate failure codes; empty = acceptable
    quality_detail: Mapping[str, float] = field(default_factory=dict)  # measurements, for the record
    width_px: float = 0.0
    # (centre x, width) as fractions of the frame width, for "move left/right" and "step back" guidance.
    placement: tuple[float, float] | None = None


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def quality_score(q: FaceQuality, t: QualityThresholds) -> float:
    """A 0..1 score to rank frames of the same traveller: confident detection, large, frontal, sharp.

    Each factor is 1 well inside the engine's gate and falls towards its limits; the mean of the four
    is ~0.55 for a face exactly at every limit, so `lane.policy.min_quality` 0.5 sits just below the
    gate. Hand-written: no library scores face capture quality on these measurements (ISO/IEC 29794-5
    defines components, not this combination).
    """
    size = _clip01(q.eye_distance_px / (1.5 * t.min_eye_distance_px)) if t.min_eye_distance_px > 0 else 1.0
    pose = _clip01(
        1.0
        - max(
            abs(q.yaw_deg) / (2 * t.max_yaw_deg) if t.max_yaw_deg > 0 else 0.0,
            abs(q.pitch_deg) / (2 * t.max_pitch_deg) if t.max_pitch_deg > 0 else 0.0,
            abs(q.roll_deg) / (2 * t.max_roll_deg) if t.max_roll_deg > 0 else 0.0,
        )
    )
    sharp = _clip01(q.sharpness / (3 * t.min_sharpness)) if t.min_sharpness > 0 else 1.0
    return round((_clip01(q.det_score) + size + pose + sharp) / 4.0, 4)


def lane_faces(
    observations: Sequence[FaceObservation],
    thresholds: QualityThresholds,
    *,
    bystander_ratio: float = 0.5,
    frame_width: int | None = None,
) -> list[LaneFace]:
    """The faces that count at the gate, largest first.

    A face narrower than `bystander_ratio` x the largest face is someone further back in the queue,
    not a second person at the gate, and is left out (0 counts every face).
    """
    faces = [_lane_face(o, thresholds, frame_width) for o in observations]
    if not faces:
        return []
    faces.sort(key=lambda f: f.width_px, reverse=True)
    widest = faces[0].width_px
    return [f for f in faces if f.width_px >= bystander_ratio * widest]


def _lane_face(o: FaceObservation, thresholds: QualityThresholds, frame_width: int | None) -> LaneFace:
    issues = list(thresholds.acceptable(o.quality))
    placement = None
    if frame_width:
        placement = (
            round((o.box_xyxy[0] + o.box_xyxy[2]) / 2 / frame_width, 4),
            round((o.box_xyxy[2] - o.box_xyxy[0]) / frame_width, 4),
        )
        if placement[1] > MAX_FACE_WIDTH_RATIO:
            issues.append(FACE_TOO_CLOSE)
    return LaneFace(
        quality=quality_score(o.quality, thresholds),
        descriptor=np.asarray(o.descriptor, dtype=np.float32),
        quality_issues=tuple(issues),
        quality_detail=o.quality.as_dict(),
        width_px=float(o.box_xyxy[2] - o.box_xyxy[0]),
        placement=placement,
    )


def frame_timings(observations: Sequence[FaceObservation]) -> dict[str, float]:
    """Engine stage times for one frame: detection once, the other stages summed over its faces."""
    out: dict[str, float] = {}
    for o in observations:
        for stage, ms in o.timings_ms.items():
            out[stage] = float(ms) if stage == "detect" else out.get(stage, 0.0) + float(ms)
    return {k: round(v, 3) for k, v in out.items()}
