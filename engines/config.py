"""`[engine]` config section: which backend runs the face models and with what thresholds.

Owned by the face-engine work; `egate.edge.settings` composes it into the daemon's config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from egate.engines.quality import QualityThresholds


class EngineConfig(BaseModel):
    """Face engine: inference backend, detector and the live-capture quality gate."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["opencv", "onnxruntime", "tensorrt"] = Field(
        "onnxruntime", description="Inference backend: opencv, onnxruntime or tensorrt (device)."
    )
    fallback_backend: Literal["opencv", "onnxruntime"] = Field(
        "onnxruntime",
        description="CPU backend used when `backend` cannot run here (no TensorRT/CUDA, no built engine).",
    )
    threads: int = Field(1, ge=1, le=16, description="CPU threads per model session.")
    tensorrt_precision: Literal["auto", "fp16", "fp32"] = Field(
        "auto", description="TensorRT engine precision; auto = fp16 where the GPU reports fast fp16."
    )
    detector_variant: Literal["short", "full"] = Field(
        "short",
        description="BlazeFace model: short (faces within ~2 m, 128x128, fast) or full (~5 m, 192x192).",
    )
    detector_min_score: float = Field(
        0.5, ge=0.05, le=0.99, description="BlazeFace score below which a candidate is dropped (MediaPipe: 0.5)."
    )
    detector_retry_pad: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description=(
            "When no face is found, detect again inside a black border of this fraction of the longer "
            "side (faces that fill the image, e.g. document portraits); 0 disables the retry."
        ),
    )
    min_face_px: int = Field(
        40, ge=0, le=4000, description="Faces whose detector box is narrower than this (pixels) are ignored."
    )
    quality: QualityThresholds = Field(default_factory=QualityThresholds, description="Live-capture quality gate.")
