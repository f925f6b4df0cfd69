"""`egate models train-mrz`: train the MRZ cell classifier (`drivers/document/ocrb_net.py`).

Training cells are cut by the reader's own pipeline (texture locator, row rectification, grid) from
synthetic documents of `egate bench mrz-synth`, so the network learns exactly the cells it will be shown,
damage included; each cell is labelled with the character printed there. Pages whose grid does not line up
with the printed text (a row off by one cell, a lost row) are skipped, not learnt.

The seeds used here must stay apart from the seeds the bench reports on (3, 11, 5 and 13 for tuning; 7, 29
and 37 for figures): the default training seeds start at 1000. The shipped network was trained so (before
the grid check also heard the network, and without held-out pages, so trained again it comes out a little
different):

    egate models train-mrz --seed 2000 --count 1500 --copies 2 --out drivers/document/data/ocrb_cells.npz

`--every-look` also cuts each page at the sharper glyph height and on its darkest print, and `--other-cuts`
reshapes a share of the damaged copies as other OCR-B cuts print them (`other_cut`). The second shipped
network was trained so:

    egate models train-mrz --seed 2000 --count 1000 --copies 1 --every-look --other-cuts 0.5 \
        --out drivers/document/data/ocrb_cells_looks.npz

Learnt without `--other-cuts`, that network read the development passports' cut (heavier, taller capitals)
surely wrong where the shipped one reads it right (an X as A), so averaged with it two of them went from
sure reads to refusals. The reshaped copies mend the X but not R, B and P (read as H), which is why the
reader asks this network only where the first hesitates (docs/mrz_reading.md).
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


def _row_agreement(read: str, line: str) -> float:
    return sum(a == b for a, b in zip(read, line, strict=False)) / len(line)


def _cut_rows(image: np.ndarray, truth: list[str], upside_down: bool, char_height: int) -> list[np.ndarray] | None:
    """The grey cells of each truth row as the reader cuts them from `image` at one glyph height, or None when
    the grid does not line up with the printed text (both opinions far from it in some row)."""
    from egate.drivers.document.mrz_locate import find_mrz_rows
    from egate.drivers.document.ocr import row_cells
    from egate.drivers.document.ocrb_match import ALPHABET, cell_bands, cell_images, match_cells
    from egate.drivers.document.ocrb_net import classify, grey_cells

    for group in find_mrz_rows(image)[:2]:
        if len(group) != len(truth):
            continue
        best: tuple[float, list[np.ndarray]] | None = None
        for flip in (True, False) if upside_down else (False, True):
            if best is not None and best[0] >= 0.9:
                break
            rc = row_cells(image, group, char_height, flip)
            if rc is None or rc.n != len(truth[0]):
                continue
            rows_cells: list[np.ndarray] = []
            worst = 1.0
            for line, im, grey, at, pitch in zip(truth, rc.images, rc.greys, rc.centres, rc.pitches, strict=True):
                bands = cell_bands(im, at)
                binary = cell_images(im, at, pitch, bands)
                cells = grey_cells(grey, im, at, pitch, bands)
                if binary is None or cells is None:
                    worst = 0.0
                    break
                # The template match gets most cells right on a sharp print, the shipped network under blur:
                # far below both, the grid is off by a cell and the labels would teach the wrong shapes.
                opinions = [match_cells(binary), classify(cells)]
                reads = ["".join(ALPHABET[j] for j in p.argmax(axis=1)) for p in opinions if p is not None]
                worst = min(worst, max(_row_agreement(r, line) for r in reads))
                rows_cells.append(cells)
            if worst >= 0.6 and (best is None or worst > best[0]):
                best = (worst, rows_cells)
        if best is not None:
            return best[1]
    return None


def harvest_page(seed: int, index: int, every_look: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cells and labels (indices into ALPHABET) of one synthetic page; empty when the grid did not line up.

    The page is cut as the reader cuts it: on the grey image at the working glyph height, and with
    `every_look` also at the sharper height and on its darkest print (`ocr.darkest_ink`).
    """
    from egate.drivers.document.ocr import OcrSettings, darkest_ink
    from egate.drivers.document.ocrb_match import ALPHABET
    from egate.drivers.document.ocrb_net import CELL_H, CELL_W
    from egate.tools.sim.mrz_synth import generate_sample

    sample = generate_sample(seed, index)
    truth = sample.truth.lines
    gray = cv2.cvtColor(sample.image, cv2.COLOR_BGR2GRAY)
    upside_down = sample.truth.params.get("rotation_deg", 0) > 90
    rng = np.random.default_rng([seed, index, 7])
    settings = OcrSettings()
    xs, ys = [], []
    images = (gray, darkest_ink(gray)) if every_look else (gray,)
    heights = (settings.char_height, settings.retry_char_height) if every_look else (settings.char_height,)
    for image in images:
        for char_height in heights:
            rows = _cut_rows(image, truth, upside_down, char_height)
            for line, cells in zip(truth, rows or [], strict=False):
                fillers = [i for i, ch in enumerate(line) if ch == "<"]
                keep_fillers = set(rng.permutation(fillers)[: _MAX_FILLERS_PER_PAGE // len(truth) + 1].tolist())
                for i, ch in enumerate(line):
                    if ch != "<" or i in keep_fillers:
                        xs.append(cells[i])
                        ys.append(ALPHABET.index(ch))
    if not xs:
        return np.zeros((0, CELL_H, CELL_W), np.float32), np.zeros(0, np.int64)
    return np.array(xs, np.float32), np.array(ys, np.int64)


def _harvest_many(args: tuple[int, list[int], bool]) -> tuple[np.ndarray, np.ndarray, int]:
    seed, indices, every_look = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    xs, ys, used = [], [], 0
    for i in indices:
        x, y = harvest_page(seed, i, every_look)
        if len(y):
            xs.append(x)
            ys.append(y)
            used += 1
    if not xs:
        return np.zeros((0, 28, 20), np.float32), np.zeros(0, np.int64), 0
    return np.concatenate(xs), np.concatenate(ys), used


def harvest(seed: int, count: int, workers: int, every_look: bool) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Cells, labels, pages used, and which cells come from the held-out pages (every eighth page: cells of
    one page under its several looks are near copies, so the accuracy is measured on pages never learnt)."""
    chunks = [(seed, list(range(k, count, 8)), every_look) for k in range(8)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_harvest_many, chunks))
    held = np.concatenate([np.full(len(p[1]), k == 0) for k, p in enumerate(parts)])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            sum(p[2] for p in parts), held)  # fmt: skip


def _cached_harvest(cache: Path | None, seed: int, count: int, workers: int, every_look: bool) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:  # fmt: skip
    key = [seed, count, int(every_look)]
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if z["key"].tolist() == key:
                return z["x"].astype(np.float32), z["y"], int(z["pages"]), z["held"]
    x, y, pages, held = harvest(seed, count, workers, every_look)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x=x.astype(np.float16), y=y, pages=pages, held=held, key=np.array(key))
    return x, y, pages, held


def other_cut(cell: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The cell as another OCR-B cut might print it: narrower or wider glyphs, heavier strokes.

    Cells are cut to the capitals' height, so a cut with taller capitals for the same pitch (many commercial
    OCR-B fonts, and the development passports) shows as a narrower glyph in the cell, and a heavier weight as
    thicker strokes. One cut learnt alone makes a network that doubts every cell of the others.
    """
    h, w = cell.shape
    sx = float(rng.uniform(0.82, 1.08))
    m = np.array([[sx, 0, (1 - sx) * (w - 1) / 2], [0, 1, 0]], np.float32)
    x = cv2.warpAffine(cell, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        big = cv2.resize(x, (w * 3, h * 3), interpolation=cv2.INTER_CUBIC)
        big = cv2.dilate(big, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=int(rng.integers(1, 3)))
        x = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(x, 0.0, 1.0)


def augment(cells: np.ndarray, rng: np.random.Generator, other_cuts: float = 0.0) -> np.ndarray:
    """Copies damaged a little more: blur, a one-pixel shift, noise, a contrast curve, thinner or bolder print;
    a share `other_cuts` of them also reshaped as another OCR-B cut would print them (`other_cut`)."""
    from egate.drivers.document.ocrb_net import normalise

    out = []
    for c in cells:
        x = c.copy()
        if rng.random() < other_cuts:
            x = other_cut(x, rng)
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


def train(x: np.ndarray, y: np.ndarray, held: np.ndarray, copies: int, hidden: tuple[int, ...], seed: int, other_cuts: float = 0.0) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:  # fmt: skip
    """The fitted layers and their accuracy on the held-out pages' cells (`held`), kept apart before any
    damaged copy is made."""
    from sklearn.neural_network import MLPClassifier

    xt, xv, yt, yv = x[~held], x[held], y[~held], y[held]
    rng = np.random.default_rng(seed)
    xt = np.concatenate([xt, *(augment(xt, rng, other_cuts) for _ in range(copies))])
    yt = np.concatenate([yt] * (copies + 1))
    net = MLPClassifier(hidden_layer_sizes=hidden, alpha=1e-4, batch_size=256, learning_rate_init=1e-3,
                        max_iter=60, early_stopping=True, n_iter_no_change=6, random_state=seed)  # fmt: skip
    net.fit(xt.reshape(len(xt), -1), yt)
    if list(net.classes_) != list(range(37)):
        raise typer.BadParameter("every MRZ character must appear in the training cells; raise --count")
    held_out = float(net.score(xv.reshape(len(xv), -1), yv))
    return list(zip(net.coefs_, net.intercepts_, strict=True)), held_out


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
        every_look: bool = typer.Option(
            False, "--every-look/--plain-look", help="Cut every look the reader takes, or the plain grey one."
        ),
        other_cuts: float = typer.Option(
            0.0, min=0.0, max=1.0, help="Share of the damaged copies reshaped as another OCR-B cut prints them."
        ),
        cells: Path | None = typer.Option(
            None,
            help="Keep the cut cells here (synthetic, nothing personal): read when cut before with the "
            "same seed, count and looks, else cut and written, so other network sizes train in minutes, not "
            "the half hour of cutting.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    ) -> None:
        """Train the MRZ cell classifier from synthetic pages (cells cut by the reader's own pipeline)."""
        t0 = time.perf_counter()
        x, y, pages, held = _cached_harvest(cells, seed, count, workers, every_look)
        t_harvest = time.perf_counter() - t0
        sizes = tuple(int(v) for v in hidden.split(",") if v.strip())
        layers, held_out = train(x, y, held, copies, sizes, seed, other_cuts)
        meta = {"seed": seed, "count": count, "pages_used": pages, "cells": len(y), "copies": copies, "every_look": every_look,
                "other_cuts": other_cuts,
                "hidden": list(sizes), "held_out_pages_accuracy": round(held_out, 4)}  # fmt: skip
        save(out, layers, meta)
        report = {**meta, "out": str(out), "harvest_seconds": round(t_harvest, 1),
                  "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        typer.echo(json.dumps(report) if as_json else "\n".join(f"{k}: {v}" for k, v in report.items()))
