"""The interface every inference backend implements (CPU: opencv, onnxruntime; device: tensorrt).

A backend turns one ONNX file into a `Session` that maps named float32 inputs to outputs.
Backends register themselves by name; `engine.backend` in config picks one, and a backend
that cannot run here (no CUDA, no TensorRT) says why through `unavailable_reason()` so the
configured fallback can run instead (`create_backend`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import structlog

log = structlog.get_logger(__name__)


class BackendUnavailable(RuntimeError):
    """Raised when a backend cannot run on this machine; the message says why and what to do."""


class Session(ABC):
    """One loaded model. Not thread-safe unless the backend says so; close() frees native memory."""

    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run once; outputs in `output_names` order."""

    def close(self) -> None:  # noqa: B027 - optional hook, most CPU sessions hold nothing native
        """Free native resources (CUDA buffers, engines). Idempotent."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(ABC):
    """A factory of sessions. Subclasses set `name` and register with `register_backend`."""

    name: ClassVar[str]

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when usable here; otherwise a one-line reason naming the missing part."""
        return None

    @abstractmethod
    def load(self, onnx_path: Path, *, threads: int = 1) -> Session:
        """Load `onnx_path` (the same ONNX file on every backend)."""


_REGISTRY: dict[str, type[Backend]] = {}

# Built-in backends are imported on first use, not at package import: importing the registry must
# not pull OpenCV, onnxruntime or TensorRT into a process that only validates config.
_BUILTIN_MODULES: dict[str, str] = {
    "opencv": "engines.backends.opencv",
    "onnxruntime": "engines.backends.onnxruntime",
    "tensorrt": "engines.backends.tensorrt",
}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend selectable by its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES.values():
        importlib.import_module(module)


def registered_backends() -> dict[str, type[Backend]]:
    _import_builtins()
    return dict(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The registered class called `name`; a KeyError-free error that lists the valid names."""
    backends = registered_backends()
    if name not in backends:
        raise ValueError(f"engine.backend={name!r} is not a known backend; use one of {sorted(backends)}")
    return backends[name]


def create_backend(name: str, fallback: str | None = None, **options: Any) -> Backend:
    """Instantiate backend `name`, or `fallback` when `name` cannot run here (the reason is logged).

    `options` go to the chosen backend's constructor when it accepts them (the TensorRT backend takes
    `cache_dir` and `precision`; the CPU backends take none, so they are dropped for them).
    """
    cls = backend_class(name)
    reason = cls.unavailable_reason()
    if reason is not None:
        if fallback is None or fallback == name:
            raise BackendUnavailable(
                f"engine.backend={name!r} cannot run here: {reason}; "
                "set engine.fallback_backend to a CPU backend (onnxruntime or opencv)"
            )
        fb_cls = backend_class(fallback)
        fb_reason = fb_cls.unavailable_reason()
        if fb_reason is not None:
            raise BackendUnavailable(
                f"engine.backend={name!r} cannot run here ({reason}) and "
                f"engine.fallback_backend={fallback!r} cannot either ({fb_reason})"
            )
        log.warning("engine_backend_fallback", backend=name, fallback=fallback, reason=reason)
        cls = fb_cls
    return _instantiate(cls, options)


def _instantiate(cls: type[Backend], options: dict[str, Any]) -> Backend:
    accepted: frozenset[str] = getattr(cls, "options", frozenset())
    kwargs = {k: v for k, v in options.items() if k in accepted}
    return cls(**kwargs)


def load_session(backend: Backend, onnx_path: Path, *, threads: int = 1, fallback: str | None = None) -> Session:
    """`backend.load(onnx_path)`, or the `fallback` backend's session when that load is refused.

    A backend can be available in principle and still refuse one model (TensorRT without a built
    engine for it); the gate then runs on the CPU instead of staying out of service.
    """
    try:
        return backend.load(onnx_path, threads=threads)
    except BackendUnavailable as exc:
        if fallback is None or fallback == backend.name:
            raise
        log.warning(
            "engine_backend_fallback",
            backend=backend.name,
            fallback=fallback,
            model=onnx_path.name,
            reason=str(exc),
        )
        return create_backend(fallback).load(onnx_path, threads=threads)


def describe_backends() -> list[dict[str, Any]]:
    """Every registered backend with `available` and the `reason` when it is not (for diag tools)."""
    rows: list[dict[str, Any]] = []
    for name, cls in sorted(registered_backends().items()):
        reason = cls.unavailable_reason()
        rows.append({"name": name, "available": reason is None, "reason": reason})
    return rows
