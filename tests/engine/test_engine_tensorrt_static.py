"""TensorRT checks that can run honestly without a GPU.

No TensorRT runtime can be installed here (PyPI's TensorRT wheels fetch from NVIDIA's index; the
lent GPU machine has no TensorRT either). What is checked instead:
- every operator of every shipped ONNX model is supported by TensorRT 10's ONNX parser, at its
  opset, with the operator-specific restrictions that apply to our graphs;
- every tensor shape in every model is static (so no optimisation profile is needed);
- the backend module type-checks against `tensorrt-stubs` (the TensorRT 10 API);
- the engine cache key, the cache sidecar and its checks, the atomic write, and the CPU fallback.
Tests that need TensorRT itself skip with the reason the backend gives.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import structlog
from onnx import helper

from egate.engines.atomic_file import atomic_output, atomic_write_bytes
from egate.engines.backends.base import BackendUnavailable
from egate.engines.backends.plugins.tensorrt import TensorRTBackend, static_input_shapes
from egate.engines.backends.registry import create_backend, load_session
from egate.engines.backends.tensorrt_cache import EngineCache, EngineCacheError, EngineKey
from egate.engines.models import Role, load_manifest

ROOT = Path(__file__).resolve().parents[2]

# Operators marked "Y" in onnx-tensorrt docs/operators.md for TensorRT 10 (the 10.15 matrix), kept
# only where TensorRT 8.4's matrix already said "Y" too, so the list holds for every TensorRT 10.x a
# JetPack ships (JetPack 6: 10.3). Restrictions that concern our graphs are checked separately below.
TRT10_SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
    Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
    GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log
    LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg
    NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomUniform
    RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
    TopK Transpose Unsqueeze Upsample Where Xor
    """.split()  # noqa: SIM905 - a word list reads like the doc table it was taken from
)
# TensorRT 10.0 parses opsets 9..20 (later 10.x widen the top); the floor of the family is the bound.
TRT10_OPSET_RANGE = (9, 20)
# Resize restrictions (same doc): these coordinate transformation and interpolation modes only.
RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_MODES = {"nearest", "linear"}

ONNX_ROLES: tuple[Role, ...] = ("detector_short", "detector_full", "embedder")


def _onnx_models(cache: Path) -> list[tuple[Role, Path]]:
    manifest = load_manifest(cache)
    return [(role, manifest.path(cache, role)) for role in ONNX_ROLES]


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    out: dict[str, object] = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def test_every_shipped_model_is_covered(model_dir: Path) -> None:
    onnx_files = {f.filename for f in load_manifest(model_dir).files.values() if f.filename.endswith(".onnx")}
    assert onnx_files == {p.name for _, p in _onnx_models(model_dir)}


@pytest.mark.parametrize("role", ONNX_ROLES)
def test_operators_and_opset_supported_by_tensorrt10(model_dir: Path, role: str) -> None:
    path = load_manifest(model_dir).path(model_dir, role)  # type: ignore[arg-type]
    model = onnx.load(str(path))
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert set(opsets) == {"ai.onnx"}, f"{path.name}: custom domains need TensorRT plugins: {opsets}"
    lo, hi = TRT10_OPSET_RANGE
    assert lo <= opsets["ai.onnx"] <= hi, f"{path.name}: opset {opsets['ai.onnx']} outside TensorRT 10's {lo}..{hi}"
    initializers = {i.name for i in model.graph.initializer}
    unsupported = sorted({n.op_type for n in model.graph.node} - TRT10_SUPPORTED_OPS)
    assert not unsupported, f"{path.name}: operators TensorRT 10 cannot parse: {unsupported}"
    for node in model.graph.node:
        attrs = _attrs(node)
        where = f"{path.name} node {node.name or node.op_type}"
        if node.op_type == "Conv":
            # "2D or 3D convolutions only"; TensorRT needs the weights as build-time constants.
            assert len(attrs.get("kernel_shape", [0, 0])) == 2, where  # type: ignore[arg-type]
            assert node.input[1] in initializers, f"{where}: Conv weights must be an initializer"
        elif node.op_type in ("MaxPool", "AveragePool"):
            # "2D or 3D pooling only. Indices output unsupported. dilations empty or all ones."
            assert len(attrs["kernel_shape"]) == 2, where  # type: ignore[arg-type]
            assert len(node.output) == 1, f"{where}: MaxPool Indices output is unsupported"
            assert all(d == 1 for d in attrs.get("dilations", [1, 1])), where  # type: ignore[attr-defined]
        elif node.op_type == "Resize":
            assert attrs.get("coordinate_transformation_mode", "half_pixel") in RESIZE_COORD_MODES, where
            assert attrs.get("mode", "nearest") in RESIZE_MODES, where
            assert not attrs.get("antialias", 0), f"{where}: antialiasing is unsupported"
            # Output size given as a constant (opset 11 `sizes`), so the shape is known at build time.
            assert node.input[-1] in initializers, f"{where}: Resize sizes must be constant"
        elif node.op_type == "Pad":
            assert attrs.get("mode", "constant") == "constant", where
            assert node.input[1] in initializers, f"{where}: Pad pads must be constant"
        elif node.op_type == "Reshape":
            assert node.input[1] in initializers, f"{where}: Reshape shape must be constant"


@pytest.mark.parametrize("role", ONNX_ROLES)
def test_all_shapes_static_so_no_optimisation_profile_is_needed(model_dir: Path, role: str) -> None:
    path = load_manifest(model_dir).path(model_dir, role)  # type: ignore[arg-type]
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)), strict_mode=True)
    tensors = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    assert len(tensors) >= len(inferred.graph.node)  # shape inference reached every node output
    dynamic = [
        t.name
        for t in tensors
        if not all(d.HasField("dim_value") and d.dim_value > 0 for d in t.type.tensor_type.shape.dim)
    ]
    assert not dynamic, f"{path.name}: tensors without a static shape: {dynamic[:10]}"
    # The backend derives the engine's input shapes from the same file.
    shapes = static_input_shapes(path)
    assert all(all(d > 0 for d in s) for s in shapes.values())
    assert shapes[inferred.graph.input[0].name][0] == 1


def _dynamic_model(tmp_path: Path) -> Path:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, "h", 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3, "h", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_dynamic_non_batch_dim_is_refused_with_the_axis_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"input 'x' axis 2 is dynamic \('h'\)"):
        static_input_shapes(_dynamic_model(tmp_path))


# ------------------------------------------------------------------ type check against the stubs


def _patched_stub_dir(tmp_path: Path) -> Path:
    """A copy of tensorrt-stubs that mypy can parse.

    The package ships `tensorrt/__init__.pyi` without `py.typed`, so a plain mypy run treats
    `tensorrt` as Any and checks nothing. Put on MYPYPATH, two generated signatures do not parse
    (a parameter named `in`, a non-default after defaults); they are patched in the copy only.
    """
    import tensorrt_bindings

    site = Path(tensorrt_bindings.__path__[0]).parent
    out = tmp_path / "stubs"
    for pkg in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / pkg, out / pkg)
    stub = out / "tensorrt_bindings" / "tensorrt.pyi"
    text = re.sub(r"\bin: ", "in_: ", stub.read_text())
    text = text.replace(", channel_axis: int)", ", channel_axis: int = ...)")
    stub.write_text(text)
    return out


def _mypy(tmp_path: Path, stubs: Path, *files: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mypy.ini"
    config.write_text(
        textwrap.dedent(
            f"""\
            [mypy]
            python_version = 3.11
            mypy_path = {stubs}
            ignore_missing_imports = True
            check_untyped_defs = True
            warn_unused_ignores = False
            cache_dir = {tmp_path / "mypy_cache"}
            [mypy-tensorrt_bindings.*]
            ignore_errors = True
            [mypy-tensorrt]
            ignore_errors = True
            """
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.slow
def test_tensorrt_backend_type_checks_against_tensorrt10_stubs(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_bindings", reason="tensorrt-stubs is not installed")
    stubs = _patched_stub_dir(tmp_path)
    # Canary: prove the stubs are really in effect (an unknown TensorRT attribute must be an error).
    canary = tmp_path / "canary.py"
    canary.write_text("import tensorrt as trt\ntrt.Builder(trt.Logger()).no_such_method()\n")
    result = _mypy(tmp_path, stubs, str(canary), "engines/backends/plugins/tensorrt.py")
    lines = [ln for ln in result.stdout.splitlines() if ": error:" in ln]
    assert any("canary.py" in ln and "no_such_method" in ln for ln in lines), result.stdout
    ours = [ln for ln in lines if "canary.py" not in ln]
    assert not ours, "\n".join(ours)


# ------------------------------------------------------------------ cache key, sidecar, atomic write


def _key(**changes: object) -> EngineKey:
    base: dict[str, object] = {
        "onnx_sha256": "a" * 64,
        "tensorrt_version": "10.3.0.30",
        "cuda_version": "12.6",
        "compute_capability": "8.7",
        "device_name": "Orin",
        "precision": "fp16",
        "input_shapes": {"input": (1, 3, 128, 128)},
        "recipe_version": 2,
    }
    base.update(changes)
    return EngineKey.model_validate(base)


def test_cache_key_depends_on_every_component() -> None:
    reference = _key().digest()
    assert _key().digest() == reference  # deterministic
    variants = [
        _key(onnx_sha256="b" * 64),
        _key(tensorrt_version="10.3.0.31"),
        _key(cuda_version="12.2"),
        _key(compute_capability="7.2"),
        _key(device_name="Xavier"),
        _key(recipe_version=3),
        _key(precision="fp32"),
        _key(input_shapes={"input": (1, 3, 192, 192)}),
    ]
    digests = {v.digest() for v in variants}
    assert reference not in digests and len(digests) == len(variants)
    assert _key().file_stem("blazeface_short_range").startswith("blazeface_short_range.fp16.")


def test_cache_key_rejects_malformed_fields() -> None:
    with pytest.raises(ValueError, match="onnx_sha256"):
        _key(onnx_sha256="nothex")
    with pytest.raises(ValueError, match="compute_capability"):
        _key(compute_capability="orin")


def test_engine_cache_store_lookup_and_tamper_checks(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "trt")
    key = _key()
    assert cache.lookup(key, "m") is None
    blob = os.urandom(4096)
    entry = cache.store(key, "m", blob)
    engine_path, meta_path = cache.paths(key, "m")
    assert cache.lookup(key, "m") == engine_path and engine_path.read_bytes() == blob
    assert entry.engine_bytes == len(blob)
    # Another key never sees this engine.
    assert cache.lookup(_key(precision="fp32"), "m") is None
    # A sidecar whose key differs from its file name's (a copied/renamed pair) is refused.
    other = _key(cuda_version="11.4")
    shutil.copy(meta_path, cache.paths(other, "m")[1])
    shutil.copy(engine_path, cache.paths(other, "m")[0])
    with pytest.raises(EngineCacheError, match="written for another key"):
        cache.lookup(other, "m")
    # A damaged engine is refused, naming the file and the fix.
    engine_path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(EngineCacheError, match=r"m\.fp16\..*\.engine has sha256 .*egate models build --tensorrt"):
        cache.lookup(key, "m")
    # A corrupt sidecar too.
    meta_path.write_text("{not json")
    with pytest.raises(EngineCacheError, match="unreadable"):
        cache.lookup(key, "m")


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_output_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "engine.bin"
    target.write_bytes(b"good")

    class WriterCrashed(Exception):
        pass

    with pytest.raises(WriterCrashed), atomic_output(target) as tmp:
        tmp.write_bytes(b"half writ")
        raise WriterCrashed
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["engine.bin"]


# ------------------------------------------------------------------ availability and fallback


def _tensorrt_reason() -> str | None:
    return TensorRTBackend.unavailable_reason()


def test_import_on_cpu_machine_reports_reason_not_crash() -> None:
    reason = _tensorrt_reason()
    if reason is None:
        pytest.skip("TensorRT is available here; the CPU-machine behaviour is not observable")
    assert "tensorrt" in reason.lower() or "cuda" in reason.lower()


def test_create_backend_falls_back_and_logs_why() -> None:
    reason = _tensorrt_reason()
    if reason is None:
        pytest.skip("TensorRT is available here: no fallback happens")
    with structlog.testing.capture_logs() as logs:
        backend = create_backend("tensorrt", "onnxruntime")
    assert backend.name == "onnxruntime"
    event = next(e for e in logs if e["event"] == "engine_backend_fallback")
    assert event["backend"] == "tensorrt" and event["reason"] == reason
    with pytest.raises(BackendUnavailable, match="cannot run here"):
        create_backend("tensorrt", None)


def test_load_session_falls_back_when_the_engine_cannot_load(model_dir: Path) -> None:
    path = load_manifest(model_dir).path(model_dir, "detector_short")
    backend = TensorRTBackend(cache_dir=model_dir / "tensorrt")
    if _tensorrt_reason() is None:
        try:  # on a device, an engine may already be built; without one, ensure_engine raises
            backend.ensure_engine(path)
            pytest.skip("a TensorRT engine loads here: no fallback happens")
        except BackendUnavailable:
            pass
    with structlog.testing.capture_logs() as logs:
        session = load_session(backend, path, fallback="onnxruntime")
    with session:
        out = session.run({session.input_names[0]: np.zeros((1, 3, 128, 128), np.float32)})
    assert [o.shape for o in out] == [(1, 896, 16), (1, 896, 1)]
    assert any(e["event"] == "engine_backend_fallback" and e["model"] == path.name for e in logs)


@pytest.mark.gpu
def test_tensorrt_engine_matches_cpu_backend(model_dir: Path) -> None:
    reason = _tensorrt_reason()
    if reason is not None:
        pytest.skip(f"TensorRT backend unavailable: {reason}")
    path = load_manifest(model_dir).path(model_dir, "embedder")
    backend = TensorRTBackend(cache_dir=model_dir / "tensorrt", precision="fp32", allow_build=True)
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 150, 150)).astype(np.float32)
    with backend.load(path) as trt_session, create_backend("onnxruntime").load(path) as cpu:
        a = trt_session.run({trt_session.input_names[0]: x})[0].ravel()
        b = cpu.run({cpu.input_names[0]: x})[0].ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999
