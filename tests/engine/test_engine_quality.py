"""Capture quality on a real face: pose from dlib's 5 points, sharpness, exposure, the gate's reasons."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from egate.engines.config import EngineConfig
from egate.engines.models import load_manifest
from egate.engines.quality import QualityThresholds, assess, head_pose
from tests.shared_data import shared_data


@pytest.fixture(scope="module")
def face(model_dir: Path) -> tuple[np.ndarray, tuple[float, float, float, float], np.ndarray]:
    """A frontal press photo with its dlib HOG box and dlib 5 landmarks (independent of our detector)."""
    bgr = cv2.imread(str(shared_data("faces/face_recognition") / "examples/obama.jpg"))
    assert bgr is not None
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    predictor = dlib.shape_predictor(str(load_manifest(model_dir).path(model_dir, "landmarks5")))
    rect = max(dlib.get_frontal_face_detector()(rgb, 0), key=lambda r: r.area())
    points = np.array([[p.x, p.y] for p in predictor(rgb, rect).parts()], np.float64)
    return bgr, (rect.left(), rect.top(), rect.right(), rect.bottom()), points


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    centre = points.mean(axis=0)
    return (points - centre) @ np.array([[c, s], [-s, c]]) + centre


def test_frontal_face_passes_the_default_gate(face) -> None:  # type: ignore[no-untyped-def]
    bgr, box, points = face
    q = assess(bgr, box, points, det_score=0.95)
    eye_gap = np.linalg.norm(points[0:2].mean(0) - points[2:4].mean(0))
    assert q.eye_distance_px == pytest.approx(eye_gap)
    assert abs(q.roll_deg) < 8 and abs(q.yaw_deg) < 15 and abs(q.pitch_deg) < 15
    assert QualityThresholds().acceptable(q) == []


def test_in_plane_rotation_is_measured_as_roll_only(face) -> None:  # type: ignore[no-untyped-def]
    _, _, points = face
    yaw0, pitch0, roll0, dist0 = head_pose(points)
    yaw, pitch, roll, dist = head_pose(_rotate(points, 25.0))
    assert roll - roll0 == pytest.approx(25.0, abs=0.01)
    assert (yaw, pitch, dist) == pytest.approx((yaw0, pitch0, dist0), abs=1e-6)
    reasons = QualityThresholds().acceptable(assess(face[0], face[1], _rotate(points, 25.0), 0.95))
    assert "roll_too_large" in reasons


def test_mirror_flips_yaw_sign(face) -> None:  # type: ignore[no-untyped-def]
    _, _, points = face
    mirrored = points.copy()
    mirrored[:, 0] = 1000.0 - mirrored[:, 0]
    mirrored = mirrored[[2, 3, 0, 1, 4]]  # the eye at larger x is now the other one
    yaw, _, _, _ = head_pose(points)
    yaw_m, _, _, _ = head_pose(mirrored)
    assert yaw_m == pytest.approx(-yaw, abs=1e-6)
    turned = points.copy()
    eye_gap = np.linalg.norm(points[0:2].mean(0) - points[2:4].mean(0))
    turned[4, 0] += 0.3 * eye_gap  # the nose moves sideways as the head turns
    assert head_pose(turned)[0] > yaw + 20


def test_blur_darkness_and_small_faces_are_rejected_with_codes(face) -> None:  # type: ignore[no-untyped-def]
    bgr, box, points = face
    gate = QualityThresholds()
    sharp = assess(bgr, box, points, 0.95)
    blurred = assess(cv2.GaussianBlur(bgr, (0, 0), 4), box, points, 0.95)
    assert blurred.sharpness < gate.min_sharpness < sharp.sharpness
    assert gate.acceptable(blurred) == ["too_blurred"]
    dark = assess((bgr * 0.12).astype(np.uint8), box, points, 0.95)
    assert "too_dark" in gate.acceptable(dark)
    bright = assess(np.clip(bgr.astype(np.int32) + 200, 0, 255).astype(np.uint8), box, points, 0.95)
    assert {"too_bright", "clipped_bright"} <= set(gate.acceptable(bright))
    small = QualityThresholds(min_eye_distance_px=sharp.eye_distance_px + 1)
    assert small.acceptable(sharp) == ["face_too_small"]
    assert gate.acceptable(assess(bgr, box, points, 0.5)) == ["det_score_low"]


def test_grey_image_is_assessed_too(face) -> None:  # type: ignore[no-untyped-def]
    bgr, box, points = face
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert assess(grey, box, points, 0.9).exposure_mean == pytest.approx(
        assess(bgr, box, points, 0.9).exposure_mean, abs=1.0
    )


def test_config_rejects_an_empty_exposure_range() -> None:
    with pytest.raises(ValueError, match=r"min_exposure_mean .* must be below max_exposure_mean"):
        EngineConfig.model_validate({"quality": {"min_exposure_mean": 200, "max_exposure_mean": 100}})
    with pytest.raises(ValueError):
        EngineConfig.model_validate({"backend": "cuda"})
    assert EngineConfig().quality.min_eye_distance_px == 60.0
