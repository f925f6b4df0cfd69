"""`egate diag engines [--parity]`: which inference backends run here, and does TensorRT agree with the CPU.

Without `--parity` it lists every backend with its availability and, when unavailable, the reason
(no tensorrt module, stubs only, no pycuda, no CUDA device), plus the model cache status.

With `--parity` (run by a technician on the device): builds the TensorRT engines (FP32 and FP16)
for the shipped ONNX models, makes face chips from real photos with the CPU pipeline, runs the
embedder on TensorRT and on the CPU backend and compares the descriptors (cosine similarity; the
FP32 engine must reach >= 0.9999 on every chip, FP16 is reported), compares the detector's raw
outputs, and times both. Exits non-zero when TensorRT cannot run here (with the reason) or when
FP32 parity fails.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from tools.cli import DEFAULT_CONFIG

FP32_MIN_COSINE = 0.9999
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}


def backend_report(model_dir: Path) -> dict[str, Any]:
    from engines.backends.base import describe_backends
    from engines.models import ModelCacheError, load_manifest

    report: dict[str, Any] = {"backends": describe_backends(), "model_dir": str(model_dir)}
    try:
        manifest = load_manifest(model_dir)
        report["models"] = {"ok": True, "model_id": manifest.model_id}
    except ModelCacheError as exc:
        report["models"] = {"ok": False, "error": str(exc)}
    return report


def _default_images() -> list[Path]:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("EGATE_SHARED_DATA", default)) / "faces" / "lfw_krasserm"
    return sorted(root.glob("*/*.jpg"))[::5]


def _chips(images: list[Path], model_dir: Path, limit: int) -> list[Any]:
    """Aligned 150x150 RGB chips made by the CPU pipeline (the TensorRT side must see identical input)."""
    import cv2

    from engines.alignment import face_chip
    from engines.config import EngineConfig
    from engines.pipeline import FaceEngine

    chips = []
    with FaceEngine.from_config(EngineConfig(backend="onnxruntime"), model_dir) as engine:
        for path in images:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            obs = engine.enroll(bgr)
            if obs is None:
                continue
            chips.append(face_chip(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), obs.landmarks5))
            if len(chips) >= limit:
                break
    return chips


def _time_ms(fn: Any, repeats: int) -> float:
    import numpy as np

    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(samples)), 3)


def compare_backends(
    model_dir: Path,
    chips: list[Any],
    device: Callable[[str], Any],
    *,
    cpu_backend: str = "onnxruntime",
    precisions: tuple[str, ...] = ("fp32", "fp16"),
) -> dict[str, Any]:
    """Embedder and detector outputs of `device(precision)` against `cpu_backend` on the same chips."""
    import cv2
    import numpy as np

    from engines.backends.base import create_backend
    from engines.models import load_manifest

    manifest = load_manifest(model_dir)
    emb_path = manifest.path(model_dir, "embedder")
    det_path = manifest.path(model_dir, "detector_short")
    batch = [np.ascontiguousarray(c.astype(np.float32).transpose(2, 0, 1)[None]) for c in chips]
    # Detector input: the same real faces, scaled to the short-range model's 128x128 in [-1, 1].
    det_inputs = [
        np.ascontiguousarray(((cv2.resize(c, (128, 128)).astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None])
        for c in chips
    ]
    cpu = create_backend(cpu_backend)
    with cpu.load(emb_path) as cpu_emb, cpu.load(det_path) as cpu_det:
        ref = [cpu_emb.run({cpu_emb.input_names[0]: x})[0].ravel() for x in batch]
        ref_det = [cpu_det.run({cpu_det.input_names[0]: x}) for x in det_inputs]
        cpu_emb_ms = _time_ms(lambda: cpu_emb.run({cpu_emb.input_names[0]: batch[0]}), 20)
        cpu_det_ms = _time_ms(lambda: cpu_det.run({cpu_det.input_names[0]: det_inputs[0]}), 20)
    result: dict[str, Any] = {"chips": len(chips), "cpu_backend": cpu_backend, "embedder": {}, "detector_short": {}}
    for precision in precisions:
        backend = device(precision)
        with backend.load(emb_path) as dev_emb, backend.load(det_path) as dev_det:
            outs = [dev_emb.run({dev_emb.input_names[0]: x})[0].ravel() for x in batch]
            cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(outs, ref, strict=True)]
            dist = [float(np.linalg.norm(a - b)) for a, b in zip(outs, ref, strict=True)]
            det_diff = max(
                float(np.abs(d - c).max())
                for x, cref in zip(det_inputs, ref_det, strict=True)
                for d, c in zip(dev_det.run({dev_det.input_names[0]: x}), cref, strict=True)
            )
            result["embedder"][precision] = {
                "cosine_min": round(min(cos), 6),
                "cosine_mean": round(float(np.mean(cos)), 6),
                "euclidean_max": round(max(dist), 6),
                "device_ms": _time_ms(lambda: dev_emb.run({dev_emb.input_names[0]: batch[0]}), 20),
                "cpu_ms": cpu_emb_ms,
            }
            result["detector_short"][precision] = {
                "max_abs_raw_diff": round(det_diff, 6),
                "device_ms": _time_ms(lambda: dev_det.run({dev_det.input_names[0]: det_inputs[0]}), 20),
                "cpu_ms": cpu_det_ms,
            }
    if "fp32" in result["embedder"]:
        result["fp32_parity_ok"] = result["embedder"]["fp32"]["cosine_min"] >= FP32_MIN_COSINE
    return result


def parity(
    model_dir: Path, images: list[Path], *, chips_wanted: int = 20, cpu_backend: str = "onnxruntime"
) -> dict[str, Any]:
    """Build TensorRT engines (FP32, FP16) and compare them with `cpu_backend` on real chips (device only)."""
    from engines.backends.base import BackendUnavailable
    from engines.backends.tensorrt import TensorRTBackend, platform_info

    reason = TensorRTBackend.unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"TensorRT unavailable: {reason}")
    chips = _chips(images, model_dir, chips_wanted)
    if not chips:
        raise ValueError("no face found in the parity images; pass --images DIR with face photos")
    info = platform_info()

    def device(precision: str) -> TensorRTBackend:
        return TensorRTBackend(cache_dir=model_dir / "tensorrt", precision=precision, allow_build=True)  # type: ignore[arg-type]

    result = compare_backends(model_dir, chips, device, cpu_backend=cpu_backend)
    result["platform"] = {
        "tensorrt": info.tensorrt_version,
        "cuda": info.cuda_version,
        "compute_capability": info.compute_capability,
        "device": info.device_name,
        "fast_fp16": info.fast_fp16,
    }
    return result


def register(app: typer.Typer) -> None:
    @app.command("engines")
    def engines(
        run_parity: bool = typer.Option(False, "--parity", help="Build TensorRT engines and compare with the CPU."),
        images: Path | None = typer.Option(None, "--images", help="Folder of face photos for --parity."),
        model_dir: Path | None = typer.Option(
            None,
            "--model-dir",
            "--dir",
            help="Model cache (default: the config's state.model_dir, else $EGATE_MODEL_DIR or .cache/models).",
        ),
        config: Path = typer.Option(
            DEFAULT_CONFIG,
            "--config",
            "-c",
            help="TOML config file (default $EGATE_CONFIG or /etc/egate/egate.toml, like `egate run`).",
        ),
        chips: int = typer.Option(20, "--chips", min=1, max=1000, help="Number of face chips compared."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """List inference backends with availability; --parity checks TensorRT against the CPU backend.

        Exits 1 when the model cache is missing or broken, or the backend the config asks for
        (engine.backend) cannot run here.
        """
        from engines.backends.base import BackendUnavailable
        from engines.models import ModelCacheError, default_model_dir
        from tools.models_cmd import quiet_logs

        quiet_logs()
        wanted, target, config_note = configured_engine(config, model_dir)
        target = target or default_model_dir()
        report = backend_report(target)
        report["config"] = config_note
        report["configured_backend"] = wanted
        exit_code = 0
        problems = configured_problems(report, wanted)
        if problems:
            report["problems"] = problems
            exit_code = 1
        if run_parity:
            paths = (
                sorted(p for p in images.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
                if images
                else _default_images()
            )
            try:
                report["parity"] = parity(target, paths, chips_wanted=chips)
                exit_code = 0 if report["parity"]["fp32_parity_ok"] else 1
            except (BackendUnavailable, ModelCacheError, ValueError) as exc:
                report["parity"] = {"ok": False, "error": str(exc)}
                exit_code = 1
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            for row in report["backends"]:
                state = "available" if row["available"] else f"unavailable: {row['reason']}"
                typer.echo(f"{row['name']:<12} {state}")
            models = report["models"]
            typer.echo(f"models       {'ok ' + str(models['model_id']) if models['ok'] else models['error']}")
            if "parity" in report:
                typer.echo("parity       " + json.dumps(report["parity"]))
            typer.echo(f"config       {config_note}")
        if exit_code:
            for error, fix in report.get("problems", []):
                typer.echo(f"error: {error}\nfix: {fix}", err=True)
            if "error" in report.get("parity", {}):
                typer.echo(f"error: {report['parity']['error']}", err=True)
            raise typer.Exit(exit_code)


def configured_engine(config: Path, model_dir: Path | None) -> tuple[str | None, Path | None, str]:
    """(engine.backend, model cache, a note on where they came from) from the gate's config when it exists."""
    from edge.settings import ConfigError, load_settings

    if not config.exists():
        return None, model_dir, f"{config} not found: listing backends only"
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        return None, model_dir, f"{config} invalid ({exc.issues[0]}): listing backends only"
    return settings.engine.backend, model_dir or settings.state.resolved_model_dir(), f"{config}"


def configured_problems(report: dict[str, Any], wanted: str | None) -> list[tuple[str, str]]:
    """What stops the configured engine from running here, each as (error, fix)."""
    problems = []
    if not report["models"]["ok"]:
        problems.append(
            (
                f"model cache {report['model_dir']}: {report['models']['error']}",
                f"egate models build --model-dir {report['model_dir']}",
            )
        )
    row = next((b for b in report["backends"] if b["name"] == wanted), None)
    if wanted is not None and row is not None and not row["available"]:
        problems.append(
            (
                f"engine.backend = {wanted!r} cannot run here: {row['reason']}",
                "set engine.backend to an available backend (listed above), or install its runtime",
            )
        )
    return problems
