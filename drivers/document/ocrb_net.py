"""A trained opinion on every MRZ character: the cell's grey image through a small neural network.

Correlating a binarised cell with rendered OCR-B (`ocrb_match`) is exact on a sharp print but loses its lead
under defocus, motion blur, glare and JPEG: the binarised strokes swell or break and the look-alikes (0/O,
8/B, 5/S, E/F) end up within a few hundredths of each other, so a read that is right is still too doubtful
to act on. This network sees the grey cell instead (nothing thrown away by a threshold) and was trained on
cells cut by this very pipeline from damaged synthetic documents (`egate models train-mrz`), so its output
is a probability per character that stays sharp where the correlation is flat.

Two networks of the same shape: one learnt from the grey cells at the working glyph height
(`data/ocrb_cells.npz`), one from every look the reader takes (both glyph heights and the darkest print)
with half its damaged copies reshaped as other OCR-B cuts print them, narrower or heavier
(`data/ocrb_cells_looks.npz`, `egate models train-mrz --every-look --other-cuts 0.5`). Each misreads cells
the other reads, so where the first hesitates their probabilities are averaged. Where the first is near
certain it alone speaks: the second reads the development passports' heavier, taller R, B and P as H with
near certainty. The weights are package data (~0.3 MB each); without the first network the reader falls
back to the OCR-B match alone (the second never speaks alone). Inference is three matrix products per
network and row (about a millisecond).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

from egate.drivers.document.ocrb_match import ALPHABET, Bands, cell_bands

CELL_W, CELL_H = 20, 28
WEIGHTS = ("ocrb_cells.npz", "ocrb_cells_looks.npz")
FIRST_SURE = 0.98  # the first network's probability above which the second is not asked


def grey_cells(
    grey_line: np.ndarray, binary_line: np.ndarray, centres: list[float], pitch: float, bands: Bands | None = None
) -> np.ndarray | None:
    """The row's cells (one pitch wide, capitals plus a margin) from the grey row, ink bright, 0..1 each.

    The binarised row only says where the capitals' band is (`bands`, when the caller has them already); the
    pixels come from the grey row, and each cell is stretched between its own paper and ink levels so glare or
    a dim end look like the rest of the row.
    """
    bands = bands if bands is not None else cell_bands(binary_line, centres)
    if bands is None:
        return None
    tops, height = bands
    ink = 255.0 - grey_line.astype(np.float32)
    w, h = max(2, round(pitch)), max(2, round(height))
    out = []
    for cx, y0 in zip(centres, tops, strict=True):
        m = np.array([[1, 0, -(cx - pitch / 2)], [0, 1, -y0]], np.float32)
        cell = cv2.warpAffine(ink, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(cv2.resize(cell, (CELL_W, CELL_H), interpolation=cv2.INTER_AREA))
    return normalise(np.array(out, np.float32))


def normalise(cells: np.ndarray) -> np.ndarray:
    """Each cell stretched from its paper level (5th percentile) to its ink level (98th) and clipped to 0..1."""
    flat = cells.reshape(len(cells), -1)
    lo = np.percentile(flat, 5, axis=1, keepdims=True)
    hi = np.percentile(flat, 98, axis=1, keepdims=True)
    out = np.clip((flat - lo) / np.maximum(hi - lo, 8.0), 0.0, 1.0)
    return out.reshape(cells.shape).astype(np.float32)


Layers = list[tuple[np.ndarray, np.ndarray]]


@lru_cache(maxsize=1)
def _networks() -> dict[str, Layers]:
    """The shipped networks' layers (weights, bias) by file name; a file missing or for another alphabet is
    left out."""
    import io

    found = {}
    for name in WEIGHTS:
        try:
            data = resources.files("egate.drivers.document").joinpath("data").joinpath(name).read_bytes()
        except (FileNotFoundError, OSError):
            continue
        with np.load(io.BytesIO(data)) as z:
            if str(z["alphabet"]) == ALPHABET:
                found[name] = [(z[f"w{k}"].astype(np.float32), z[f"b{k}"].astype(np.float32)) for k in range(int(z["layers"]))]  # fmt: skip
    return found


def available() -> bool:
    """The first network is there: the second only ever votes beside it, never alone."""
    return WEIGHTS[0] in _networks()


def _probabilities(layers: Layers, x: np.ndarray) -> np.ndarray:
    for k, (w, b) in enumerate(layers):
        x = x @ w + b
        if k < len(layers) - 1:
            x = np.maximum(x, 0.0)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def classify(cells: np.ndarray) -> np.ndarray | None:
    """Probability of every character per cell, shape (cells, 37), columns in `ALPHABET` order.

    The first network's where it is near certain (`FIRST_SURE`); elsewhere the average of both. The second is
    run on those hesitant cells only, a few per row.
    """
    networks = _networks()
    first = networks.get(WEIGHTS[0])
    if first is None or len(cells) == 0:
        return None
    x = cells.reshape(len(cells), -1)
    probs = _probabilities(first, x)
    second = networks.get(WEIGHTS[1])
    # The second, learnt on reshaped copies, reads the development passports' R, B and P as H with near
    # certainty: averaged where the first is sure, a tie of R with H (ten apart in check-digit value) would
    # leave a page doubtful that the first reads surely.
    hesitant = probs.max(axis=1) < FIRST_SURE
    if second is not None and hesitant.any():
        probs[hesitant] = (probs[hesitant] + _probabilities(second, x[hesitant])) / 2
    return probs
