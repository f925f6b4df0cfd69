"""`egate models train-mrz`: train the MRZ cell classifier (`drivers/document/ocrb_net.py`).

Training cells are cut by the reader's own pipeline (texture locator, row rectification, grid) from
synthetic documents of `egate bench mrz-synth`, so the network learns exactly the cells it will be shown,
damage included; each cell is labelled with the character printed there. Pages whose grid does not line up
with the printed text (a row off by one cell, a lost row) are skipped, not learnt.

The seeds used here must stay apart from the seeds the bench reports on (3 and 11 for tuning, 7 and 29 and
later fresh ones for figures): the default training seeds start at 1000.

    egate models train-mrz --seed 1000 --count 800 --out drivers/document/data/ocrb_cells.npz
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import typer

_MAX_FILLERS_PER_PAGE = 8  # '<' fills most of a row: keep the classes near balance


def harvest_page(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells and labels (indices into ALPHABET) of one synthetic page; empty when the grid did not line up."""
    from egate.drivers.document.mrz_locate import find_mrz_rows
    from egate.drivers.document.ocr import OcrSettings, row_cells
    from egate.drivers.document.ocrb_match import ALPHABET, cell_images, match_cells
    from egate.drivers.document.ocrb_net import CELL_H, CELL_W, grey_cells
    from egate.tools.sim.mrz_synth import generate_sample

    sample = generate_sample(seed, index)
    truth = sample.truth.lines
    gray = cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng([seed, index, 7])
    best: tuple[float, list[np.ndarray]] | None = None
    for group in find_mrz_rows(gray)[:2]:
        if len(group) != len(truth):
            continue
        for flip in (True, False) if sample.truth.params.get("rotation_deg", 0) > 90 else (False, True):
            if best is not None and best[0] >= 0.9:
                break
            rc = row_cells(gray, group, OcrSettings().char_height, flip)  # the reader's first glyph height
            if rc is None or rc.n != len(truth[0]):
                continue
            rows_cells: list[np.ndarray] = []
            worst = 1.0
            for line, im, grey, at, pitch in zip(truth, rc.images, rc.greys, rc.centres, rc.pitches, strict=True):
                binary = cell_images(im, at, pitch)
                cells = grey_cells(grey, im, at, pitch)
                if binary is None or cells is None:
                    worst = 0.0
                    break
                m = match_cells(binary)
                read = "".join(ALPHABET[j] for j in m.argmax(axis=1)) if m is not None else ""
                worst = min(worst, sum(a == b for a, b in zip(read, line, strict=False)) / len(line))
                rows_cells.append(cells)
            # The template match gets most cells right even under damage; far below that the grid is off.
            if worst >= 0.6 and (best is None or worst > best[0]):
                best = (worst, rows_cells)
        if best is not None:
            break
    if best is None:
        return np.zeros((0, CELL_H, CELL_W), np.float32), np.zeros(0, np.int64)
    xs, ys = [], []
    for line, cells in zip(truth, best[1], strict=True):
        fillers = [i for i, ch in enumerate(line) if ch == "<"]
        keep_fillers = set(rng.permutation(fillers)[: _MAX_FILLERS_PER_PAGE // len(truth) + 1].tolist())
        for i, ch in enumerate(line):
            if ch != "<" or i in keep_fillers:
                xs.append(cells[i])
                ys.append(ALPHABET.index(ch))
    return np.array(xs, np.float32), np.array(ys, np.int64)


def _harvest_many(args: tuple[int, list[int]]) -> tuple[np.ndarray, np.ndarray, int]:
    seed, indices = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    xs, ys, used = [], [], 0
    for i in indices:
        x, y = harvest_page(seed, i)
        if len(y):
            xs.append(x)
            ys.append(y)
            used += 1
    if not xs:
        return np.zeros((0, 28, 20), np.float32), np.zeros(0, np.int64), 0
    return np.concatenate(xs), np.concatenate(ys), used


def harvest(seed: int, count: int, workers: int) -> tuple[np.ndarray, np.ndarray, int]:
    chunks = [(seed, list(range(k, count, workers * 4))) for k in range(workers * 4)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_harvest_many, chunks))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            sum(p[2] for p in parts))  # fmt: skip


def augment(cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies damaged a little more: blur, a one-pixel shift, noise, a contrast curve, thinner or bolder print."""
    from egate.drivers.document.ocrb_net import normalise

    out = []
    for c in cells:
        x = c.copy()
        if rng.random() < 0.4:
            x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.4, 1.1)))
        if rng.random() < 0.4:
            dx, dy = rng.integers(-1, 2, size=2)
            x = cv2.warpAffine(x, np.array([[1, 0, dx], [0, 1, dy]], np.float32), (x.shape[1], x.shape[0]),
                               borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        if rng.random() < 0.3:
            k = np.ones((2, 2), np.uint8)
            x = cv2.dilate(x, k) if rng.random() < 0.5 else cv2.erode(x, k)
        if rng.random() < 0.4:
            x = np.power(np.clip(x, 0, 1), float(rng.uniform(0.6, 1.6)))
        if rng.random() < 0.5:
            x = x + rng.normal(0, float(rng.uniform(0.02, 0.12)), x.shape).astype(np.float32)
        out.append(x)
    return normalise(np.array(out, np.float32) * 255.0)


def train(x: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:  # fmt: skip
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    flat = x.reshape(len(x), -1)
    xt, xv, yt, yv = train_test_split(flat, y, test_size=0.1, random_state=seed, stratify=y)
    net = MLPClassifier(hidden_layer_sizes=hidden, alpha=1e-4, batch_size=256, learning_rate_init=1e-3,
                        max_iter=60, early_stopping=True, n_iter_no_change=6, random_state=seed)  # fmt: skip
    net.fit(xt, yt)
    if list(net.classes_) != list(range(37)):
        raise typer.BadParameter("every MRZ character must appear in the training cells; raise --count")
    return list(zip(net.coefs_, net.intercepts_, strict=True)), float(net.score(xv, yv))


def save(path: Path, layers: list[tuple[np.ndarray, np.ndarray]], meta: dict[str, object]) -> None:
    from egate.drivers.document.ocrb_match import ALPHABET

    arrays: dict[str, np.ndarray] = {"alphabet": np.array(ALPHABET), "layers": np.array(len(layers))}
    for k, (w, b) in enumerate(layers):
        arrays[f"w{k}"] = w.astype(np.float16)
        arrays[f"b{k}"] = b.astype(np.float32)
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    @app.command("train-mrz")
    def train_mrz(
        out: Path = typer.Option(..., help="Where to write the weights (.npz)."),
        seed: int = typer.Option(1000, help="Synthetic set to learn from; keep it apart from the bench's seeds."),
        count: int = typer.Option(800, help="Pages to cut cells from."),
        copies: int = typer.Option(2, help="Extra damaged copies of every cell."),
        hidden: str = typer.Option("256,128", help="Hidden layer sizes."),
        workers: int = typer.Option(2, help="Processes cutting cells."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    ) -> None:
        """Train the MRZ cell classifier from synthetic pages (cells cut by the reader's own pipeline)."""
        t0 = time.perf_counter()
        x, y, pages = harvest(seed, count, workers)
        t_harvest = time.perf_counter() - t0
        rng = np.random.default_rng(seed)
        xs, ys = [x], [y]
        for _ in range(copies):
            xs.append(augment(x, rng))
            ys.append(y)
        sizes = tuple(int(v) for v in hidden.split(",") if v.strip())
        layers, held_out = train(np.concatenate(xs), np.concatenate(ys), sizes, seed)
        meta = {"seed": seed, "count": count, "pages_used": pages, "cells": len(y), "copies": copies,
                "hidden": list(sizes), "held_out_accuracy": round(held_out, 4)}  # fmt: skip
        save(out, layers, meta)
        report = {**meta, "out": str(out), "harvest_seconds": round(t_harvest, 1),
                  "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        typer.echo(json.dumps(report) if as_json else "\n".join(f"{k}: {v}" for k, v in report.items()))
