"""Gates that decide whether a device backend's outputs may replace the CPU reference's.

A TensorRT engine is only trusted on a gate when it reproduces onnxruntime on real faces closely
enough that no match decision can change:
- embedder, FP32 (TF32 cleared): cosine similarity >= 0.9999 on every face;
- embedder, FP16: largest Euclidean difference <= 0.02, against a match threshold of about 0.5
  (a shift of 0.02 moves a distance by 4 % of the threshold at most);
- detectors: the same faces found, each box overlapping its reference by IoU >= 0.95 and its score
  within 0.01.
The functions here are pure arithmetic on two backends' outputs, so they are tested on the CPU with
two real backends (onnxruntime against OpenCV DNN) and with outputs perturbed past each limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from egate.engines.detector import Detection

FP32_MIN_COSINE = 0.9999
FP16_MAX_EUCLIDEAN = 0.02
DETECTOR_MIN_IOU = 0.95
DETECTOR_MAX_SCORE_DIFF = 0.01


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: the measured worst value against its limit, with a sentence for humans."""

    name: str
    ok: bool
    worst: float
    limit: float
    detail: str


def embedder_gate(reference: Sequence[np.ndarray], device: Sequence[np.ndarray], precision: str) -> GateResult:
    """FP32: worst cosine similarity >= 0.9999; FP16: worst Euclidean difference <= 0.02."""
    if len(reference) != len(device) or not reference:
        raise ValueError(f"need the same non-zero number of descriptors, got {len(reference)} and {len(device)}")
    ref = np.stack([np.asarray(r, np.float64).ravel() for r in reference])
    dev = np.stack([np.asarray(d, np.float64).ravel() for d in device])
    if precision == "fp32":
        cosine = np.sum(ref * dev, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(dev, axis=1))
        worst = float(cosine.min())
        ok = worst >= FP32_MIN_COSINE
        return GateResult(
            "embedder_fp32", ok, worst, FP32_MIN_COSINE, f"lowest cosine {worst:.6f} over {len(ref)} faces"
        )
    if precision == "fp16":
        worst = float(np.linalg.norm(ref - dev, axis=1).max())
        ok = worst <= FP16_MAX_EUCLIDEAN
        return GateResult(
            "embedder_fp16",
            ok,
            worst,
            FP16_MAX_EUCLIDEAN,
            f"largest Euclidean difference {worst:.5f} over {len(ref)} faces",
        )
    raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two xyxy boxes (0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detector_gate(
    name: str, reference: Sequence[Sequence[Detection]], device: Sequence[Sequence[Detection]]
) -> GateResult:
    """Per image: the same number of faces, each matched to its reference by best IoU (>= 0.95), scores
    within 0.01. `worst` is the lowest IoU seen (0 when a face is missing or extra)."""
    if len(reference) != len(device) or not reference:
        raise ValueError(f"need the same non-zero number of images, got {len(reference)} and {len(device)}")
    worst_iou, worst_score, faces = 1.0, 0.0, 0
    problems: list[str] = []
    for index, (ref_faces, dev_faces) in enumerate(zip(reference, device, strict=True)):
        if len(ref_faces) != len(dev_faces):
            problems.append(f"image {index}: {len(dev_faces)} faces, reference {len(ref_faces)}")
            worst_iou = 0.0
            continue
        unmatched = list(dev_faces)
        for ref in ref_faces:
            best = max(unmatched, key=lambda d: box_iou(ref.box_xyxy, d.box_xyxy))
            unmatched.remove(best)
            faces += 1
            worst_iou = min(worst_iou, box_iou(ref.box_xyxy, best.box_xyxy))
            worst_score = max(worst_score, abs(ref.score - best.score))
    ok = not problems and worst_iou >= DETECTOR_MIN_IOU and worst_score <= DETECTOR_MAX_SCORE_DIFF
    detail = f"{faces} faces: lowest IoU {worst_iou:.4f}, largest score difference {worst_score:.4f}"
    if worst_score > DETECTOR_MAX_SCORE_DIFF:
        problems.append(f"score difference {worst_score:.4f} > {DETECTOR_MAX_SCORE_DIFF}")
    if problems:
        detail += "; " + "; ".join(problems[:5])
    return GateResult(name, ok, worst_iou, DETECTOR_MIN_IOU, detail)
