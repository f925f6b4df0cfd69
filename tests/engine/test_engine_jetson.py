"""What a Jetson's first run depends on, checked without a GPU.

No TensorRT or CUDA can run here, so each check works at the seam the device code has:
- GPU errors (the exception types pycuda and TensorRT raise, injected at `Session.run` and
  `TensorRTBackend.ensure_engine`) move a model to the CPU, and health says so;
- the build recipe (a recording stand-in for the `tensorrt` module: FP16 set, TF32 cleared for FP32);
- the precision the build oneshot uses comes from the gate's config;
- the parity gates' arithmetic on two real CPU backends' outputs, and their failures when perturbed;
- the units allow every device node CUDA opens on JetPack 5 and 6, and the strace parser finds the
  nodes a real traced process opened.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from typer.testing import CliRunner

from egate.engines.backends.base import BackendUnavailable, FallbackSession, Session
from egate.engines.backends.jetson_devices import (
    JETSON_DEVICE_NODES,
    missing_from_unit,
    opened_device_nodes,
    unit_device_allow,
)
from egate.engines.backends.plugins import tensorrt as trt_backend
from egate.engines.backends.plugins.tensorrt import TensorRTBackend
from egate.engines.backends.registry import create_backend, load_session
from egate.engines.config import EngineConfig
from egate.engines.detector import Detection
from egate.engines.models import load_manifest
from egate.engines.parity import (
    DETECTOR_MIN_IOU,
    FP16_MAX_EUCLIDEAN,
    FP32_MIN_COSINE,
    detector_gate,
    embedder_gate,
)
from egate.engines.pipeline import FaceEngine
from egate.tools.diag import engines as diag_engines
from egate.tools.models import commands as models_cmd
from tests.support.daemon_fixtures import GateDaemon

ROOT = Path(__file__).resolve().parents[2]


def _pycuda_error(name: str) -> type[Exception]:
    """An exception class as pycuda defines it (module `pycuda._driver`), for injection."""
    return type(name, (Exception,), {"__module__": "pycuda._driver"})


class _DeviceSession(Session):
    """A "GPU" session: a real CPU session underneath that raises `error` from call number `fail_at` on."""

    def __init__(self, inner: Session, error: BaseException, fail_at: int) -> None:
        self.inner, self.error, self.fail_at, self.calls, self.closed = inner, error, fail_at, 0, False
        self.input_names, self.output_names = inner.input_names, inner.output_names

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise self.error
        return self.inner.run(inputs)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def _embedder_input(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (1, 3, 150, 150)).astype(np.float32)


@pytest.mark.parametrize(
    "error",
    [
        _pycuda_error("LogicError")("cuMemcpyHtoDAsync failed: invalid context"),
        _pycuda_error("MemoryError")("cuMemAlloc failed: out of memory"),
        _pycuda_error("LaunchError")("cuStreamSynchronize failed: unspecified launch failure"),
        MemoryError("out of memory"),
        trt_backend.DeviceError("TensorRT execute_async_v3 returned False"),
    ],
    ids=["pycuda-LogicError", "pycuda-MemoryError", "pycuda-LaunchError", "MemoryError", "execute-false"],
)
def test_a_gpu_error_while_running_moves_the_model_to_the_cpu_for_good(
    model_dir: Path,
    error: BaseException,
) -> None:
    path = load_manifest(model_dir).path(model_dir, "embedder")
    x = _embedder_input()
    with create_backend("onnxruntime").load(path) as reference:
        expected = reference.run({reference.input_names[0]: x})[0]
    device = _DeviceSession(create_backend("onnxruntime").load(path), error, fail_at=2)
    device.backend_name = "tensorrt"
    session = FallbackSession(device, "onnxruntime", lambda: create_backend("onnxruntime").load(path))
    name = session.input_names[0]
    with structlog.testing.capture_logs() as logs:
        first = session.run({name: x})[0]  # on the "GPU"
        second = session.run({name: x})[0]  # the GPU fails: this very call is answered by the CPU
        third = session.run({name: x})[0]
    assert np.allclose(first, expected) and np.allclose(second, expected) and np.allclose(third, expected)
    assert device.calls == 2 and device.closed, "the failed device session is closed and never called again"
    assert session.backend_name == "onnxruntime"
    assert session.fallback_reason is not None and type(error).__name__ in session.fallback_reason
    assert [e["event"] for e in logs].count("engine_device_error_fallback") == 1
    session.close()


def test_a_caller_error_is_not_mistaken_for_a_gpu_failure(model_dir: Path) -> None:
    path = load_manifest(model_dir).path(model_dir, "embedder")
    device = _DeviceSession(create_backend("onnxruntime").load(path), KeyError("input"), fail_at=1)
    session = FallbackSession(device, "onnxruntime", lambda: create_backend("onnxruntime").load(path))
    with pytest.raises(KeyError):
        session.run({"input": _embedder_input()})
    assert session.fallback_reason is None and not device.closed
    session.close()


class _FailingTensorRT(TensorRTBackend):
    """The real backend class with its engine lookup raising what the GPU stack raises on a device."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def ensure_engine(self, onnx_path: Path) -> Path:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        _pycuda_error("MemoryError")("cuMemAlloc failed: out of memory"),
        _pycuda_error("LogicError")("cuCtxPushCurrent failed: invalid device context"),
        ValueError("input 'x' axis 2 is dynamic ('h'); TensorRT needs a static shape here"),
    ],
    ids=["pycuda-MemoryError", "pycuda-LogicError", "dynamic-shape"],
)
def test_a_gpu_error_while_loading_falls_back_instead_of_stopping_the_lane(
    model_dir: Path,
    error: BaseException,
) -> None:
    path = load_manifest(model_dir).path(model_dir, "detector_short")
    backend = _FailingTensorRT(error)
    with pytest.raises(
        BackendUnavailable, match=type(error).__name__ if "pycuda" in type(error).__module__ else "static"
    ):
        backend.load(path)
    with load_session(backend, path, fallback="onnxruntime") as session:
        out = session.run({session.input_names[0]: np.zeros((1, 3, 128, 128), np.float32)})
    assert [o.shape for o in out] == [(1, 896, 16), (1, 896, 1)]
    assert session.backend_name == "onnxruntime"
    assert session.fallback_reason is not None and path.name in session.fallback_reason


def test_face_engine_reports_running_on_cpu_with_the_reason(model_dir: Path) -> None:
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here: the engine would not fall back")
    with FaceEngine.from_config(EngineConfig(backend="tensorrt"), model_dir) as engine:
        status = engine.backend_status()
    assert status["configured"] == "tensorrt" and status["running"] == "onnxruntime"
    assert status["fallback_reason"] == f"tensorrt unavailable: {reason}"
    with FaceEngine.from_config(EngineConfig(backend="onnxruntime"), model_dir) as engine:
        assert engine.backend_status() == {
            "configured": "onnxruntime",
            "running": "onnxruntime",
            "fallback_reason": None,
        }


@pytest.mark.slow
def test_daemon_configured_for_tensorrt_stays_in_service_on_the_cpu_and_says_why(tmp_path: Path) -> None:
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here: the daemon would not fall back")
    daemon = GateDaemon(tmp_path, sim=None, broker=None, extra='[engine]\nbackend = "tensorrt"\n').start()
    try:
        daemon.wait(lambda c: c.call("engines.status")["running_backend"] is not None, 60, "the engine to load")
        engines = daemon.call("engines.status")
        assert engines["backend"] == "tensorrt" and engines["running_backend"] == "onnxruntime"
        assert reason in engines["fallback_reason"]
        health = daemon.call("status")
        assert "running on CPU" in json.dumps(health)
    finally:
        daemon.stop()


# ------------------------------------------------------------------ the build recipe and the cache key


class _Recorder:
    """Records the builder-config flags the recipe sets and clears."""

    def __init__(self) -> None:
        self.set: list[str] = []
        self.cleared: list[str] = []


def _fake_tensorrt(recorder: _Recorder) -> types.ModuleType:
    """A stand-in `tensorrt` module with the calls `build_serialized_engine` makes (TensorRT 10 names)."""
    trt = types.ModuleType("tensorrt")

    class BuilderFlag:
        FP16, TF32 = "FP16", "TF32"

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class Config:
        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            assert pool == "WORKSPACE" and size > 0

        def set_flag(self, flag: str) -> None:
            recorder.set.append(flag)

        def clear_flag(self, flag: str) -> None:
            recorder.cleared.append(flag)

        def add_optimization_profile(self, profile: object) -> None:
            raise AssertionError("static models need no optimisation profile")

    class Network:
        num_inputs = 0

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> object:
            return object()

        def build_serialized_network(self, network: object, config: object) -> bytes:
            return b"engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: object, logger: object) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return Path(path).exists()

    trt.Builder, trt.OnnxParser, trt.BuilderFlag, trt.MemoryPoolType = Builder, OnnxParser, BuilderFlag, MemoryPoolType  # type: ignore[attr-defined]
    return trt


@pytest.mark.parametrize(("precision", "sets", "clears"), [("fp16", ["FP16"], []), ("fp32", [], ["TF32"])])
def test_build_recipe_sets_fp16_or_makes_fp32_strict(
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    sets: list[str],
    clears: list[str],
) -> None:
    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(recorder))
    monkeypatch.setattr(trt_backend, "_structlog_trt_logger", lambda: object())
    path = load_manifest(model_dir).path(model_dir, "embedder")
    assert trt_backend.build_serialized_engine(path, precision, {"input": (1, 3, 150, 150)}) == b"engine"  # type: ignore[arg-type]
    assert recorder.set == sets and recorder.cleared == clears


def test_engine_key_carries_runtime_device_and_recipe(model_dir: Path) -> None:
    path = load_manifest(model_dir).path(model_dir, "detector_short")
    platform = trt_backend.PlatformInfo(
        tensorrt_version="10.3.0.30",
        cuda_version="12.6",
        compute_capability="8.7",
        fast_fp16=True,
        device_name="Orin",
        driver_version="12.6",
        pycuda_cuda_version="12.2",
    )
    backend = TensorRTBackend(precision="auto")
    key = backend.engine_key(path, platform)
    assert key.cuda_version == "12.6", "the runtime's CUDA, not the one pycuda was compiled for"
    assert key.device_name == "Orin" and key.recipe_version == trt_backend.BUILD_RECIPE_VERSION
    assert key.precision == "fp16" and TensorRTBackend(precision="fp32").engine_key(path, platform).precision == "fp32"
    others = [
        backend.engine_key(path, replace(platform, device_name="Xavier")),
        backend.engine_key(path, replace(platform, cuda_version="12.2")),
        key.model_copy(update={"recipe_version": key.recipe_version + 1}),
    ]
    assert len({k.digest() for k in [key, *others]}) == 4
    assert "fp16" in key.file_stem("blazeface_short_range")


def test_cuda_version_encoding() -> None:
    assert trt_backend._format_cuda_version(12060) == "12.6"
    assert trt_backend._format_cuda_version(11040) == "11.4"


# ------------------------------------------------------------------ the build oneshot's precision


def _config(tmp_path: Path, precision: str) -> Path:
    cfg = tmp_path / "egate.toml"
    cfg.write_text(
        'schema_version = 1\n[gate]\nsite_id = "s1"\ngate_id = "g1"\n'
        f'[engine]\nbackend = "tensorrt"\n[engine.tensorrt]\nprecision = "{precision}"\n'
    )
    return cfg


def test_build_oneshot_reads_the_configured_precision_and_says_why_it_skipped(
    model_dir: Path,
    tmp_path: Path,
) -> None:
    assert models_cmd.configured_precision(_config(tmp_path, "fp32")) == "fp32"
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here: nothing is skipped")
    app = _app(models_cmd.register)
    args = ["build", "--tensorrt", "--dir", str(model_dir), "--config", str(_config(tmp_path, "fp32"))]
    skipped = CliRunner().invoke(app, [*args, "--if-gpu", "--json"])
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.stdout)["tensorrt"] == {"skipped": reason}
    assert f"TensorRT build skipped: {reason}" in skipped.stderr
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1 and reason in failed.stderr


def test_build_unit_runs_the_configured_precision_and_never_skips_silently() -> None:
    text = (ROOT / "systemd" / "egate-tensorrt-build.service").read_text()
    assert "ConditionPathExists" not in text
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "--tensorrt" in exec_start and "--if-gpu" in exec_start and "--config /etc/egate/egate.toml" in exec_start


def _app(register: Any) -> Any:
    import typer

    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)
    return app


# ------------------------------------------------------------------ parity gates


@pytest.mark.slow
def test_parity_gates_pass_for_two_real_backends_on_shipped_frames(model_dir: Path) -> None:
    # The device check's own comparison, with OpenCV DNN standing in for the GPU backend.
    frames = diag_engines.shipped_face_frames(6)
    assert len(frames) == 6
    for precision in ("fp32", "fp16"):
        report = diag_engines.parity_report(model_dir, frames, lambda: create_backend("opencv"), precision)
        assert report["faces"] >= 3
        gates = report["gates"]
        assert set(gates) == {"embedder", "detector_short", "detector_full"}
        assert all(g["ok"] for g in gates.values()), gates
    assert gates["detector_short"]["worst"] >= DETECTOR_MIN_IOU


def test_embedder_gates_fail_past_their_limits() -> None:
    rng = np.random.default_rng(7)
    ref = [rng.normal(0, 0.1, 128).astype(np.float32) for _ in range(5)]
    assert embedder_gate(ref, ref, "fp32").ok and embedder_gate(ref, ref, "fp16").ok
    # FP16: one descriptor off by just over the limit fails; just under passes.
    nudge = np.zeros(128, np.float32)
    nudge[0] = FP16_MAX_EUCLIDEAN * 1.05
    off = [*ref[:4], ref[4] + nudge]
    assert not embedder_gate(ref, off, "fp16").ok
    assert embedder_gate(ref, [*ref[:4], ref[4] + nudge * 0.9], "fp16").ok
    # FP32: a rotation that keeps norms but drops cosine below 0.9999.
    bent = ref[0] + rng.normal(0, 0.1, 128).astype(np.float32) * 0.05
    result = embedder_gate(ref[:1], [bent], "fp32")
    assert result.worst < FP32_MIN_COSINE and not result.ok
    with pytest.raises(ValueError, match="same non-zero number"):
        embedder_gate(ref, ref[:2], "fp16")


def _det(x: float, score: float = 0.9) -> Detection:
    return Detection(box_xyxy=(x, 10.0, x + 50.0, 60.0), score=score, keypoints6=np.zeros((6, 2), np.float32))


def test_detector_gate_fails_on_a_missing_face_a_moved_box_or_a_score_shift() -> None:
    ref = [[_det(0), _det(100)], [_det(20)]]
    assert detector_gate("d", ref, [[_det(100), _det(0)], [_det(20)]]).ok  # order does not matter
    missing = detector_gate("d", ref, [[_det(0)], [_det(20)]])
    assert not missing.ok and missing.worst == 0.0 and "1 faces, reference 2" in missing.detail
    moved = detector_gate("d", ref, [[_det(0), _det(102)], [_det(20)]])  # IoU 48/52 = 0.92
    assert not moved.ok and moved.worst < DETECTOR_MIN_IOU
    shifted = detector_gate("d", ref, [[_det(0), _det(100, 0.92)], [_det(20)]])
    assert not shifted.ok and "score difference" in shifted.detail


# ------------------------------------------------------------------ device nodes and the sandbox


@pytest.mark.parametrize("unit", ["egate.service", "egate-tensorrt-build.service"])
def test_units_allow_every_node_cuda_opens_on_jetpack(unit: str) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    assert "DevicePolicy=closed" in text
    assert missing_from_unit(text) == []
    assert "/dev/nvgpu/igpu0/ctrl" in JETSON_DEVICE_NODES and "/dev/host1x-fence" in JETSON_DEVICE_NODES
    assert missing_from_unit(text.replace("DeviceAllow=/dev/nvgpu/igpu0/power rw\n", "")) == ["/dev/nvgpu/igpu0/power"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace missing: make setup installs it")
def test_strace_parser_finds_the_nodes_a_real_process_opened(tmp_path: Path) -> None:
    out = tmp_path / "trace"
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=open,openat",
            "-o",
            str(out),
            sys.executable,
            "-c",
            "import os; os.openpty()",
        ],
        check=True,
        timeout=60,
    )
    opened = opened_device_nodes(out.read_text())
    assert "/dev/ptmx" in opened
    assert "/dev/null" not in opened and len(opened) == len(set(opened))


def test_sandbox_command_carries_the_units_user_and_device_policy() -> None:
    text = (ROOT / "systemd" / "egate.service").read_text()
    command = diag_engines.sandbox_command(text, ["egate", "diag", "engines", "--device-check"])
    assert command[:2] == ["systemd-run", "--pipe"] and command[-4:] == ["egate", "diag", "engines", "--device-check"]
    props = [command[i + 1] for i, arg in enumerate(command) if arg == "-p"]
    assert "User=egate" in props and "DevicePolicy=closed" in props
    assert {f"DeviceAllow={node} rw" for node in JETSON_DEVICE_NODES} <= set(props)
    assert set(unit_device_allow(text)) == {
        p.split("=", 1)[1].split()[0] for p in props if p.startswith("DeviceAllow=")
    }


def test_device_check_here_fails_with_versions_and_the_fix(model_dir: Path) -> None:
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here: the device check would run for real")
    result = CliRunner().invoke(
        _app(diag_engines.register), ["engines", "--device-check", "--dir", str(model_dir), "--json"]
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["device_check_ok"] is False
    versions = report["device_check"]["versions"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3])) and "onnxruntime" in versions
    assert reason in report["failures"][0] and "--system-site-packages" in result.stderr


def test_gpu_extra_never_pulls_a_tensorrt_wheel_on_a_jetson() -> None:
    import tomllib
    from packaging.requirements import Requirement

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    requirements = [Requirement(r) for r in extra]

    def pulled(machine: str) -> set[str]:
        env = {"platform_machine": machine, "sys_platform": "linux", "python_version": "3.10"}
        return {r.name for r in requirements if r.marker is None or r.marker.evaluate(env)}

    assert pulled("aarch64") == {"pycuda"}
    assert pulled("x86_64") == {"pycuda", "tensorrt"}
