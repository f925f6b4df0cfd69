"""On-disk cache of serialized TensorRT engines, keyed by everything that makes an engine valid.

A TensorRT engine is specific to the exact ONNX it was built from, the TensorRT and CUDA runtime
versions, the GPU (compute capability and model: tactics are timed on it), the precision, the input
shapes and the flags egate builds with (the recipe version); loading one built under any other
combination fails or, worse, runs with wrong kernels. Frigate keys its cache by the TensorRT version
only; here every component is part of the key, recorded in a versioned sidecar and checked on load
together with the engine file's sha256 (a truncated copy or a swapped file is refused, not run).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from egate.engines.atomic_file import atomic_write_bytes, sha256_file
from egate.engines.backends.base import BackendUnavailable

Precision = Literal["fp32", "fp16"]


class EngineCacheError(BackendUnavailable):
    """A cached engine is missing, stale or damaged; the message names the file and the fix."""


class EngineKey(BaseModel):
    """Everything a serialized engine depends on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the source ONNX file.")
    tensorrt_version: str = Field(min_length=1, description="tensorrt.__version__ that built the engine.")
    cuda_version: str = Field(min_length=1, description="CUDA runtime version the engine runs on, e.g. 12.6.")
    compute_capability: str = Field(pattern=r"^\d+\.\d+$", description="GPU SM version, e.g. 8.7 (Orin).")
    device_name: str = Field(min_length=1, description="GPU name, e.g. Orin (tactics are timed on this GPU).")
    precision: Precision = Field(description="fp16 or fp32 kernels.")
    input_shapes: dict[str, tuple[int, ...]] = Field(description="Static shape of every input.")
    recipe_version: int = Field(ge=1, description="Version of egate's build recipe (flags, workspace).")

    def digest(self) -> str:
        """sha256 of the canonical JSON of the key (sorted keys, no whitespace)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def file_stem(self, model_name: str) -> str:
        return f"{model_name}.{self.precision}.{self.digest()[:16]}"


class EngineCacheEntry(BaseModel):
    """Sidecar `<stem>.json` beside `<stem>.engine`."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = Field(2, description="Version of this sidecar format (2: key with device, recipe).")
    key: EngineKey
    engine_file: str = Field(description="File name of the serialized engine, in the same directory.")
    engine_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the engine file.")
    engine_bytes: int = Field(ge=1, description="Size of the engine file.")
    built_at: str = Field(description="UTC ISO-8601 time of the build.")


class EngineCache:
    """Engines under `directory`, one `.engine` + `.json` pair per key."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def paths(self, key: EngineKey, model_name: str) -> tuple[Path, Path]:
        stem = key.file_stem(model_name)
        return self.directory / f"{stem}.engine", self.directory / f"{stem}.json"

    def store(self, key: EngineKey, model_name: str, engine: bytes) -> EngineCacheEntry:
        """Write engine then sidecar, each atomically: a sidecar never points at a partial engine."""
        engine_path, meta_path = self.paths(key, model_name)
        atomic_write_bytes(engine_path, engine)
        entry = EngineCacheEntry(
            schema_version=2,
            key=key,
            engine_file=engine_path.name,
            engine_sha256=hashlib.sha256(engine).hexdigest(),
            engine_bytes=len(engine),
            built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        atomic_write_bytes(meta_path, entry.model_dump_json(indent=2).encode())
        return entry

    def lookup(self, key: EngineKey, model_name: str) -> Path | None:
        """The engine file for `key` after every check passes; None when there is none yet.

        Raises `EngineCacheError` when an entry exists but does not match (damaged or swapped).
        """
        engine_path, meta_path = self.paths(key, model_name)
        if not meta_path.exists() or not engine_path.exists():
            return None
        fix = "delete it and run `egate models build --tensorrt`"
        try:
            entry = EngineCacheEntry.model_validate_json(meta_path.read_bytes())
        except ValueError as exc:
            raise EngineCacheError(f"TensorRT cache sidecar {meta_path} is unreadable ({exc}); {fix}") from exc
        if entry.key != key:
            raise EngineCacheError(
                f"TensorRT cache sidecar {meta_path} was written for another key "
                f"({entry.key.model_dump()} != {key.model_dump()}); {fix}"
            )
        actual = sha256_file(engine_path)
        if actual != entry.engine_sha256:
            raise EngineCacheError(
                f"TensorRT engine {engine_path} has sha256 {actual}, its sidecar says "
                f"{entry.engine_sha256} (damaged or replaced file); {fix}"
            )
        return engine_path
