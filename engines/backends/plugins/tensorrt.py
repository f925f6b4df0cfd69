"""Device backend: NVIDIA TensorRT 10 with pycuda buffers (Jetson: TensorRT and pycuda from JetPack).

Importing this module never fails: `tensorrt` and `pycuda` are imported inside the functions that
need them, and `TensorRTBackend.unavailable_reason()` says which part is missing so the configured
fallback backend runs instead.

Its settings are the `[engine.tensorrt]` table (`TensorRTSettings`). Engines are built from the same
ONNX files as the CPU backends by `egate models build --tensorrt`, at that table's precision
(never in the hot path: building takes minutes on a Jetson) and cached under a key of ONNX sha256,
TensorRT version, CUDA runtime version, GPU name and compute capability, precision, input shapes and
the build recipe's version (`egate.engines.backends.tensorrt_cache`). `load()` only deserializes a cached engine; a missing engine is
an error naming the build command, unless the backend was created with `allow_build=True`.

Inference follows NVIDIA's TensorRT 10 Python samples: I/O tensors bound by name
(`num_io_tensors`, `get_tensor_name`, `set_tensor_address`), `execute_async_v3` on a pycuda stream,
page-locked host buffers, and device memory and the stream freed explicitly in `close()` (never in
`__del__`). Any pycuda or TensorRT error while loading is `BackendUnavailable` and while running a
`DeviceError`, so `load_session` moves that model to the CPU backend instead of stopping the lane.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

from egate.engines.atomic_file import sha256_file
from egate.engines.backends.base import Backend, BackendUnavailable, DeviceError, Session, is_device_error
from egate.engines.backends.onnx_io import graph_io
from egate.engines.backends.registry import BackendPlugin
from egate.engines.backends.tensorrt_cache import EngineCache, EngineCacheError, EngineKey, Precision

if TYPE_CHECKING:
    import tensorrt as trt

log = structlog.get_logger(__name__)

PrecisionChoice = Literal["auto", "fp16", "fp32"]


class TensorRTSettings(BaseModel):
    """TensorRT engines, built on the device by `egate models build --tensorrt` into the model cache."""

    model_config = ConfigDict(extra="forbid")

    precision: Annotated[
        PrecisionChoice,
        Field(
            description="Engine precision, built by the boot oneshot and loaded by the daemon; "
            "auto = fp16 where the GPU reports fast fp16."
        ),
    ] = "auto"


_WORKSPACE_BYTES = 256 << 20  # enough for a 150x150 ResNet and BlazeFace; Jetson memory is shared
# Version of the build recipe below (flags, workspace, profile handling). Part of the engine cache key:
# bump it whenever `build_serialized_engine` would build a different engine from the same inputs.
# 2: FP32 builds clear TF32 (strict FP32), so they are not the engines recipe 1 built.
BUILD_RECIPE_VERSION = 2
# Shared-library names of the CUDA runtime on JetPack 5/6 and desktop CUDA 11/12.
_CUDART_NAMES = ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0")


@dataclass(frozen=True)
class PlatformInfo:
    tensorrt_version: str
    cuda_version: str  # the CUDA runtime the process loads (what TensorRT runs on)
    compute_capability: str
    fast_fp16: bool
    device_name: str
    driver_version: str = ""
    pycuda_cuda_version: str = ""  # the CUDA pycuda was compiled against (may differ from the runtime)


def _format_cuda_version(value: int) -> str:
    """CUDA encodes versions as 1000 * major + 10 * minor (12060 -> 12.6)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def cuda_runtime_version() -> str | None:
    """The CUDA runtime library's own version (`cudaRuntimeGetVersion`), None when none loads."""
    for name in _CUDART_NAMES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        value = ctypes.c_int(0)
        if lib.cudaRuntimeGetVersion(ctypes.byref(value)) == 0 and value.value > 0:
            return _format_cuda_version(value.value)
    return None


@functools.cache
def _unavailable_reason() -> str | None:
    try:
        import tensorrt as trt_mod
    except ImportError:
        return (
            "Python module 'tensorrt' is not installed (on Jetson it comes with JetPack: "
            "apt install python3-libnvinfer; pip wheels need NVIDIA's index)"
        )
    if not hasattr(trt_mod, "Builder"):
        # PyPI's tensorrt-stubs installs a bare `tensorrt/` folder of .pyi files, which Python
        # imports as an empty namespace package: present for mypy, absent at run time.
        return "the 'tensorrt' module here is only type stubs (tensorrt-stubs), not the TensorRT runtime"
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        return f"pycuda is not importable ({exc}); install it on the device (pip install pycuda)"
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own cuda.Error subclasses and RuntimeError
        return f"CUDA driver not usable: {exc}"
    if count == 0:
        return "no CUDA device found"
    return None


def platform_info(device_id: int = 0) -> PlatformInfo:
    """Versions and GPU properties that go into the engine cache key."""
    import pycuda.driver as cuda
    import tensorrt as trt

    cuda.init()
    device = cuda.Device(device_id)
    major, minor = device.compute_capability()
    builder = trt.Builder(_structlog_trt_logger())
    fast_fp16 = bool(builder.platform_has_fast_fp16)
    compiled = ".".join(str(p) for p in cuda.get_version())
    return PlatformInfo(
        tensorrt_version=str(trt.__version__),
        # The runtime, not pycuda's compile-time CUDA: an engine depends on the libraries it runs on.
        cuda_version=cuda_runtime_version() or compiled,
        compute_capability=f"{major}.{minor}",
        fast_fp16=fast_fp16,
        device_name=str(device.name()),
        driver_version=_format_cuda_version(int(cuda.get_driver_version())),
        pycuda_cuda_version=compiled,
    )


@functools.cache
def _structlog_trt_logger() -> trt.ILogger:
    """One process-wide logger routing TensorRT's messages into structlog (TensorRT wants it to outlive
    every builder, runtime and engine created with it, hence the cache)."""
    import tensorrt as trt

    class _StructlogLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity <= trt.ILogger.Severity.ERROR:
                log.error("tensorrt_message", severity=severity.name, message=msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("tensorrt_message", severity=severity.name, message=msg)
            elif severity == trt.ILogger.Severity.INFO:
                log.debug("tensorrt_message", severity=severity.name, message=msg)

    return _StructlogLogger()


def static_input_shapes(onnx_path: Path, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Input shapes for the engine: the ONNX's static dims; a symbolic batch dim becomes `batch`.

    Any other symbolic dim is an error: TensorRT needs it fixed by an optimisation profile and our
    models have none (the static-shape test guards this).
    """
    inputs, _ = graph_io(onnx_path)
    shapes: dict[str, tuple[int, ...]] = {}
    for info in inputs:
        dims: list[int] = []
        for axis, dim in enumerate(info.shape):
            if isinstance(dim, int) and dim > 0:
                dims.append(dim)
            elif axis == 0:
                dims.append(batch)
            else:
                raise ValueError(
                    f"{onnx_path.name}: input {info.name!r} axis {axis} is dynamic ({dim!r}); "
                    "TensorRT needs a static shape here: re-export the model with fixed dims"
                )
        shapes[info.name] = tuple(dims)
    return shapes


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def build_serialized_engine(onnx_path: Path, precision: Precision, input_shapes: dict[str, tuple[int, ...]]) -> bytes:
    """Parse `onnx_path` and build a serialized engine (minutes on a Jetson: never in the hot path)."""
    import tensorrt as trt

    logger = _structlog_trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data files relative to the ONNX path.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        for err in errors:
            log.error("tensorrt_onnx_parse_error", model=onnx_path.name, error=err)
        raise BackendUnavailable(
            f"TensorRT could not parse {onnx_path}: {'; '.join(errors) or 'unknown error'}; "
            "check the operator list in tests/engine/test_engine_tensorrt_static.py"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        # TensorRT enables TF32 by default on Ampere and later (Orin): matmuls and convolutions would
        # then run with a 10-bit mantissa. The FP32 engine is the parity reference: make it strict.
        config.clear_flag(trt.BuilderFlag.TF32)
    # An optimisation profile is only needed (and only allowed) when an input is dynamic.
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(d < 0 for d in _dims(tensor.shape)):
            dynamic = True
            shape = trt.Dims(list(input_shapes[tensor.name]))
            profile.set_shape(tensor.name, shape, shape, shape)
    if dynamic:
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailable(
            f"TensorRT failed to build an engine for {onnx_path} ({precision}); see tensorrt_message logs"
        )
    return bytes(memoryview(serialized))


@dataclass
class _Binding:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    host: np.ndarray
    device: Any  # pycuda.driver.DeviceAllocation (pycuda has no type stubs)
    is_input: bool


class TensorRTSession(Session):
    """One deserialized engine with its execution context, stream and buffers on one CUDA device."""

    def __init__(self, engine_bytes: bytes, device_id: int = 0) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        cuda.init()
        self._cuda_context = cuda.Device(device_id).retain_primary_context()
        self._bindings: list[_Binding] = []
        self._stream: Any = None  # pycuda.driver.Stream
        self._closed = False
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._cuda_context.push()
        try:
            self._runtime = trt.Runtime(_structlog_trt_logger())
            self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self._engine is None:
                raise BackendUnavailable(
                    "TensorRT could not deserialize the engine (built for another TensorRT or GPU?); "
                    "run `egate models build --tensorrt` on this device"
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            for index in range(self._engine.num_io_tensors):
                name = self._engine.get_tensor_name(index)
                shape = _dims(self._context.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                host = cuda.pagelocked_empty(shape, dtype)
                device = cuda.mem_alloc(host.nbytes)
                is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                self._bindings.append(_Binding(name, shape, dtype, host, device, is_input))
                if not self._context.set_tensor_address(name, int(device)):
                    raise BackendUnavailable(f"TensorRT refused the buffer address of tensor {name!r}")
        except BaseException:
            try:
                self._release()
            finally:
                cuda.Context.pop()
                self._cuda_context.detach()
                self._closed = True
            raise
        cuda.Context.pop()
        self.input_names = [b.name for b in self._bindings if b.is_input]
        self.output_names = [b.name for b in self._bindings if not b.is_input]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import pycuda.driver as cuda

        if self._closed or self._context is None:
            raise RuntimeError("TensorRT session is closed")
        self._cuda_context.push()
        try:
            for b in self._bindings:
                if b.is_input:
                    array = np.asarray(inputs[b.name], dtype=b.dtype)
                    if array.shape != b.shape:
                        # The CPU backends take any batch; the engine has one static shape.
                        raise DeviceError(f"input {b.name!r} has shape {array.shape}, the engine wants {b.shape}")
                    np.copyto(b.host, array)
                    cuda.memcpy_htod_async(b.device, b.host, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise DeviceError("TensorRT execute_async_v3 returned False; see tensorrt_message logs")
            for b in self._bindings:
                if not b.is_input:
                    cuda.memcpy_dtoh_async(b.host, b.device, self._stream)
            self._stream.synchronize()
            return [b.host.copy() for b in self._bindings if not b.is_input]
        finally:
            cuda.Context.pop()

    def _release(self) -> None:
        for b in self._bindings:
            b.device.free()
        self._bindings = []
        # The stream is a CUDA object of the pushed context: drop it here, not at garbage collection.
        self._stream = None
        # Order matters: context before engine before runtime (each holds the next one's memory).
        self._context = None
        self._engine = None
        self._runtime = None

    def close(self) -> None:
        if self._closed:
            return
        import pycuda.driver as cuda

        self._closed = True
        self._cuda_context.push()
        try:
            self._release()
        finally:
            cuda.Context.pop()
            self._cuda_context.detach()


class TensorRTBackend(Backend):
    """Loads cached engines; builds them only when `allow_build` (the `models build --tensorrt` path)."""

    name = "tensorrt"
    is_device = True

    def __init__(
        self,
        cache_dir: Path | None = None,
        precision: PrecisionChoice = "auto",
        *,
        allow_build: bool = False,
        device_id: int = 0,
    ) -> None:
        self.cache_dir = cache_dir
        self.precision = precision
        self.allow_build = allow_build
        self.device_id = device_id

    @classmethod
    def configured(cls, settings: BaseModel | None, model_dir: Path | None) -> TensorRTBackend:
        own = settings if isinstance(settings, TensorRTSettings) else TensorRTSettings()
        # The engines live where `egate models build --tensorrt` puts them: beside the models.
        return cls(cache_dir=model_dir / "tensorrt" if model_dir is not None else None, precision=own.precision)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _unavailable_reason()

    def resolved_precision(self, platform: PlatformInfo) -> Precision:
        if self.precision == "auto":
            return "fp16" if platform.fast_fp16 else "fp32"
        return self.precision

    def engine_key(self, onnx_path: Path, platform: PlatformInfo) -> EngineKey:
        return EngineKey(
            onnx_sha256=sha256_file(onnx_path),
            tensorrt_version=platform.tensorrt_version,
            cuda_version=platform.cuda_version,
            compute_capability=platform.compute_capability,
            device_name=platform.device_name,
            precision=self.resolved_precision(platform),
            input_shapes=static_input_shapes(onnx_path),
            recipe_version=BUILD_RECIPE_VERSION,
        )

    def _cache(self, onnx_path: Path) -> EngineCache:
        return EngineCache(self.cache_dir or onnx_path.parent / "tensorrt")

    def ensure_engine(self, onnx_path: Path) -> Path:
        """Path of a valid cached engine for `onnx_path`, building it if `allow_build` is set."""
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"TensorRT backend unavailable: {reason}")
        platform = platform_info(self.device_id)
        key = self.engine_key(onnx_path, platform)
        cache = self._cache(onnx_path)
        try:
            found = cache.lookup(key, onnx_path.stem)
        except EngineCacheError:
            if not self.allow_build:
                raise
            found = None
        if found is not None:
            return found
        if not self.allow_build:
            raise EngineCacheError(
                f"no TensorRT engine for {onnx_path.name} ({key.precision}, TensorRT "
                f"{key.tensorrt_version}, SM {key.compute_capability}) in {cache.directory}; "
                "run `egate models build --tensorrt` (the egate-models-build oneshot does it at boot)"
            )
        log.info("tensorrt_engine_build", model=onnx_path.name, precision=key.precision)
        engine = build_serialized_engine(onnx_path, key.precision, key.input_shapes)
        cache.store(key, onnx_path.stem, engine)
        path, _ = cache.paths(key, onnx_path.stem)
        return path

    def load(self, onnx_path: Path, *, threads: int = 1) -> Session:
        """A session on the cached engine; any failure of the GPU stack is `BackendUnavailable`."""
        del threads  # GPU inference: CPU thread count does not apply
        try:
            engine_path = self.ensure_engine(onnx_path)
            return TensorRTSession(engine_path.read_bytes(), self.device_id)
        except BackendUnavailable:
            raise
        except ValueError as exc:  # a model TensorRT cannot take with static shapes
            raise BackendUnavailable(f"TensorRT cannot load {onnx_path.name}: {exc}") from exc
        except Exception as exc:
            if not is_device_error(exc):
                raise
            raise BackendUnavailable(
                f"TensorRT/CUDA failed loading {onnx_path.name}: {type(exc).__name__}: {exc}"
            ) from exc


BACKEND = BackendPlugin(
    TensorRTBackend,
    "GPU: NVIDIA TensorRT 10 engines built on the device (Jetson); a model it cannot run moves to the CPU",
    settings=TensorRTSettings,
    moved_settings={"tensorrt_precision": "precision"},
)
