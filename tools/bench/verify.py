"""`egate bench verify` and `egate bench pairs`: 1:1 verification accuracy on a list of image pairs.

A pairs file has one pair per line, `path_a<TAB>path_b<TAB>same` (same = 1 for the same person,
0 otherwise), paths relative to `--root` (default: the file's folder). Each image is reduced to
the descriptor of its largest face; a pair where either image has no face is a failure to acquire
(FTA). Reported as ISO/IEC 19795-1 does: `algorithm` FNMR counts only acquired pairs, `system`
FNMR also counts FTA genuine pairs as rejections; thresholds are chosen on the impostor distances
so that FMR <= the target (accept when distance <= threshold).

`--pipeline dlib` runs dlib's own classic pipeline on the same pairs as the baseline: HOG
detector (upsample 1), 5-point predictor, get_face_chip(150, 0.25), dlib's ResNet in dlib.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer

from egate.tools.paths import shared_data_dir

Pipeline = Literal["egate", "dlib"]
FMR_TARGETS = {"1e-2": 1e-2, "1e-3": 1e-3}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}
CALIBRATION_TARGET_FMR = 1e-3
CALIBRATION_VERSION = 1


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool


# ---------------------------------------------------------------- pairs files


def read_pairs(path: Path) -> list[Pair]:
    pairs: list[Pair] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[2].strip() not in ("0", "1"):
            raise ValueError(f"{path}:{number}: expected 'path_a<TAB>path_b<TAB>same' with same 0 or 1, got {line!r}")
        pairs.append(Pair(parts[0], parts[1], parts[2].strip() == "1"))
    if not pairs:
        raise ValueError(f"{path}: no pairs found")
    return pairs


def write_pairs(path: Path, pairs: Iterable[Pair]) -> int:
    lines = [f"{p.a}\t{p.b}\t{int(p.same)}" for p in pairs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def identity_images(dataset_dir: Path) -> dict[str, list[Path]]:
    """Images per identity: one sub-folder per person (lfw_krasserm, orl_att layout)."""
    people: dict[str, list[Path]] = {}
    for person in sorted(p for p in dataset_dir.iterdir() if p.is_dir()):
        images = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[person.name] = images
    if not people:
        raise ValueError(f"{dataset_dir}: no person folders with images")
    return people


def all_pairs(root: Path, datasets: Iterable[str]) -> list[Pair]:
    """Every pair of images within each dataset under `root` (4,950 for lfw_krasserm).

    Paths are written relative to `root`, so the file is used with `--root root`.
    """
    pairs: list[Pair] = []
    for name in datasets:
        people = identity_images(root / name)
        labelled = [(who, img) for who, imgs in people.items() for img in imgs]
        for (pa, ia), (pb, ib) in itertools.combinations(labelled, 2):
            pairs.append(Pair(str(ia.relative_to(root)), str(ib.relative_to(root)), pa == pb))
    return pairs


# ---------------------------------------------------------------- descriptors


Extractor = Callable[[Path], "np.ndarray | None"]


def _read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path} (missing or not an image)")
    if image.dtype != np.uint8:  # 16-bit PNG scans
        image = (image / 257).astype(np.uint8)
    return image


def egate_extractor(model_dir: Path, backend: str = "onnxruntime") -> tuple[Extractor, dict[str, Any]]:
    from egate.engines.config import EngineConfig
    from egate.engines.pipeline import FaceEngine

    engine = FaceEngine.from_config(EngineConfig(backend=backend, fallback_backend="onnxruntime"), model_dir)

    def extract(path: Path) -> np.ndarray | None:
        obs = engine.enroll(_read_image(path))
        return None if obs is None else obs.descriptor

    return extract, {"model_id": engine.model_id, "threshold_in_use": engine.threshold}


def dlib_extractor(model_dir: Path) -> tuple[Extractor, dict[str, Any]]:
    """dlib's classic pipeline, as dlib's own examples run it (the baseline egate must match)."""
    import cv2
    import dlib

    from egate.engines.models import load_manifest

    manifest = load_manifest(model_dir)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(manifest.path(model_dir, "landmarks5")))
    net = dlib.face_recognition_model_v1(str(manifest.path(model_dir, "embedder_dlib")))

    def extract(path: Path) -> np.ndarray | None:
        image = _read_image(path)
        if image.ndim == 2:
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
        faces = detector(rgb, 1)
        if not faces:
            return None
        face = max(faces, key=lambda r: r.area())
        shape = predictor(rgb, face)
        chip = dlib.get_face_chip(rgb, shape, 150, 0.25)
        return np.array(net.compute_face_descriptor(chip), dtype=np.float32)

    return extract, {"model_id": "dlib-classic", "threshold_in_use": 0.6}


# ---------------------------------------------------------------- metrics


def threshold_at_fmr(impostor: np.ndarray, target: float) -> float:
    """Largest threshold with FMR <= target (accept when distance <= threshold).

    With k = floor(target * N) false accepts allowed, the threshold sits just below the (k+1)-th
    smallest impostor distance; with no impostor it is +inf.
    """
    imp = np.sort(impostor)
    allowed = math.floor(target * len(imp) + 1e-9)
    if allowed >= len(imp):
        return math.inf
    return float(np.nextafter(imp[allowed], -np.inf))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where FNMR(t) and FMR(t) cross, averaged at the closest threshold."""
    if len(genuine) == 0 or len(impostor) == 0:
        return math.nan, math.nan
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    gen = np.sort(genuine)
    imp = np.sort(impostor)
    fnmr = 1.0 - np.searchsorted(gen, thresholds, side="right") / len(gen)
    fmr = np.searchsorted(imp, thresholds, side="right") / len(imp)
    i = int(np.argmin(np.abs(fnmr - fmr)))
    return float((fnmr[i] + fmr[i]) / 2), float(thresholds[i])


def compute_metrics(genuine: np.ndarray, impostor: np.ndarray, fta_genuine: int, fta_impostor: int) -> dict[str, Any]:
    n_gen = len(genuine) + fta_genuine
    eer, eer_threshold = equal_error_rate(genuine, impostor)
    fnmr: dict[str, dict[str, float]] = {}
    for key, target in FMR_TARGETS.items():
        t = threshold_at_fmr(impostor, target) if len(impostor) else math.inf
        rejected = int(np.sum(genuine > t))
        fnmr[key] = {
            "algorithm": rejected / len(genuine) if len(genuine) else math.nan,
            "system": (rejected + fta_genuine) / n_gen if n_gen else math.nan,
            "threshold": t,
            "fmr": float(np.mean(impostor <= t)) if len(impostor) else math.nan,
        }
    return {
        "pairs": n_gen + len(impostor) + fta_impostor,
        "genuine": n_gen,
        "impostor": len(impostor) + fta_impostor,
        "fta": fta_genuine + fta_impostor,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "fnmr": fnmr,
    }


@dataclass
class VerifyResult:
    metrics: dict[str, Any]
    genuine: np.ndarray
    impostor: np.ndarray
    images: int
    images_without_face: int


def evaluate(pairs: list[Pair], root: Path, extract: Extractor) -> VerifyResult:
    cache: dict[str, np.ndarray | None] = {}
    for path in sorted({p.a for p in pairs} | {p.b for p in pairs}):
        cache[path] = extract(root / path)
    genuine: list[float] = []
    impostor: list[float] = []
    fta_gen = fta_imp = 0
    for p in pairs:
        da, db = cache[p.a], cache[p.b]
        if da is None or db is None:
            if p.same:
                fta_gen += 1
            else:
                fta_imp += 1
            continue
        d = float(np.linalg.norm(da.astype(np.float64) - db.astype(np.float64)))
        (genuine if p.same else impostor).append(d)
    g = np.array(genuine)
    i = np.array(impostor)
    return VerifyResult(
        metrics=compute_metrics(g, i, fta_gen, fta_imp),
        genuine=g,
        impostor=i,
        images=len(cache),
        images_without_face=sum(1 for v in cache.values() if v is None),
    )


def plot_det(results: dict[str, VerifyResult], out: Path) -> None:
    """DET curve (FNMR against FMR on normal-deviate axes, as ISO/IEC 19795-1 draws it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ticks = [1e-4, 1e-3, 1e-2, 5e-2, 0.2, 0.5]
    clip = 1e-4
    for label, res in results.items():
        scores = np.unique(np.concatenate([res.genuine, res.impostor]))
        fnmr = 1.0 - np.searchsorted(np.sort(res.genuine), scores, side="right") / max(len(res.genuine), 1)
        fmr = np.searchsorted(np.sort(res.impostor), scores, side="right") / max(len(res.impostor), 1)
        ax.plot(norm.ppf(np.clip(fmr, clip, 1 - clip)), norm.ppf(np.clip(fnmr, clip, 1 - clip)), label=label)
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(clip), norm.ppf(0.5))
    ax.set_ylim(norm.ppf(clip), norm.ppf(0.5))
    ax.set_xlabel("FMR (false match rate)")
    ax.set_ylabel("FNMR (false non-match rate)")
    ax.set_title("DET")
    ax.grid(True, alpha=0.3)
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def calibration_record(result: VerifyResult, pairs_file: Path, model_id: str) -> dict[str, Any]:
    """The engines/calibration.json content: the threshold for FMR <= 0.1 % and how it was found."""
    threshold = threshold_at_fmr(result.impostor, CALIBRATION_TARGET_FMR)
    pairs = read_pairs(pairs_file)
    paths = [Path(p.a) for p in pairs] + [Path(p.b) for p in pairs]
    # Relative paths start with their dataset folder; absolute ones (ad-hoc files) are not datasets.
    datasets = sorted({path.parts[0] for path in paths if not path.is_absolute()})
    return {
        "version": CALIBRATION_VERSION,
        # Rounded down, so the rounded threshold still keeps FMR <= target on these pairs.
        "threshold": math.floor(threshold * 1e4) / 1e4 if math.isfinite(threshold) else None,
        "distance_metric": "euclidean",
        "target_fmr": CALIBRATION_TARGET_FMR,
        "method": (
            "largest euclidean distance threshold with FMR <= 0.1 % on the impostor pairs of the "
            "development pairs (every within-dataset pair of the datasets listed, written by "
            "`egate bench pairs`), measured with `egate bench verify --write-calibration`, rounded down "
            "to 4 decimals"
        ),
        "datasets": datasets,
        "model_id": model_id,
        "pairs_file": pairs_file.name,
        "pairs_sha256": hashlib.sha256(pairs_file.read_bytes()).hexdigest(),
        "genuine_pairs": result.metrics["genuine"],
        "impostor_pairs": result.metrics["impostor"],
        "fta_pairs": result.metrics["fta"],
        "fnmr_at_threshold": result.metrics["fnmr"]["1e-3"]["system"],
        "eer": result.metrics["eer"],
        "date": dt.date.today().isoformat(),
    }


# ---------------------------------------------------------------- commands


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _logs_to_stderr() -> None:
    """Keep stdout for the report (JSON consumers); progress logs go to stderr."""
    import structlog

    if not structlog.is_configured():
        from egate.edge.service.logs import configure_logging

        configure_logging(level="info", stream=sys.stderr)


def verify_command(
    pairs: Path = typer.Option(..., "--pairs", exists=True, dir_okay=False, help="Pairs file (a<TAB>b<TAB>same)."),
    root: Path | None = typer.Option(None, "--root", help="Folder the paths are relative to (default: the file's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a DET curve PNG here."),
    pipeline: str = typer.Option("egate", "--pipeline", help="egate (ours) or dlib (dlib's classic baseline)."),
    model_dir: Path | None = typer.Option(None, "--model-dir", help="Model cache (default $EGATE_MODEL_DIR)."),
    backend: str = typer.Option("onnxruntime", "--backend", help="Backend for the egate pipeline."),
    write_calibration: Path | None = typer.Option(
        None, "--write-calibration", help="Write the FMR <= 0.1 % threshold record (engines/calibration.json)."
    ),
) -> None:
    """1:1 verification accuracy (EER, FNMR at FMR 1e-2 and 1e-3, failures to acquire) on a pairs list."""
    from egate.engines.models import build_models, default_model_dir

    _logs_to_stderr()
    if pipeline not in ("egate", "dlib"):
        raise typer.BadParameter(f"--pipeline must be egate or dlib, got {pipeline!r}")
    directory = model_dir or default_model_dir()
    build_models(directory)
    pair_list = read_pairs(pairs)
    base = root or pairs.parent
    extract, info = egate_extractor(directory, backend) if pipeline == "egate" else dlib_extractor(directory)
    result = evaluate(pair_list, base, extract)
    report = {"pipeline": pipeline, **result.metrics, **info, "images": result.images,
              "images_without_face": result.images_without_face}  # fmt: skip
    if plot is not None:
        plot_det({pipeline: result}, plot)
        report["plot"] = str(plot)
    if write_calibration is not None:
        record = calibration_record(result, pairs, str(info["model_id"]))
        write_calibration.write_text(json.dumps(record, indent=2) + "\n")
        report["calibration"] = record
    if as_json:
        typer.echo(json.dumps(_json_safe(report), indent=2))
        return
    m = result.metrics
    typer.echo(f"pipeline {pipeline}: {m['pairs']} pairs ({m['genuine']} genuine, {m['impostor']} impostor)")
    typer.echo(f"failures to acquire: {m['fta']} pairs ({result.images_without_face} images without a face)")
    typer.echo(f"EER {m['eer']:.4f} at distance {m['eer_threshold']:.4f}")
    for key, row in m["fnmr"].items():
        typer.echo(
            f"FMR {key}: FNMR algorithm {row['algorithm']:.4f}, system {row['system']:.4f}, "
            f"threshold {row['threshold']:.4f}"
        )


def pairs_command(
    out: Path = typer.Option(..., "--out", help="Pairs file to write (keep it out of the repo, e.g. .cache/)."),
    faces: Path | None = typer.Option(None, "--faces", help="Folder holding the datasets (../shared/data/faces)."),
    dataset: list[str] = typer.Option(["lfw_krasserm"], "--dataset", help="Dataset folder(s) under --faces."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write every same/different pair within each dataset (lfw_krasserm: 4,950 pairs)."""
    root = faces or shared_data_dir() / "faces"
    pair_list = all_pairs(root, dataset)
    count = write_pairs(out, pair_list)
    genuine = sum(p.same for p in pair_list)
    info = {"pairs_file": str(out), "root": str(root), "pairs": count, "genuine": genuine,
            "impostor": count - genuine}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(info))
    else:
        typer.echo(f"wrote {count} pairs ({genuine} genuine) to {out}; use --root {root}")


def register(app: typer.Typer) -> None:
    """Add `verify` and `pairs` to the `bench` group."""
    app.command("verify")(verify_command)
    app.command("pairs")(pairs_command)
