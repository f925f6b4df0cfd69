"""The interface every inference backend implements (CPU: opencv, onnxruntime; device: tensorrt).

A backend turns one ONNX file into a `Session` that maps named float32 inputs to outputs.
Backends register themselves by name; `engine.backend` in config picks one, and a backend
that cannot run here (no CUDA, no TensorRT) says why through `unavailable_reason()` so the
configured fallback can run instead (`create_backend`).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import structlog

log = structlog.get_logger(__name__)


class BackendUnavailable(RuntimeError):
    """Raised when a backend cannot run on this machine; the message says why and what to do."""


class DeviceError(RuntimeError):
    """A GPU backend failed while running (execution refused, device lost); the CPU takes over."""


# Packages whose exceptions mean "the GPU stack failed", not "the caller passed bad data": pycuda's
# driver errors (pycuda._driver.LogicError, MemoryError, LaunchError, ...) and TensorRT's bindings.
_DEVICE_ERROR_PACKAGES = ("pycuda", "tensorrt", "tensorrt_bindings")


def is_device_error(exc: BaseException) -> bool:
    """True for an error of the GPU stack, after which the CPU backend should serve instead.

    MemoryError counts too: CUDA out-of-memory surfaces as pycuda's MemoryError, and a host
    allocation that fails while a device session is set up is as fatal for that session.
    """
    if isinstance(exc, (BackendUnavailable, DeviceError, MemoryError)):
        return True
    package = (type(exc).__module__ or "").split(".")[0]
    return package in _DEVICE_ERROR_PACKAGES


class Session(ABC):
    """One loaded model. Not thread-safe unless the backend says so; close() frees native memory."""

    input_names: list[str]
    output_names: list[str]
    # Which backend really runs this model, and why it is not the configured one (None when it is).
    backend_name: str = ""
    fallback_reason: str | None = None

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
    # A GPU backend whose sessions may fail at run time and then hand over to the CPU fallback.
    is_device: ClassVar[bool] = False

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
    "opencv": "egate.engines.backends.opencv",
    "onnxruntime": "egate.engines.backends.onnxruntime",
    "tensorrt": "egate.engines.backends.tensorrt",
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
    engine for it, a CUDA error while deserializing); the gate then runs on the CPU instead of staying
    out of service. A device session is wrapped so that a GPU error while running also moves that
    model to the CPU for good (`FallbackSession`).
    """
    can_fall_back = fallback is not None and fallback != backend.name
    try:
        session = backend.load(onnx_path, threads=threads)
    except Exception as exc:
        if not can_fall_back or not is_device_error(exc):
            raise
        assert fallback is not None  # narrowed by can_fall_back
        reason = f"{backend.name} could not load {onnx_path.name}: {exc}"
        log.warning(
            "engine_backend_fallback", backend=backend.name, fallback=fallback, model=onnx_path.name, reason=str(exc)
        )
        cpu = create_backend(fallback).load(onnx_path, threads=threads)
        cpu.backend_name = fallback
        cpu.fallback_reason = reason
        return cpu
    session.backend_name = backend.name
    if not can_fall_back or not getattr(backend, "is_device", False):
        return session
    assert fallback is not None
    cpu_name = fallback
    return FallbackSession(session, cpu_name, lambda: create_backend(cpu_name).load(onnx_path, threads=threads))


class FallbackSession(Session):
    """A device session that hands over to a CPU session, once and for good, on the first GPU error.

    The failed call is answered by the CPU session, so the frame that met the error is not lost; the
    device session is closed (its CUDA memory freed) as soon as it has failed.
    """

    def __init__(self, device: Session, cpu_name: str, load_cpu: Callable[[], Session]) -> None:
        self._device: Session | None = device
        self._cpu: Session | None = None
        self._cpu_name = cpu_name
        self._load_cpu = load_cpu
        self.input_names = device.input_names
        self.output_names = device.output_names
        self.backend_name = device.backend_name

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._cpu is None:
            assert self._device is not None  # one of the two is always set
            try:
                return self._device.run(inputs)
            except Exception as exc:
                if not is_device_error(exc):
                    raise
                self._switch_to_cpu(exc)
        assert self._cpu is not None
        return self._cpu.run(inputs)

    def _switch_to_cpu(self, exc: BaseException) -> None:
        failed = self.backend_name
        reason = f"{failed} failed while running: {type(exc).__name__}: {exc}"
        log.error("engine_device_error_fallback", backend=failed, reason=reason)
        device, self._device = self._device, None
        try:
            if device is not None:
                device.close()
        except Exception as close_exc:  # a broken device may fail to free; the CPU still takes over
            log.warning("engine_device_close_failed", backend=failed, error=str(close_exc))
        self._cpu = self._load_cpu()
        self._cpu.backend_name = self._cpu_name
        self.backend_name = self._cpu_name
        self.fallback_reason = reason

    def close(self) -> None:
        for session in (self._device, self._cpu):
            if session is not None:
                session.close()
        self._device = self._cpu = None


def describe_backends() -> list[dict[str, Any]]:
    """Every registered backend with `available` and the `reason` when it is not (for diag tools)."""
    rows: list[dict[str, Any]] = []
    for name, cls in sorted(registered_backends().items()):
        reason = cls.unavailable_reason()
        rows.append({"name": name, "available": reason is None, "reason": reason})
    return rows
