"""`egate bench mrz`: share of images with every MRZ character right, and time per image.

Truth comes from a `.txt` beside each image (the tony-xlh synthetic set, `egate bench mrz-synth` sets) or, for
the ICAO "Utopia" specimens in the PassportEye test data, from the published specimen MRZ. Images without
truth count in `checks_pass_share` only. A `.json` beside the image (written by `egate bench mrz-synth`)
adds the format, the damage and whether the printed check digits are valid, and the report is split by them.

Per image, with truth: `fully_right` (every character as printed), `checks_valid` (the engine says every check
digit passes), `wrong_but_valid` (the dangerous case: a read that differs from what is printed yet passes the
check digits, a misread or a "repaired" deliberately wrong digit), `not_found` (no MRZ of any format).
`--engine passporteye|tesseract` measures a peer alone; `--peers` runs both peers on the same images and
puts their reports beside egate's (`peers` key).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
ENGINES = ("egate", "passporteye", "tesseract")

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


@dataclass
class Read:
    lines: list[str]
    checks_valid: bool  # every check digit passes, as the engine reports it
    found: bool  # an MRZ of some format was found
    uncertain: bool = False  # check digits pass but the engine itself doubts characters: reported invalid


def truth_for(path: Path) -> list[str] | None:
    sidecar = path.with_suffix(".txt")
    if sidecar.exists():
        return [ln.strip() for ln in sidecar.read_text(encoding="ascii", errors="replace").split() if ln.strip()]
    return _SPECIMEN_TRUTH.get(path.stem)


def meta_for(path: Path) -> dict[str, Any]:
    """Format, damage and check-digit validity of a generated sample; {} for other images."""
    sidecar = path.with_suffix(".json")
    if not sidecar.exists():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _checks_pass(lines: list[str]) -> bool:
    """Every check digit of `lines` passes exactly as read (no repair), for engines that do not say."""
    from egate.drivers.document.mrz import check_failures, parse_mrz

    if not lines:
        return False
    result = parse_mrz("\n".join(lines))
    return result.document is not None and check_failures(result) == 0 and not result.repairs


def _read_egate(path: Path) -> Read:
    import cv2

    from egate.drivers.document.mrz import check_failures
    from egate.drivers.document.mrz_confidence import UNCERTAIN_FIELD
    from egate.drivers.document.ocr import read_mrz_image

    image = cv2.imread(str(path))
    if image is None:
        return Read([], False, False)
    result = read_mrz_image(image)
    valid = result.document is not None and check_failures(result) == 0
    uncertain = any(e.field == UNCERTAIN_FIELD for e in result.errors)
    return Read(result.lines, valid, result.format is not None, uncertain)


def _read_passporteye(path: Path) -> Read:
    from passporteye import read_mrz  # ~3.5 s import: only when asked for

    mrz = read_mrz(str(path))
    if mrz is None:
        return Read([], False, False)
    lines = [ln.replace(" ", "") for ln in str(mrz.aux.get("text", "")).splitlines() if ln.strip()]
    return Read(lines, bool(mrz.valid), bool(lines))


def _read_tesseract(path: Path) -> Read:
    """Plain tesseract on the whole page (MRZ alphabet, dictionaries off); the MRZ is the last 2-3 long lines."""
    import subprocess

    from egate.drivers.document.mrz import detect_layout
    from egate.drivers.document.ocr import WHITELIST

    cmd = ["tesseract", str(path), "stdout", "--psm", "6", "-l", "eng", "-c", f"tessedit_char_whitelist={WHITELIST}",
           "-c", "load_system_dawg=0", "-c", "load_freq_dawg=0"]  # fmt: skip
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False, env=env)
    except subprocess.TimeoutExpired:
        return Read([], False, False)  # counted as not found, like any other page it cannot read
    text = proc.stdout.decode("utf-8", errors="replace")
    long_lines = [ln.replace(" ", "") for ln in text.splitlines() if len(ln.replace(" ", "")) >= 28]
    for n in (3, 2):
        block = long_lines[-n:]
        if len(block) == n and detect_layout(block) is not None:
            return Read(block, _checks_pass(block), True)
    return Read(long_lines[-2:], False, False)


_READERS: dict[str, Callable[[Path], Read]] = {
    "egate": _read_egate,
    "passporteye": _read_passporteye,
    "tesseract": _read_tesseract,
}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    with_truth = [r for r in rows if r["truth"] is not None]
    n = len(with_truth)
    right = sum(r["right"] for r in with_truth)
    invalid_truth = [r for r in with_truth if r["truth_valid"] is False]
    out: dict[str, Any] = {
        "images": len(rows),
        "fully_right": right,
        "fully_right_share": round(right / n, 4) if n else None,
        "checks_valid": sum(r["valid"] for r in with_truth),
        "wrong_but_valid": sum(r["valid"] and not r["right"] for r in with_truth),
        "uncertain": sum(r["uncertain"] for r in with_truth),
        "not_found": sum(not r["found"] for r in with_truth),
        "seconds_per_image_mean": round(statistics.fmean(r["seconds"] for r in rows), 3) if rows else None,
    }
    if invalid_truth:
        out["printed_invalid"] = len(invalid_truth)
        out["printed_invalid_reported_invalid"] = sum(not r["valid"] for r in invalid_truth)
    return out


def _grouped(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    keys = sorted({r[key] for r in rows if r[key] is not None})
    return {k: _summary([r for r in rows if r[key] == k]) for k in keys}


def run_bench(root: Path, engine: str = "egate", limit: int | None = None) -> dict[str, Any]:
    images = find_images(root)[: limit or None]
    read = _READERS[engine]
    if engine == "passporteye":
        t0 = time.perf_counter()
        import passporteye  # noqa: F401

        import_s = time.perf_counter() - t0
    else:
        import_s = 0.0
    times: list[float] = []
    rows: list[dict[str, Any]] = []
    with_truth = right = checks_pass = 0
    failures: list[str] = []
    load_before = os.getloadavg()[0]
    for path in images:
        truth = truth_for(path)
        meta = meta_for(path)
        t0 = time.perf_counter()
        got = read(path)
        seconds = time.perf_counter() - t0
        times.append(seconds)
        checks_pass += got.checks_valid
        # A read the engine itself reports uncertain is refused at the gate: not fully right, even when every
        # character happens to be right (it is counted under `uncertain`).
        is_right = truth is not None and got.lines == truth and not got.uncertain
        if truth is not None:
            with_truth += 1
            if is_right:
                right += 1
            else:
                failures.append(str(path.relative_to(root)))
        rows.append({
            "truth": truth,
            "right": is_right,
            "valid": got.checks_valid,
            "found": got.found,
            "uncertain": got.uncertain,
            "seconds": seconds,
            "format": meta.get("format"),
            "degradation": meta.get("degradation"),
            "truth_valid": meta.get("checks_valid"),
        })  # fmt: skip
    total = _summary(rows)
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
        "checks_valid": total["checks_valid"],
        "wrong_but_valid": total["wrong_but_valid"],
        "wrong_but_valid_images": [
            str(p.relative_to(root))
            for p, r in zip(images, rows, strict=True)
            if r["truth"] is not None and r["valid"] and not r["right"]
        ],
        "not_found": total["not_found"],
        "uncertain": total["uncertain"],
        "uncertain_images": [
            str(p.relative_to(root))
            for p, r in zip(images, rows, strict=True)
            if r["truth"] is not None and r["uncertain"]
        ],
        "printed_invalid": total.get("printed_invalid", 0),
        "printed_invalid_reported_invalid": total.get("printed_invalid_reported_invalid", 0),
        "by_format": _grouped(rows, "format"),
        "by_degradation": _grouped(rows, "degradation"),
    }


def side_by_side(reports: dict[str, dict[str, Any]], group: str) -> list[str]:
    """Text table: one row per format or damage; per engine fully right, wrong-but-valid, uncertain, not found, s."""
    engines = list(reports)
    keys = sorted({k for rep in reports.values() for k in rep[group]})
    head = f"{group[3:]:<14}" + "".join(f"| {e:<33}" for e in engines)
    sub = f"{'':<14}" + "".join(f"| {'right':>6} {'wbv':>4} {'unc':>4} {'miss':>5} {'s/img':>6}   " for _ in engines)
    out = [head, sub]
    for k in [*keys, "ALL"]:
        cells = []
        for e in engines:
            rep = reports[e]
            s = rep[group].get(k) if k != "ALL" else rep
            if not s:
                cells.append(f"| {'-':<33}")
                continue
            share = s["fully_right_share"]
            pct = f"{100 * share:5.1f}%" if share is not None else "   -  "
            cells.append(
                f"| {pct:>6} {s['wrong_but_valid']:>4} {s.get('uncertain', 0):>4} {s['not_found']:>5} "
                f"{s['seconds_per_image_mean']:>6.2f}   "
            )
        out.append(f"{k:<14}" + "".join(cells))
    return out


def mrz_command(
    directory: Path = typer.Option(..., "--dir", exists=True, file_okay=False, help="Folder of images."),
    engine: str = typer.Option("egate", "--engine", help="egate, or a peer alone: passporteye or tesseract."),
    peers: bool = typer.Option(False, "--peers", help="Also run passporteye and plain tesseract on the same images."),
    limit: int = typer.Option(0, "--limit", min=0, help="Only the first N images (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure MRZ reading: share fully right, wrong-but-valid, not found and seconds per image."""
    if engine not in ENGINES:
        typer.echo(f"--engine must be one of {', '.join(ENGINES)}", err=True)
        raise typer.Exit(2)
    report = run_bench(directory, engine, limit or None)
    if peers:
        report["peers"] = {e: run_bench(directory, e, limit or None) for e in ENGINES if e != engine}
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    for k, v in report.items():
        if k not in ("by_format", "by_degradation", "peers"):
            typer.echo(f"{k}: {v}")
    reports = {engine: report, **report.get("peers", {})}
    for group in ("by_format", "by_degradation"):
        if report[group]:
            typer.echo("")
            for line in side_by_side(reports, group):
                typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add `mrz` to the `bench` group."""
    app.command("mrz")(mrz_command)
