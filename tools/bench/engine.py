"""`egate bench engine`: per-stage and per-frame latency of the face pipeline, per available backend.

Runs the real pipeline (`egate.engines.pipeline.FaceEngine.analyze`) on real photos: by default the LFW
images of `../shared/data/faces/lfw_krasserm` (250x250, one face each) and the 240p..1080p frames of
`faces/face_recognition/examples` (camera-sized frames); `--images DIR` benches any folder instead
(a technician's captures on the device). Stages: detect, landmarks, align, embed (quality too);
`frame` is the whole `analyze()` call on frames with exactly one face. Medians and 95th percentiles
in milliseconds. Targets on a 2-core CPU: detect <= 5 ms (short range), embed <= 20 ms,
frame <= 35 ms.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import typer

from egate.tools.paths import shared_data_dir

TARGETS_MS = {"detect_short": 5.0, "embed": 20.0, "frame": 35.0}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}


def _default_images() -> list[Path]:
    # The same root tests use (tests/shared_data.py): ../shared/data beside the repo, or $EGATE_SHARED_DATA.
    default = shared_data_dir()
    root = Path(os.environ.get("EGATE_SHARED_DATA", default)) / "faces"
    images = sorted((root / "lfw_krasserm").glob("*/*.jpg"))
    images += [root / "face_recognition" / "examples" / f"obama-{r}.jpg" for r in ("240p", "480p", "720p", "1080p")]
    return [p for p in images if p.exists()]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)


def _stats(values: list[float]) -> dict[str, float | int]:
    import numpy as np

    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": len(values),
        "median_ms": round(float(np.median(arr)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
    }


def bench(
    images: list[Path], model_dir: Path, *, backends: list[str] | None = None, threads: int = 1, warmup: int = 3
) -> dict[str, Any]:
    """Run the pipeline over `images` on each available backend and both detector variants."""
    import cv2
    import onnxruntime

    from egate.engines.backends.registry import registered_backends
    from egate.engines.config import EngineConfig
    from egate.engines.pipeline import FaceEngine

    frames = [f for f in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images) if f is not None]
    if not frames:
        raise ValueError("no readable images to bench; pass --images DIR with photos of faces")
    runs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name, cls in sorted(registered_backends().items()):
        if backends and name not in backends:
            continue
        reason = cls.unavailable_reason()
        if reason is not None:
            skipped[name] = reason
            continue
        for variant in ("short", "full"):
            config = EngineConfig(
                backend=name, fallback_backend="onnxruntime", threads=threads, detector_variant=variant
            )
            with FaceEngine.from_config(config, model_dir, detector_variant=variant) as engine:
                for frame in frames[:warmup]:
                    engine.analyze(frame)
                stages: dict[str, list[float]] = {k: [] for k in ("detect", "landmarks", "align", "embed", "quality")}
                frame_ms: list[float] = []
                faces_per_frame: list[int] = []
                for frame in frames:
                    t0 = time.perf_counter()
                    observations = engine.analyze(frame)
                    elapsed = (time.perf_counter() - t0) * 1e3
                    faces_per_frame.append(len(observations))
                    if observations:
                        stages["detect"].append(observations[0].timings_ms["detect"])
                    for obs in observations:
                        for stage in ("landmarks", "align", "embed", "quality"):
                            stages[stage].append(obs.timings_ms[stage])
                    if len(observations) == 1:
                        frame_ms.append(elapsed)
            runs.append(
                {
                    "backend": name,
                    "detector": variant,
                    "frames": len(frames),
                    "frames_with_one_face": sum(1 for n in faces_per_frame if n == 1),
                    "frames_without_face": sum(1 for n in faces_per_frame if n == 0),
                    "stages": {k: _stats(v) for k, v in stages.items()},
                    "frame": _stats(frame_ms),
                }
            )
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "threads_per_session": threads,
            "onnxruntime": onnxruntime.__version__,
            "opencv": cv2.__version__,
        },
        "images": len(frames),
        "targets_ms": TARGETS_MS,
        "runs": runs,
        "unavailable_backends": skipped,
    }


def _meets_targets(result: dict[str, Any]) -> dict[str, bool]:
    verdict: dict[str, bool] = {}
    for run in result["runs"]:
        key = f"{run['backend']}/{run['detector']}"
        det = run["stages"]["detect"].get("median_ms", float("inf"))
        emb = run["stages"]["embed"].get("median_ms", float("inf"))
        frame = run["frame"].get("median_ms", float("inf"))
        ok = emb <= TARGETS_MS["embed"] and frame <= TARGETS_MS["frame"]
        if run["detector"] == "short":
            ok = ok and det <= TARGETS_MS["detect_short"]
        verdict[key] = ok
    return verdict


def register(app: typer.Typer) -> None:
    @app.command("engine")
    def engine(
        images: Path | None = typer.Option(None, "--images", help="Folder of photos (default: shared LFW + frames)."),
        model_dir: Path | None = typer.Option(
            None, "--model-dir", "--dir", help="Model cache (default $EGATE_MODEL_DIR or .cache/models)."
        ),
        backend: list[str] = typer.Option([], "--backend", help="Only these backends (repeatable)."),
        threads: int = typer.Option(1, "--threads", min=1, max=16, help="CPU threads per model session."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Median and p95 ms per stage and per one-face frame, per available backend and detector."""
        from egate.engines.models import ModelCacheError, default_model_dir
        from egate.tools.models.commands import quiet_logs

        quiet_logs()
        paths = _images_in(images) if images else _default_images()
        if not paths:
            typer.echo("egate bench engine: no images found; pass --images DIR", err=True)
            raise typer.Exit(2)
        try:
            result = bench(paths, model_dir or default_model_dir(), backends=backend or None, threads=threads)
        except (ModelCacheError, ValueError) as exc:
            typer.echo(f"error: {exc}\nfix: egate models build (then egate diag engines)", err=True)
            raise typer.Exit(1) from None
        result["meets_targets"] = _meets_targets(result)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        typer.echo(f"{result['images']} images, {result['machine']['cpus']} CPUs")
        for run in result["runs"]:
            s = run["stages"]
            typer.echo(
                f"{run['backend']:<12} {run['detector']:<5} "
                + " ".join(f"{k} {v.get('median_ms', '-')}/{v.get('p95_ms', '-')}" for k, v in s.items())
                + f" | frame {run['frame'].get('median_ms', '-')}/{run['frame'].get('p95_ms', '-')} ms (median/p95)"
            )
        for name, reason in result["unavailable_backends"].items():
            typer.echo(f"{name:<12} unavailable: {reason}")
