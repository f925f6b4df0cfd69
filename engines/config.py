"""`[engine]` config section: which backend runs the face models and with what thresholds.

Owned by the face-engine work; `edge.settings` composes it into the daemon's config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field("onnxruntime", description="Inference backend: opencv, onnxruntime or tensorrt.")
    fallback_backend: str = Field(
        "onnxruntime", description="Backend used when `backend` is unavailable on this machine."
    )
    threads: int = Field(1, ge=1, le=16, description="CPU threads per model session.")
