"""dlib's 5-point landmark predictor, seeded with a detector box framed the way dlib's HOG does.

The 5-point model (`shape_predictor_5_face_landmarks.dat`, CC0) was trained on boxes from dlib's
HOG frontal-face detector; its regression trees start from a mean shape placed in that box, so a
box framed differently starts them in the wrong place and the points (then the chip, then the
descriptor) drift. BlazeFace frames the face differently (its box is centred lower, between the eyes
and mouth), so its box is mapped first (`BoxMapping`). Only the 5-point model is used: the 68-point
model in the same wheel was trained on non-commercial data (iBUG 300-W) and is never loaded.

The mapping numbers were learnt by `fit_box_mapping` on every face that both dlib's HOG detector
(upsample 1) and BlazeFace short range found (IoU > 0.2) in `faces/lfw_krasserm` (100 images) and
`faces/orl_att` (400 images), 491 faces; the medians, in units of the BlazeFace box width w and
around the centre of BlazeFace's eye-midpoint and mouth keypoints, are:
    dlib box centre = kp centre + (-0.0265 w, -0.0398 w), dlib box side = 0.9832 w.
Median |centre error| after mapping is 5.0 % of the dlib box side (8.2 % for the plain box centre),
and the worst 5-point disagreement with the HOG-seeded points on LFW drops from 0.73 to 0.07
inter-ocular distances (0.024 median: the points are integers, so ~1 px is the floor).
On all 4,950 LFW pairs the raw BlazeFace box gives EER 2.4 % and FNMR 7.3 % at FMR 1e-3; the mapped
box 0.9 % and 2.4 %, as dlib's own HOG pipeline. Fitted on orl_att alone (-0.0226, -0.0362, 0.9804)
the LFW result is the same (0.9 %, 2.2 %), so the numbers are not tuned to the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np

NUM_POINTS = 5


@dataclass(frozen=True)
class BoxMapping:
    """Detector box -> dlib-HOG-style square box, in units of the detector box width."""

    dx: float = -0.0265
    dy: float = -0.0398
    side: float = 0.9832
    use_keypoints: bool = True  # centre on (eye midpoint + mouth) / 2 when keypoints are given

    def apply(
        self, box_xyxy: tuple[float, float, float, float] | np.ndarray, keypoints6: np.ndarray | None = None
    ) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        width = x2 - x1
        if keypoints6 is not None and self.use_keypoints:
            kp = np.asarray(keypoints6, dtype=np.float64).reshape(-1, 2)
            centre = ((kp[0] + kp[1]) / 2 + kp[3]) / 2  # MediaPipe order: eyes 0, 1; mouth 3
        else:
            centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        cx = centre[0] + self.dx * width
        cy = centre[1] + self.dy * width
        side = self.side * width
        # dlib rectangles are inclusive integer corners: width = right - left + 1.
        # dlib's HOG boxes are square, so the side is rounded once and shared by both axes.
        side_px = max(1, round(side))
        left = round(cx - side_px / 2)
        top = round(cy - side_px / 2)
        return (left, top, left + side_px - 1, top + side_px - 1)


DEFAULT_MAPPING = BoxMapping()


def map_detector_box(
    box_xyxy: tuple[float, float, float, float] | np.ndarray,
    keypoints6: np.ndarray | None = None,
    mapping: BoxMapping = DEFAULT_MAPPING,
) -> tuple[int, int, int, int]:
    """A BlazeFace box (and its 6 keypoints, if any) as the (left, top, right, bottom) dlib box."""
    return mapping.apply(box_xyxy, keypoints6)


def fit_box_mapping(detector_boxes: np.ndarray, keypoints6: np.ndarray | None, dlib_boxes: np.ndarray) -> BoxMapping:
    """Median offsets/scale that map detector boxes (N, 4 xyxy) onto dlib boxes (N, 4 l, t, r, b).

    Medians, not least squares: a few mismatched faces (a second face, a profile) must not pull the
    mapping. Used to derive DEFAULT_MAPPING (see the module docstring) and by the tests.
    """
    boxes = np.asarray(detector_boxes, dtype=np.float64)
    target = np.asarray(dlib_boxes, dtype=np.float64)
    width = boxes[:, 2] - boxes[:, 0]
    if keypoints6 is not None:
        kp = np.asarray(keypoints6, dtype=np.float64)
        centre = ((kp[:, 0] + kp[:, 1]) / 2 + kp[:, 3]) / 2
    else:
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    t_centre = (target[:, :2] + target[:, 2:]) / 2
    t_side = target[:, 2] - target[:, 0] + 1
    return BoxMapping(
        dx=float(np.median((t_centre[:, 0] - centre[:, 0]) / width)),
        dy=float(np.median((t_centre[:, 1] - centre[:, 1]) / width)),
        side=float(np.median(t_side / width)),
        use_keypoints=keypoints6 is not None,
    )


class LandmarkPredictor:
    """dlib's 5-point shape predictor on RGB or grayscale uint8 images."""

    def __init__(self, dat_path: Path) -> None:
        if "68" in Path(dat_path).name:
            raise ValueError(
                f"{dat_path}: the 68-point model is licensed for non-commercial use only; "
                "use shape_predictor_5_face_landmarks.dat from the model cache"
            )
        self._predictor = dlib.shape_predictor(str(dat_path))

    def predict(self, image: np.ndarray, box_ltrb: tuple[int, int, int, int]) -> np.ndarray:
        """(5, 2) float64 x, y in dlib's order (right eye outer, inner, left eye outer, inner, nose).

        `box_ltrb` is a dlib-framed box (use `map_detector_box` for a BlazeFace box). dlib rounds the
        points to integer pixels; they are returned as dlib gives them.
        """
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"landmarks need a uint8 RGB or grayscale image, got {image.dtype} {image.shape}")
        left, top, right, bottom = (int(v) for v in box_ltrb)
        shape = self._predictor(np.ascontiguousarray(image), dlib.rectangle(left, top, right, bottom))
        if shape.num_parts != NUM_POINTS:
            raise ValueError(f"shape predictor returned {shape.num_parts} points, expected {NUM_POINTS}")
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def close(self) -> None:
        """Nothing native to free beyond the predictor object; present for a uniform lifetime API."""
