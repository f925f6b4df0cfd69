"""The interface every inference backend implements (CPU: opencv, onnxruntime; device: tensorrt).

A backend turns one ONNX file into a `Session` that maps named float32 inputs to outputs. The
backends themselves are plug-ins (`egate.engines.backends.plugins`, found by `registry`); a backend
that cannot run here (no CUDA, no TensorRT) says why through `unavailable_reason()` so the
configured fallback can run instead (`registry.create_backend`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import structlog
from pydantic import BaseModel

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
    """A factory of sessions. Subclasses set `name`; their module exposes them as a `BackendPlugin`."""

    name: ClassVar[str]
    # A GPU backend whose sessions may fail at run time and then hand over to the CPU fallback.
    is_device: ClassVar[bool] = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when usable here; otherwise a one-line reason naming the missing part."""
        return None

    @classmethod
    def configured(cls, settings: BaseModel | None, model_dir: Path | None) -> Backend:
        """This backend as the gate's config asks: its `[engine.<name>]` settings (None for a backend
        without any) and the model cache its models come from (None: beside each ONNX file)."""
        del settings, model_dir  # a backend without settings has nothing to take from them
        return cls()

    @abstractmethod
    def load(self, onnx_path: Path, *, threads: int = 1) -> Session:
        """Load `onnx_path` (the same ONNX file on every backend)."""


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
