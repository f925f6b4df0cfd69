"""Camera snapshots for technicians: the frame as JPEG with face boxes and quality drawn on it.

Used by the daemon's `camera.snapshot` control handler and by `egate diag camera --snapshot` when the
daemon is not running, so both draw the same picture. A snapshot exists only because a technician asked
for it: it is returned to the caller and never logged or kept on disk by the daemon.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from egate.engines.pipeline import FaceObservation

JPEG_QUALITY = 85


class SnapshotFace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    box_xyxy: tuple[float, float, float, float]
    det_score: float
    quality: dict[str, float] = Field(default_factory=dict, description="egate.engines.quality.FaceQuality fields.")
    problems: list[str] = Field(default_factory=list, description="Quality gate codes that failed, if known.")


class Snapshot(BaseModel):
    """Result of `camera.snapshot` (control API v1)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    jpeg_base64: str = Field(description="The annotated frame, JPEG, base64.")
    width: int
    height: int
    mean_level: float = Field(description="Mean grey level 0..255 of the frame (exposure).")
    faces: list[SnapshotFace] = Field(default_factory=list)
    camera: dict[str, Any] = Field(
        default_factory=dict, description="egate.drivers.camera.CameraStats fields (fps...)."
    )


def annotate(
    image_bgr: np.ndarray, faces: Sequence[FaceObservation], problems: Sequence[Sequence[str]] = ()
) -> np.ndarray:
    """A copy of the frame with each face's box (green: passes the quality gate, red: not) and figures."""
    out = image_bgr.copy() if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    scale = max(0.4, min(out.shape[:2]) / 800)
    for index, face in enumerate(faces):
        x1, y1, x2, y2 = (round(v) for v in face.box_xyxy)
        failed = list(problems[index]) if index < len(problems) else []
        colour = (0, 0, 255) if failed else (0, 200, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, max(1, round(2 * scale)))
        q = face.quality.as_dict()
        lines = [
            f"#{index + 1} det {face.det_score:.2f}",
            f"yaw {q.get('yaw_deg', 0):.0f} pitch {q.get('pitch_deg', 0):.0f} roll {q.get('roll_deg', 0):.0f}",
            f"sharp {q.get('sharpness', 0):.0f} exp {q.get('exposure_mean', 0):.0f} eyes {q.get('eye_distance_px', 0):.0f}px",
            *failed[:3],
        ]
        y = y2 + round(18 * scale)
        for text in lines:
            cv2.putText(out, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, colour, 1, cv2.LINE_AA)
            y += round(18 * scale)
    return out


def encode_jpeg(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of the snapshot failed")
    return buf.tobytes()


def make_snapshot(
    image_bgr: np.ndarray,
    faces: Sequence[FaceObservation],
    *,
    camera_stats: Mapping[str, Any] | None = None,
    problems: Sequence[Sequence[str]] = (),
) -> Snapshot:
    """The `camera.snapshot` result for one frame and the engine's observations of it."""
    drawn = annotate(image_bgr, faces, problems)
    height, width = image_bgr.shape[:2]
    return Snapshot(
        jpeg_base64=base64.b64encode(encode_jpeg(drawn)).decode("ascii"),
        width=width,
        height=height,
        mean_level=round(float(np.mean(image_bgr)), 1),
        faces=[
            SnapshotFace(
                box_xyxy=tuple(round(float(v), 1) for v in f.box_xyxy),  # type: ignore[arg-type]
                det_score=round(float(f.det_score), 3),
                quality=f.quality.as_dict(),
                problems=list(problems[i]) if i < len(problems) else [],
            )
            for i, f in enumerate(faces)
        ],
        camera=dict(camera_stats or {}),
    )
