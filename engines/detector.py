"""MediaPipe BlazeFace face detector on any backend: letterbox, SSD anchor decoding, weighted NMS.

The model is MediaPipe's (converted to ONNX at build time); the pre- and post-processing around it
is ours, a port of MediaPipe's face_detection graphs (`face_detection_short_range.pbtxt`,
`face_detection_full_range.pbtxt`): SsdAnchorsCalculator options, TensorsToDetectionsCalculator
decoding (box centre/size relative to a fixed-size anchor, 6 keypoints, sigmoid score clipped at
+-100) and NonMaxSuppressionCalculator with the WEIGHTED algorithm at IoU 0.3. Hand-written because
no maintained Python package ships it without pulling TensorFlow or the mediapipe runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from egate.engines.backends.base import Session

Variant = Literal["short", "full"]


@dataclass(frozen=True)
class _VariantSpec:
    input_size: int
    strides: tuple[int, ...]
    min_score: float  # MediaPipe's min_score_thresh for the variant


_SPECS: dict[Variant, _VariantSpec] = {
    # Short range (faces within ~2 m, "front" model): 128x128, 896 anchors = 16x16x2 + 8x8x6.
    "short": _VariantSpec(128, (8, 16, 16, 16), 0.5),
    # Full range (faces within ~5 m): 192x192, one 48x48 layer of 1 anchor = 2304.
    "full": _VariantSpec(192, (4,), 0.6),
}
NMS_IOU = 0.3  # MediaPipe min_suppression_threshold


@dataclass(frozen=True)
class Detection:
    """One face in source-image pixels.

    `keypoints6` is (6, 2) x/y in MediaPipe order: right eye, left eye, nose tip, mouth centre,
    right ear tragion, left ear tragion (the subject's right/left: the right eye is at smaller x).
    """

    box_xyxy: tuple[float, float, float, float]
    score: float
    keypoints6: np.ndarray

    @property
    def width(self) -> float:
        return self.box_xyxy[2] - self.box_xyxy[0]

    @property
    def height(self) -> float:
        return self.box_xyxy[3] - self.box_xyxy[1]


def ssd_anchors(input_size: int, strides: tuple[int, ...]) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1], as SsdAnchorsCalculator with fixed_anchor_size=true.

    Consecutive layers with the same stride share one feature map; each contributes 2 anchors per
    cell (aspect ratio 1.0 plus the interpolated scale) in the short-range model. The full-range
    model has interpolated_scale_aspect_ratio 0, so 1 anchor per cell.
    """
    per_layer = 1 if len(strides) == 1 else 2
    centres: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        fm = int(np.ceil(input_size / strides[i]))
        ys, xs = np.mgrid[0:fm, 0:fm]
        grid = np.stack([(xs + 0.5) / fm, (ys + 0.5) / fm], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_layer * (j - i), axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe WEIGHTED NMS: each cluster (IoU > `iou` with its best box) becomes the score-weighted
    mean of its boxes and keypoints, with the best score. Returns (box, keypoints, score), best first."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.arange(len(scores))
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    while remaining.size:
        top = remaining[0]
        overlap = _iou(boxes[top], boxes[remaining])
        cluster = remaining[overlap > iou]
        if cluster.size == 0:  # degenerate (zero-area) top box: keep it alone
            cluster = remaining[:1]
        w = scores[cluster][:, None]
        box = (boxes[cluster] * w).sum(0) / w.sum()
        kps = (keypoints[cluster] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[top])))
        remaining = remaining[~np.isin(remaining, cluster)]
    return out


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return image[:, :, :3]
    return image


class BlazeFaceDetector:
    """Detect faces in RGB (or grayscale) images of any size with one backend session."""

    def __init__(
        self,
        session: Session,
        variant: Variant = "short",
        *,
        min_score: float | None = None,
        min_face_px: float = 0.0,
    ) -> None:
        self.session = session
        self.variant = variant
        spec = _SPECS[variant]
        self.input_size = spec.input_size
        self.min_score = spec.min_score if min_score is None else min_score
        self.min_face_px = min_face_px
        self._anchors = ssd_anchors(spec.input_size, spec.strides)
        if len(session.input_names) != 1 or len(session.output_names) != 2:
            raise ValueError(
                f"BlazeFace {variant} session has inputs {session.input_names} and outputs "
                f"{session.output_names}; expected 1 input and 2 outputs (regressors, scores)"
            )
        self._input_name = session.input_names[0]

    def preprocess(self, image: np.ndarray, pad: float = 0.0) -> tuple[np.ndarray, float, float, float]:
        """Letterbox `image` (plus a `pad` border, a fraction of its longer side) into the model square.

        Returns (NCHW tensor, scale, offset_x, offset_y): source pixel = (square pixel - offset) / scale
        (the image is centred in the square, so the border is part of the offset).
        MediaPipe letterboxes with black borders keeping the aspect ratio; so do we.
        """
        rgb = _to_rgb(image)
        h, w = rgb.shape[:2]
        border = pad * max(h, w)
        side = max(h, w) + 2 * border
        scale = self.input_size / side
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
        ox, oy = (self.input_size - nw) // 2, (self.input_size - nh) // 2
        canvas = np.zeros((self.input_size, self.input_size, 3), np.uint8)
        canvas[oy : oy + nh, ox : ox + nw] = resized
        tensor = (canvas.astype(np.float32) - 127.5) / 127.5
        return tensor.transpose(2, 0, 1)[None], scale, float(ox), float(oy)

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4 xyxy), keypoints (N, 6, 2) in model-square pixels and scores (N,) above min_score."""
        raw = regressors.reshape(-1, 16)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
        keep = scores >= self.min_score
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        size = float(self.input_size)
        # Anchor w = h = 1 (fixed_anchor_size) and x/y/w/h scales = input size, so the regressors are
        # offsets in model pixels from the anchor centre.
        centre = anchors * size + raw[:, 0:2]
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = anchors[:, None, :] * size + raw[:, 4:16].reshape(-1, 6, 2)
        return boxes, keypoints, scores

    def detect(self, image: np.ndarray, *, pad: float = 0.0) -> list[Detection]:
        """Faces in `image` (H x W x 3 RGB, RGBA or grayscale uint8), best score first.

        `pad` adds a black border (fraction of the longer side) first: BlazeFace misses faces that fill
        the whole frame (tight document crops); 0.25 brings them back into its trained scale range.
        """
        tensor, scale, ox, oy = self.preprocess(image, pad)
        outputs = self.session.run({self._input_name: tensor})
        regressors, logits = sorted(outputs, key=lambda a: -a.shape[-1])  # (.., 16) then (.., 1)
        boxes, keypoints, scores = self.decode(regressors, logits)
        found: list[Detection] = []
        for box, kps, score in weighted_nms(boxes, keypoints, scores):
            offset = np.array([ox, oy], np.float32)
            xy = (box.reshape(2, 2) - offset) / scale
            kp = (kps - offset) / scale
            det = Detection(
                box_xyxy=(float(xy[0, 0]), float(xy[0, 1]), float(xy[1, 0]), float(xy[1, 1])),
                score=score,
                keypoints6=kp.astype(np.float32),
            )
            if det.width >= self.min_face_px:
                found.append(det)
        return found
