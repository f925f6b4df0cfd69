"""`egate bench mrz`: share of images with every MRZ character right, and time per image.

Truth comes from a `.txt` beside each image (the tony-xlh synthetic set) or, for the ICAO "Utopia"
specimens in the PassportEye test data, from the published specimen MRZ. Images without truth count in
`checks_pass_share` only. `--engine passporteye` measures plain PassportEye for comparison.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import typer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}

# ICAO Doc 9303 specimen "Utopia" MRZs (part 4 appendix, part 6 appendix).
UTOPIA_TD3 = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]
UTOPIA_TD2 = ["I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "D231458907UTO7408122F1204159<<<<<<<6"]
_SPECIMEN_TRUTH = {
    "passport-td3": UTOPIA_TD3,
    "100_pass-uto": UTOPIA_TD3,
    "25_pass-uto": UTOPIA_TD3,
    "passport-td2": UTOPIA_TD2,
    "100_pass2-uto": UTOPIA_TD2,
}


def truth_for(path: Path) -> list[str] | None:
    sidecar = path.with_suffix(".txt")
    if sidecar.exists():
        return [ln.strip() for ln in sidecar.read_text(encoding="ascii", errors="replace").split() if ln.strip()]
    return _SPECIMEN_TRUTH.get(path.stem)


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_egate(path: Path) -> tuple[list[str], bool]:
    import cv2

    from drivers.document.mrz import check_failures
    from drivers.document.ocr import read_mrz_image

    image = cv2.imread(str(path))
    if image is None:
        return [], False
    result = read_mrz_image(image)
    return result.lines, result.document is not None and check_failures(result) == 0


def _read_passporteye(path: Path) -> tuple[list[str], bool]:
    from passporteye import read_mrz  # ~3.5 s import: only when asked for

    mrz = read_mrz(str(path))
    if mrz is None:
        return [], False
    lines = [ln.replace(" ", "") for ln in str(mrz.aux.get("text", "")).splitlines() if ln.strip()]
    return lines, bool(mrz.valid)


def run_bench(root: Path, engine: str = "egate", limit: int | None = None) -> dict[str, Any]:
    images = find_images(root)[: limit or None]
    read = _read_egate if engine == "egate" else _read_passporteye
    if engine == "passporteye":
        t0 = time.perf_counter()
        import passporteye  # noqa: F401

        import_s = time.perf_counter() - t0
    else:
        import_s = 0.0
    times: list[float] = []
    with_truth = right = checks_pass = 0
    failures: list[str] = []
    load_before = os.getloadavg()[0]
    for path in images:
        truth = truth_for(path)
        t0 = time.perf_counter()
        lines, ok = read(path)
        times.append(time.perf_counter() - t0)
        checks_pass += ok
        if truth is not None:
            with_truth += 1
            if lines == truth:
                right += 1
            else:
                failures.append(str(path.relative_to(root)))
    return {
        "engine": engine,
        "dir": str(root),
        "images": len(images),
        "with_truth": with_truth,
        "fully_right": right,
        "fully_right_share": round(right / with_truth, 4) if with_truth else None,
        "checks_pass_share": round(checks_pass / len(images), 4) if images else None,
        "seconds_per_image_mean": round(statistics.fmean(times), 3) if times else None,
        "seconds_per_image_median": round(statistics.median(times), 3) if times else None,
        "seconds_per_image_max": round(max(times), 3) if times else None,
        "engine_import_seconds": round(import_s, 2),
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "not_fully_right": failures,
    }


def mrz_command(
    directory: Path = typer.Option(..., "--dir", exists=True, file_okay=False, help="Folder of images."),
    engine: str = typer.Option("egate", "--engine", help="egate or passporteye (baseline)."),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N images (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure MRZ reading: share fully right and seconds per image."""
    if engine not in ("egate", "passporteye"):
        typer.echo("--engine must be egate or passporteye", err=True)
        raise typer.Exit(2)
    report = run_bench(directory, engine, limit or None)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for k, v in report.items():
            typer.echo(f"{k}: {v}")


def register(app: typer.Typer) -> None:
    """Add `mrz` to the `bench` group."""
    app.command("mrz")(mrz_command)
