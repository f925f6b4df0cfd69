"""Per-face capture quality: detector score, eye distance, head pose, sharpness and exposure.

Measured on the camera frame so the lane can guide the traveller ("come closer", "look at the
camera") before a comparison is attempted, and recorded with each comparison in the transaction log.

Head pose comes from dlib's 5 landmarks (two corners per eye, the base of the nose) with a fixed
frontal face model: good to a few degrees for yaw and roll, coarser for pitch (the nose-to-eye
height varies between people by more than a 10 degree tilt changes it). It is a capture gate, not a
measurement for the record.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# dlib 5-point order (shape_predictor_5_face_landmarks): 0-1 the eye at larger image x (outer, inner
# corner), 2-3 the eye at smaller image x (outer, inner), 4 the base of the nose.
# Frontal proportions from dlib's own 5-point mean face (dlib/image_transforms/
# interpolation.h, get_face_chip_details): nose base 0.774 inter-eye distances below the eye line.
_FRONTAL_NOSE_DROP = 0.774
# Depth of the nose base in front of the eye-corner plane, in inter-eye distances (~22 mm / 63 mm,
# adult anthropometry): sets how far the nose moves sideways/vertically per degree of rotation.
_NOSE_DEPTH = 0.35
_SHARPNESS_SIDE = 128  # faces are resampled to this square before the Laplacian: comparable across sizes


@dataclass(frozen=True)
class FaceQuality:
    det_score: float
    eye_distance_px: float  # between eye centres, in frame pixels
    yaw_deg: float  # + when the nose is towards larger image x
    pitch_deg: float  # + when the face is tilted up (chin up)
    roll_deg: float  # + when the eye at larger x is lower (clockwise in the image)
    sharpness: float  # variance of the Laplacian of the face resampled to 128x128 grey
    exposure_mean: float  # mean grey level 0..255 on the face box
    clipped_dark: float  # fraction of face pixels <= 5
    clipped_bright: float  # fraction of face pixels >= 250
    face_width_px: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}


def head_pose(landmarks5: np.ndarray) -> tuple[float, float, float, float]:
    """(yaw, pitch, roll in degrees, eye distance in px) from dlib's 5 points ((5, 2) x/y)."""
    pts = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    eye_a = pts[2:4].mean(axis=0)  # smaller x
    eye_b = pts[0:2].mean(axis=0)  # larger x
    nose = pts[4]
    d = eye_b - eye_a
    eye_dist = float(math.hypot(d[0], d[1]))
    if eye_dist < 1e-6:
        return 0.0, 0.0, 0.0, 0.0
    roll = math.degrees(math.atan2(d[1], d[0]))
    # Express the nose in the eye-aligned frame (roll removed), in inter-eye distances.
    c, s = d / eye_dist
    rel = nose - (eye_a + eye_b) / 2
    along = (rel[0] * c + rel[1] * s) / eye_dist
    down = (-rel[0] * s + rel[1] * c) / eye_dist
    # Yaw: the projected eye distance shrinks by cos(yaw) while the nose base moves sideways by
    # depth*sin(yaw), so along = (depth/eye) * tan(yaw).
    yaw = math.degrees(math.atan(along / _NOSE_DEPTH))
    # Pitch: down = drop*cos(p) - depth*sin(p) = R*cos(p + a).
    r = math.hypot(_FRONTAL_NOSE_DROP, _NOSE_DEPTH)
    a = math.atan2(_NOSE_DEPTH, _FRONTAL_NOSE_DROP)
    pitch = math.degrees(math.acos(max(-1.0, min(1.0, down / r))) - a)
    return yaw, pitch, roll, eye_dist


def _face_region(image: np.ndarray, box_xyxy: tuple[float, float, float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    x0, y0 = max(0, int(box_xyxy[0])), max(0, int(box_xyxy[1]))
    x1, y1 = min(w, math.ceil(box_xyxy[2])), min(h, math.ceil(box_xyxy[3]))
    region = image[y0:y1, x0:x1]
    if region.ndim == 3:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY if region.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    return region


def assess(
    image_bgr: np.ndarray,
    box_xyxy: tuple[float, float, float, float],
    landmarks5: np.ndarray,
    det_score: float,
) -> FaceQuality:
    """Quality of one face: `box_xyxy` and `landmarks5` in `image_bgr` pixels (BGR or grey)."""
    yaw, pitch, roll, eye_dist = head_pose(landmarks5)
    grey = _face_region(image_bgr, box_xyxy)
    if grey.size == 0:
        sharpness = exposure = dark = bright = 0.0
    else:
        small = cv2.resize(grey, (_SHARPNESS_SIDE, _SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
        sharpness = float(cv2.Laplacian(small, cv2.CV_64F).var())
        exposure = float(grey.mean())
        dark = float((grey <= 5).mean())
        bright = float((grey >= 250).mean())
    return FaceQuality(
        det_score=float(det_score),
        eye_distance_px=eye_dist,
        yaw_deg=yaw,
        pitch_deg=pitch,
        roll_deg=roll,
        sharpness=sharpness,
        exposure_mean=exposure,
        clipped_dark=dark,
        clipped_bright=bright,
        face_width_px=float(box_xyxy[2] - box_xyxy[0]),
    )


class QualityThresholds(BaseModel):
    """Live-capture quality gate (`[engine.quality]`).

    BSI TR-03121-3 asks enrolment photos for >= 120 px between the eyes, yaw and pitch within 5
    degrees and roll within 8. That is for the reference image, taken once under control. A live
    e-gate capture is compared with the chip photo by dlib's ResNet, which sees a 150x150 chip where
    the eyes are ~53 px apart: more resolution is thrown away, and a traveller walking up cannot
    hold 5 degrees. So the live defaults are: eye distance >= 60 px (no upsampling into the chip),
    yaw <= 20 and pitch <= 20 degrees (the ResNet's error grows past that; the 5-point pitch estimate
    is coarse), roll <= 15 (alignment removes roll; a strong tilt still changes the face), sharpness
    and exposure only rejecting clearly blurred, dark or blown-out faces.
    """

    model_config = ConfigDict(extra="forbid")

    min_det_score: float = Field(0.7, ge=0.0, le=1.0, description="Lowest BlazeFace score accepted.")
    min_eye_distance_px: float = Field(
        60.0, ge=0.0, le=2000.0, description="Smallest distance between the eye centres, in frame pixels."
    )
    max_yaw_deg: float = Field(20.0, ge=0.0, le=90.0, description="Largest left/right head turn.")
    max_pitch_deg: float = Field(20.0, ge=0.0, le=90.0, description="Largest up/down head tilt.")
    max_roll_deg: float = Field(15.0, ge=0.0, le=90.0, description="Largest in-plane head tilt.")
    min_sharpness: float = Field(
        20.0, ge=0.0, le=10000.0, description="Lowest variance of the Laplacian on the 128x128 grey face."
    )
    min_exposure_mean: float = Field(40.0, ge=0.0, le=255.0, description="Darkest mean grey level of the face.")
    max_exposure_mean: float = Field(220.0, ge=0.0, le=255.0, description="Brightest mean grey level of the face.")
    max_clipped_fraction: float = Field(
        0.15, ge=0.0, le=1.0, description="Largest fraction of face pixels at black (<=5) or white (>=250)."
    )

    @model_validator(mode="after")
    def _exposure_range_not_empty(self) -> QualityThresholds:
        if self.min_exposure_mean >= self.max_exposure_mean:
            raise ValueError(
                f"engine.quality.min_exposure_mean ({self.min_exposure_mean}) must be below "
                f"max_exposure_mean ({self.max_exposure_mean})"
            )
        return self

    def acceptable(self, q: FaceQuality) -> list[str]:
        """Reasons `q` fails this gate, as stable codes for guidance and logs; empty when acceptable.

        Codes: det_score_low, face_too_small, yaw_too_large, pitch_too_large, roll_too_large,
        too_blurred, too_dark, too_bright, clipped_dark, clipped_bright.
        """
        checks = [
            (q.det_score < self.min_det_score, "det_score_low"),
            (q.eye_distance_px < self.min_eye_distance_px, "face_too_small"),
            (abs(q.yaw_deg) > self.max_yaw_deg, "yaw_too_large"),
            (abs(q.pitch_deg) > self.max_pitch_deg, "pitch_too_large"),
            (abs(q.roll_deg) > self.max_roll_deg, "roll_too_large"),
            (q.sharpness < self.min_sharpness, "too_blurred"),
            (q.exposure_mean < self.min_exposure_mean, "too_dark"),
            (q.exposure_mean > self.max_exposure_mean, "too_bright"),
            (q.clipped_dark > self.max_clipped_fraction, "clipped_dark"),
            (q.clipped_bright > self.max_clipped_fraction, "clipped_bright"),
        ]
        return [code for failed, code in checks if failed]
