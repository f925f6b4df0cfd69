"""egate.edge.lane.faces: the engine's FaceObservation (real dataclasses) to the faces a session counts."""

from __future__ import annotations

import numpy as np
import pytest

from egate.edge.lane.faces import FACE_TOO_CLOSE, frame_timings, lane_faces, quality_score
from egate.engines.pipeline import FaceObservation
from egate.engines.quality import FaceQuality, QualityThresholds

T = QualityThresholds()


def q(**changes: float) -> FaceQuality:
    base = {
        "det_score": 0.95,
        "eye_distance_px": 110.0,
        "yaw_deg": 2.0,
        "pitch_deg": 3.0,
        "roll_deg": 1.0,
        "sharpness": 150.0,
        "exposure_mean": 120.0,
        "clipped_dark": 0.0,
        "clipped_bright": 0.0,
        "face_width_px": 220.0,
    }
    base.update(changes)
    return FaceQuality(**base)


def obs(quality: FaceQuality, width: float, seed: int = 0) -> FaceObservation:
    rng = np.random.default_rng(seed)
    return FaceObservation(
        box_xyxy=(100.0, 100.0, 100.0 + width, 100.0 + width * 1.2),
        det_score=quality.det_score,
        landmarks5=np.zeros((5, 2), np.float32),
        quality=quality,
        descriptor=rng.standard_normal(128).astype(np.float32),
        model_id="dlib-resnet-test",
        timings_ms={"detect": 4.0, "landmarks": 0.5, "align": 0.3, "embed": 17.0, "quality": 0.4},
    )


def test_score_prefers_frontal_large_sharp_faces() -> None:
    good = quality_score(q(), T)
    assert 0.9 <= good <= 1.0
    assert quality_score(q(yaw_deg=18.0), T) < good
    assert quality_score(q(eye_distance_px=50.0), T) < good
    assert quality_score(q(sharpness=25.0), T) < good
    assert quality_score(q(det_score=0.5), T) < good


def test_score_at_every_gate_limit_sits_just_above_the_default_min_quality() -> None:
    at_limits = q(
        det_score=T.min_det_score,
        eye_distance_px=T.min_eye_distance_px,
        yaw_deg=T.max_yaw_deg,
        sharpness=T.min_sharpness,
    )
    assert T.acceptable(at_limits) == []
    assert 0.5 <= quality_score(at_limits, T) <= 0.6


def test_lane_faces_carries_gate_failures_and_drops_bystanders() -> None:
    near = obs(q(), 220.0, seed=1)
    beside = obs(q(yaw_deg=35.0), 180.0, seed=2)
    behind = obs(q(), 90.0, seed=3)
    faces = lane_faces([behind, near, beside], T, bystander_ratio=0.5)
    assert [f.width_px for f in faces] == [220.0, 180.0]
    assert faces[0].quality_issues == () and faces[1].quality_issues == ("yaw_too_large",)
    assert np.array_equal(faces[0].descriptor, near.descriptor) and faces[0].descriptor.dtype == np.float32
    assert faces[0].quality_detail["eye_distance_px"] == 110.0
    assert len(lane_faces([behind, near, beside], T, bystander_ratio=0.0)) == 3
    assert lane_faces([], T) == []


def test_a_face_over_the_width_limit_is_too_close_and_not_acceptable() -> None:
    # 640 px frame: the limit (55 %) is 352 px; both faces pass the engine's own gate.
    [close] = lane_faces([obs(q(), 360.0)], T, frame_width=640)
    [fine] = lane_faces([obs(q(), 340.0)], T, frame_width=640)
    assert close.quality_issues == (FACE_TOO_CLOSE,) and fine.quality_issues == ()
    assert close.placement is not None and close.placement[1] > 0.55
    # Without the frame width nothing is known about placement: the engine's codes only.
    assert lane_faces([obs(q(), 360.0)], T)[0].quality_issues == ()


def test_frame_timings_count_detection_once() -> None:
    t = frame_timings([obs(q(), 200.0), obs(q(), 190.0)])
    assert t["detect"] == 4.0
    assert t["embed"] == pytest.approx(34.0)
