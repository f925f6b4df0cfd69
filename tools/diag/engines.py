"""`egate diag engines [--device-check]`: which inference backends run here, and may the GPU serve.

Without options it lists every backend with its availability and, when unavailable, the reason (no
tensorrt module, stubs only, no pycuda, no CUDA device), plus the model cache status.

`--device-check` is the first command a technician runs on a new device (`--parity` is the same
check). It prints the Python, TensorRT, CUDA runtime, pycuda and driver versions with the GPU's name
and compute capability; builds each ONNX model on its own at the configured precision (parser errors
reported per model); runs every engine on face frames shipped with egate and compares with
onnxruntime under the gates of `egate.engines.parity` (FP32 cosine >= 0.9999, FP16 embedder Euclidean
<= 0.02, detectors the same faces with IoU >= 0.95 and scores within 0.01); and, where strace is
installed, lists the device nodes `cuInit` opens that the daemon's unit does not allow. `--sandbox`
runs the same check inside the unit's sandbox (systemd-run with the unit's user and device policy).
Exit 1 with a fix on any failure.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import typer

from egate.engines.parity import FP32_MIN_COSINE
from egate.tools.cli import DEFAULT_CONFIG
from egate.tools.paths import DEMO_MEDIA, SYSTEMD_UNITS

PACKAGED_UNIT = SYSTEMD_UNITS / "egate.service"
INSTALLED_UNIT = Path("/etc/systemd/system/egate.service")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".gif"}
# What `cuInit` needs, run under strace to see which device nodes the CUDA driver opens.
_CUINIT_PROBE = "import pycuda.driver as d; d.init(); c = d.Device(0).make_context(); c.pop(); c.detach()"
# Unit settings that shape what the device check may open or run as, carried into `systemd-run`.
_SANDBOX_KEYS = (
    "User",
    "Group",
    "SupplementaryGroups",
    "DevicePolicy",
    "DeviceAllow",
    "PrivateTmp",
    "ProtectSystem",
    "ProtectHome",
    "NoNewPrivileges",
    "StateDirectory",
    "Environment",
)

__all__ = ["FP32_MIN_COSINE", "backend_report", "device_check", "parity_report", "shipped_face_frames"]


def backend_report(model_dir: Path) -> dict[str, Any]:
    from egate.engines.backends.registry import describe_backends
    from egate.engines.models import ModelCacheError, load_manifest

    report: dict[str, Any] = {"backends": describe_backends(), "model_dir": str(model_dir)}
    try:
        manifest = load_manifest(model_dir)
        report["models"] = {"ok": True, "model_id": manifest.model_id}
    except ModelCacheError as exc:
        report["models"] = {"ok": False, "error": str(exc)}
    return report


def shipped_face_frames(limit: int = 12, media: Path = DEMO_MEDIA) -> list[Any]:
    """BGR frames of the demo clips egate ships (people walking towards a camera), spread over each clip."""
    import cv2

    frames: list[Any] = []
    clips = sorted(media.glob("*.gif"))
    per_clip = max(1, -(-limit // max(1, len(clips))))
    for clip in clips:
        capture = cv2.VideoCapture(str(clip))
        try:
            total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or 1
            wanted = {int(i * total / per_clip) for i in range(per_clip)}
            index = 0
            while len(frames) < limit:
                ok, frame = capture.read()
                if not ok:
                    break
                if index in wanted:
                    frames.append(frame)
                index += 1
        finally:
            capture.release()
    return frames[:limit]


def _images_from(folder: Path, limit: int) -> list[Any]:
    import cv2

    frames = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            frames.append(image)
        if len(frames) >= limit:
            break
    return frames


def _time_ms(fn: Callable[[], object], repeats: int = 20) -> float:
    import numpy as np

    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(samples)), 3)


def parity_report(
    model_dir: Path,
    frames: list[Any],
    device: Callable[[], Any],
    precision: str,
    *,
    cpu_backend: str = "onnxruntime",
) -> dict[str, Any]:
    """Gates of `egate.engines.parity` for the embedder and both detectors, `device()` against `cpu_backend`.

    The CPU pipeline makes the chips (so both embedders see identical input); each detector runs on
    the same frames through the same BlazeFace decoding, so a gate compares what the lane would see.
    """
    import cv2

    from egate.engines.alignment import face_chip
    from egate.engines.backends.registry import create_backend
    from egate.engines.config import EngineConfig
    from egate.engines.detector import BlazeFaceDetector, Variant
    from egate.engines.models import Role, load_manifest
    from egate.engines.parity import detector_gate, embedder_gate
    from egate.engines.pipeline import FaceEngine

    manifest = load_manifest(model_dir)
    chips = []
    with FaceEngine.from_config(EngineConfig(backend=cpu_backend), model_dir) as engine:  # type: ignore[arg-type]
        for frame in frames:
            obs = engine.enroll(frame)
            if obs is not None:
                chips.append(face_chip(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), obs.landmarks5))
    if not chips:
        raise ValueError("no face found in the check images; pass --images DIR with face photos")
    cpu, dev = create_backend(cpu_backend), device()
    gates: dict[str, Any] = {}
    emb_path = manifest.path(model_dir, "embedder")
    batch = [chip.astype("float32").transpose(2, 0, 1)[None].copy() for chip in chips]
    with cpu.load(emb_path) as cpu_emb, dev.load(emb_path) as dev_emb:
        ref = [cpu_emb.run({cpu_emb.input_names[0]: x})[0] for x in batch]
        out = [dev_emb.run({dev_emb.input_names[0]: x})[0] for x in batch]
        gate = embedder_gate(ref, out, precision)
        gates["embedder"] = {
            **_gate_dict(gate),
            "device_ms": _time_ms(lambda: dev_emb.run({dev_emb.input_names[0]: batch[0]})),
            "cpu_ms": _time_ms(lambda: cpu_emb.run({cpu_emb.input_names[0]: batch[0]})),
        }
    rgb_frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    detectors: tuple[tuple[Role, Variant], ...] = (("detector_short", "short"), ("detector_full", "full"))
    for role, variant in detectors:
        path = manifest.path(model_dir, role)
        with cpu.load(path) as cpu_det, dev.load(path) as dev_det:
            ref_det = BlazeFaceDetector(cpu_det, variant)
            dev_detector = BlazeFaceDetector(dev_det, variant)
            gate = detector_gate(
                role, [ref_det.detect(f) for f in rgb_frames], [dev_detector.detect(f) for f in rgb_frames]
            )
            gates[role] = {
                **_gate_dict(gate),
                "device_ms": _time_ms(partial(dev_detector.detect, rgb_frames[0])),
                "cpu_ms": _time_ms(partial(ref_det.detect, rgb_frames[0])),
            }
    return {"precision": precision, "faces": len(chips), "frames": len(frames), "gates": gates}


def _gate_dict(gate: Any) -> dict[str, Any]:
    return {"ok": gate.ok, "worst": round(gate.worst, 6), "limit": gate.limit, "detail": gate.detail}


def versions() -> dict[str, Any]:
    """Python, TensorRT, pycuda, CUDA runtime and driver versions, GPU name and compute capability."""
    from egate.engines.backends.plugins.tensorrt import cuda_runtime_version

    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in ("tensorrt", "pycuda", "onnxruntime"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import tensorrt

        out["tensorrt"] = getattr(tensorrt, "__version__", out["tensorrt"])
    except ImportError:
        pass
    out["cuda_runtime"] = cuda_runtime_version()
    return out


def _unit_text(unit: Path | None) -> tuple[Path, str] | None:
    for candidate in (unit, INSTALLED_UNIT, PACKAGED_UNIT):
        if candidate is not None and candidate.is_file():
            return candidate, candidate.read_text()
    return None


def trace_device_nodes(unit: Path | None) -> dict[str, Any]:
    """Device nodes `cuInit` opens (strace) and those the unit's `DeviceAllow=` does not allow."""
    from egate.engines.backends.jetson_devices import opened_device_nodes, unit_device_allow

    strace = shutil.which("strace")
    if strace is None:
        return {"ok": None, "detail": "strace not installed (apt install strace) : device nodes not traced"}
    found = _unit_text(unit)
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            [strace, "-f", "-qq", "-e", "trace=open,openat", "-o", out.name, sys.executable, "-c", _CUINIT_PROBE],
            capture_output=True,
            timeout=120,
            check=False,
        )
        opened = opened_device_nodes(Path(out.name).read_text(errors="replace"))
    if found is None:
        return {"ok": None, "opened": opened, "detail": "no egate.service found to compare with"}
    path, text = found
    allowed = unit_device_allow(text)
    missing = [n for n in opened if n not in allowed and not n.startswith(("/dev/tty", "/dev/pts/"))]
    return {
        "ok": not missing,
        "unit": str(path),
        "opened": opened,
        "missing": missing,
        "detail": f"{len(opened)} nodes opened by cuInit; not in DeviceAllow: {', '.join(missing) or 'none'}",
    }


def sandbox_command(unit_text: str, argv: list[str]) -> list[str]:
    """`systemd-run` running `argv` with the unit's user, groups and device sandbox."""
    command = ["systemd-run", "--pipe", "--wait", "--collect", "--quiet"]
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]" or "=" not in line or line.startswith("#"):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key in _SANDBOX_KEYS:
            command += ["-p", f"{key}={value}"]
    return [*command, "--", *argv]


def device_check(
    model_dir: Path, precision: str, frames: list[Any], *, unit: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The whole first-run check; returns the report and the list of failures (each with its fix)."""
    from egate.engines.backends.plugins.tensorrt import TensorRTBackend, platform_info
    from egate.engines.models import build_tensorrt_engines, load_manifest

    report: dict[str, Any] = {"versions": versions()}
    failures: list[str] = []
    reason = TensorRTBackend.unavailable_reason()
    if reason is not None:
        report["tensorrt"] = {"ok": False, "error": reason}
        failures.append(
            f"TensorRT cannot run here: {reason}. fix: on a Jetson install JetPack's python3-libnvinfer and "
            "pycuda, and create the venv with --system-site-packages (README, 'Jetson')"
        )
        report["device_nodes"] = {"ok": None, "detail": "not traced: CUDA is not usable in this process"}
        return report, failures
    info = platform_info()
    report["versions"].update(
        {
            "cuda_runtime": info.cuda_version,
            "cuda_driver": info.driver_version,
            "pycuda_built_for_cuda": info.pycuda_cuda_version,
            "gpu": info.device_name,
            "compute_capability": info.compute_capability,
            "fast_fp16": info.fast_fp16,
        }
    )
    manifest = load_manifest(model_dir)
    builds = build_tensorrt_engines(model_dir, manifest, precision=precision)  # type: ignore[arg-type]
    report["builds"] = {
        r.model: {"ok": r.error is None, "engine": str(r.engine or ""), "error": r.error} for r in builds
    }
    failures += [f"{r.model} did not build: {r.error}" for r in builds if r.error]
    resolved = TensorRTBackend(precision=precision).resolved_precision(info)  # type: ignore[arg-type]
    if not failures:

        def device() -> TensorRTBackend:
            return TensorRTBackend(cache_dir=model_dir / "tensorrt", precision=resolved)

        report["parity"] = parity_report(model_dir, frames, device, resolved)
        failures += [
            f"{name} differs from onnxruntime: {gate['detail']} (limit {gate['limit']}). fix: build with "
            "engine.tensorrt.precision = fp32, or keep engine.backend = onnxruntime"
            for name, gate in report["parity"]["gates"].items()
            if not gate["ok"]
        ]
    report["device_nodes"] = trace_device_nodes(unit)
    if report["device_nodes"].get("ok") is False:
        failures.append(
            f"the unit does not allow {', '.join(report['device_nodes']['missing'])}: cuInit fails in the "
            "sandbox and the gate runs on the CPU. fix: add DeviceAllow=<node> rw to egate.service and "
            "egate-tensorrt-build.service"
        )
    return report, failures


def register(app: typer.Typer) -> None:
    @app.command("engines")
    def engines(
        run_check: bool = typer.Option(
            False, "--device-check", "--parity", help="First-run check of TensorRT on this device (see above)."
        ),
        config: Path = typer.Option(
            DEFAULT_CONFIG,
            "--config",
            "-c",
            help="TOML config file (default $EGATE_CONFIG or /etc/egate/egate.toml, like `egate run`); its "
            "engine.backend is checked and its engine.tensorrt.precision built.",
        ),
        images: Path | None = typer.Option(
            None, "--images", help="Folder of face photos for the check (default: the demo clips egate ships)."
        ),
        model_dir: Path | None = typer.Option(
            None,
            "--model-dir",
            "--dir",
            help="Model cache (default: the config's state.model_dir, else $EGATE_MODEL_DIR or .cache/models).",
        ),
        frames: int = typer.Option(12, "--frames", min=1, max=1000, help="Number of images compared."),
        unit: Path | None = typer.Option(None, "--unit", help="egate.service to check DeviceAllow against."),
        sandbox: bool = typer.Option(False, "--sandbox", help="Run the check inside the unit's sandbox (systemd-run)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """List inference backends; --device-check proves TensorRT on this device against the CPU.

        Exits 1 when the model cache is missing or broken, when the backend the config asks for
        (engine.backend) cannot run here, or when any step of the device check fails.
        """
        from egate.engines.models import ModelCacheError, default_model_dir
        from egate.tools.models.commands import configured_precision, quiet_logs

        quiet_logs()
        wanted, target, config_note = configured_engine(config, model_dir)
        target = target or default_model_dir()
        if sandbox:
            found = _unit_text(unit)
            if found is None:
                typer.echo("error: no egate.service to take the sandbox from\nfix: pass --unit PATH", err=True)
                raise typer.Exit(2)
            argv = [
                sys.executable,
                "-m",
                "egate.tools.cli",
                "diag",
                "engines",
                "--device-check",
                "--model-dir",
                str(target),
            ]
            argv += ["--config", str(config)]
            if as_json:
                argv.append("--json")
            raise typer.Exit(subprocess.run(sandbox_command(found[1], argv), check=False).returncode)
        report = backend_report(target)
        report["config"] = config_note
        report["configured_backend"] = wanted
        problems = configured_problems(report, wanted)
        if problems:
            report["problems"] = problems
        failures: list[str] = []
        if run_check:
            precision = configured_precision(config) if wanted is not None else "auto"
            shots = _images_from(images, frames) if images else shipped_face_frames(frames)
            try:
                check, failures = device_check(target, precision, shots, unit=unit)
                report["device_check"] = check
            except (ModelCacheError, ValueError) as exc:
                failures = [str(exc)]
            report["device_check_ok"] = not failures
            report["failures"] = failures
        if as_json:
            typer.echo(json.dumps(report, indent=2, default=str))
        else:
            _print_human(report)
        if problems or failures:
            for error, fix in problems:
                typer.echo(f"error: {error}\nfix: {fix}", err=True)
            for failure in failures:
                typer.echo(f"error: {failure}", err=True)
            raise typer.Exit(1)


def _print_human(report: dict[str, Any]) -> None:
    for row in report["backends"]:
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        typer.echo(f"{row['name']:<12} {state}")
    models = report["models"]
    typer.echo(f"models       {'ok ' + str(models['model_id']) if models['ok'] else models['error']}")
    typer.echo(f"config       {report['config']}")
    check = report.get("device_check")
    if not check:
        return
    typer.echo("versions     " + ", ".join(f"{k} {v}" for k, v in check["versions"].items() if v is not None))
    for model, build in check.get("builds", {}).items():
        typer.echo(f"build        {model}: {'ok' if build['ok'] else 'FAILED ' + str(build['error'])}")
    for name, gate in check.get("parity", {}).get("gates", {}).items():
        typer.echo(f"parity       {name}: {'PASS' if gate['ok'] else 'FAIL'} {gate['detail']}")
    nodes = check.get("device_nodes", {})
    if nodes:
        typer.echo(f"device nodes {nodes.get('detail', '')}")
    typer.echo("result       " + ("PASS" if report.get("device_check_ok") else "FAIL"))


def configured_engine(config: Path, model_dir: Path | None) -> tuple[str | None, Path | None, str]:
    """(engine.backend, model cache, a note on where they came from) from the gate's config when it exists."""
    from egate.edge.settings import ConfigError, load_settings

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
