"""A second opinion on every MRZ character: the cell's image against OCR-B glyphs.

The MRZ is printed in OCR-B at a fixed pitch (ICAO 9303 part 3 §4.3), so each character cell can be
compared with the typeface itself, size and position in the cell included. This settles what an LSTM
trained on running text gets wrong: long filler runs read as K, and 0/O, 1/I, 8/B, 5/S shapes.
Templates are rendered once from Debian's `fonts-ocr-b`; without the font the matcher gives no opinion.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

OCR_B_FONT = Path("/usr/share/fonts/opentype/ocr-b/OCRB.otf")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<"
_CELL_W, _CELL_H = 20, 28  # a cell: one pitch wide, cap height plus a margin above and below
_MARGIN = 0.15  # share of the cap height added above and below
_PITCH_PER_CAP = 2.54 / 2.4  # OCR-B pitch over cap height in an MRZ


def _cell_vectors(cells: np.ndarray) -> np.ndarray:
    v = cells.reshape(len(cells), -1).astype(np.float32)
    v -= v.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-6)


@lru_cache(maxsize=1)
def _templates() -> tuple[np.ndarray, str] | None:
    """Every character (slightly shifted copies too) rendered in OCR-B as cells: (vectors, characters)."""
    if not OCR_B_FONT.exists():
        return None
    from PIL import Image, ImageDraw, ImageFont

    cap = 96
    font = ImageFont.truetype(str(OCR_B_FONT), 100)
    _x0, y0, _x1, y1 = font.getbbox("H", anchor="ls")
    size = round(100 * cap / (y1 - y0))
    font = ImageFont.truetype(str(OCR_B_FONT), size)
    pitch = cap * _PITCH_PER_CAP
    h = round(cap * (1 + 2 * _MARGIN))
    cells, chars = [], []
    for ch in ALPHABET:
        img = Image.new("L", (round(pitch * 3), h), 0)
        draw = ImageDraw.Draw(img)
        bx0, _, bx1, _ = font.getbbox(ch, anchor="ls")
        draw.text((1.5 * pitch - (bx0 + bx1) / 2, round(cap * (1 + _MARGIN))), ch, fill=255, font=font, anchor="ls")
        big = np.array(img)
        for dx in (-0.12, -0.06, 0.0, 0.06, 0.12):
            for dy in (-0.06, 0.0, 0.06):
                m = np.array([[1, 0, -(pitch + dx * pitch)], [0, 1, dy * cap]], np.float32)
                cell = cv2.warpAffine(big, m, (round(pitch), h))
                cells.append(cv2.resize(cell, (_CELL_W, _CELL_H), interpolation=cv2.INTER_AREA))
                chars.append(ch)
    return _cell_vectors(np.array(cells)), "".join(chars)


def _tall_glyphs(binary_line: np.ndarray) -> np.ndarray | None:
    """Stats (x, y, w, h, area) of the row's capitals: components at least 0.7 of the tall ones' height."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(255 - binary_line)
    # A row's cut stands about twice its glyph height (`rectify_row`). Specks (paper grain and guilloche dust
    # binarised on a low-resolution capture) can outnumber the glyphs tenfold, and among them the tall ones'
    # height would be a speck's: nothing under a seventh of the cut is a glyph. Nor is anything as tall as
    # the cut: print fused with a pattern or the cut's own border.
    hs = stats[1:n, 3]
    stats = stats[1:n][(hs >= binary_line.shape[0] / 7) & (hs <= 0.75 * binary_line.shape[0])]
    if not len(stats):
        return None
    hs = stats[:, 3]
    tall = stats[hs >= 0.7 * np.percentile(hs, 90)]
    return tall if len(tall) else None


def text_band(binary_line: np.ndarray) -> tuple[float, float] | None:
    """Top and bottom of the capitals in a binarised row (dark glyphs on white)."""
    tall = _tall_glyphs(binary_line)
    if tall is None:
        return None
    return float(np.median(tall[:, 1])), float(np.median(tall[:, 1] + tall[:, 3]))


Bands = tuple[list[float], float]  # each cell's top, and the cells' common height


def cell_bands(binary_line: np.ndarray, centres: list[float]) -> Bands | None:
    """Top of each cell (the capitals' top less a margin above) and the cells' common height.

    The capitals' middle is fitted as a straight line along the row: a row straightened from a rotated or
    tilted capture keeps a residual slant, and one band for the whole row then cuts the glyphs at one end
    a few pixels low, which the cell network reads as other characters.
    """
    tall = _tall_glyphs(binary_line)
    if tall is None:
        return None
    cap = float(np.median(tall[:, 3]))
    if cap < 4:
        return None
    xs = tall[:, 0] + tall[:, 2] / 2.0
    mids = tall[:, 1] + tall[:, 3] / 2.0
    slope = 0.0
    if len(tall) >= 6 and np.ptp(xs) > 4 * cap:
        # Robust fit: a line through the glyph middles, refitted without those far off it (touching glyphs,
        # guilloche strokes as tall as a capital).
        keep = np.ones(len(tall), bool)
        for _ in range(2):
            b, a = np.polyfit(xs[keep], mids[keep], 1)
            keep = np.abs(mids - (a + b * xs)) < 0.15 * cap
            if keep.sum() < 6:
                break
            slope = float(np.clip(b, -0.1, 0.1))
    mid0 = float(np.median(mids - slope * xs))
    height = cap * (1 + 2 * _MARGIN)
    return [mid0 + slope * cx - height / 2 for cx in centres], height


def cell_images(
    binary_line: np.ndarray, centres: list[float], pitch: float, bands: Bands | None = None
) -> np.ndarray | None:
    """The row's cells around `centres`, one pitch wide, scaled like the templates (ink white on black).

    `bands`: `cell_bands` of the same row and centres, when the caller has them already.
    """
    bands = bands if bands is not None else cell_bands(binary_line, centres)
    if bands is None:
        return None
    tops, height = bands
    ink = 255 - binary_line
    out = []
    w, h = max(2, round(pitch)), max(2, round(height))
    for cx, y0 in zip(centres, tops, strict=True):
        m = np.array([[1, 0, -(cx - pitch / 2)], [0, 1, -y0]], np.float32)
        cell = cv2.warpAffine(ink, m, (w, h), borderValue=0)
        out.append(cv2.resize(cell, (_CELL_W, _CELL_H), interpolation=cv2.INTER_AREA))
    return np.array(out)


def snap_centres(spans: list[tuple[int, int]], first: float, pitch: float, n: int) -> list[float]:
    """Cell centres walked along the row, each snapped to the glyph printed there.

    Perspective makes the pitch drift along a row; following the glyphs keeps every cell on its character.
    """
    glyphs = [((a + b) / 2, b - a) for a, b in spans]
    out: list[float] = []
    x, local = first, pitch
    for _ in range(n):
        near = [c for c, w in glyphs if abs(c - x) < 0.35 * local and w < 1.3 * local]
        c = min(near, key=lambda v: abs(v - x)) if near else x
        if out and near:
            local = 0.8 * local + 0.2 * min(max(c - out[-1], 0.8 * pitch), 1.2 * pitch)
        out.append(c)
        x = c + local
    return _true_to_grid(out, pitch)


_OFF_GRID = 0.12  # share of the pitch a snapped centre may stand off the row's smooth grid


def _true_to_grid(centres: list[float], pitch: float) -> list[float]:
    """Centres snapped to a glyph standing off the row's smooth grid, put back on it.

    A fixed-pitch row's cell centres lie on a smooth curve of their index (a quadratic covers perspective);
    a glyph joined to a guilloche stroke or a speck, or two fillers cut as one blob, pulls its centre 0.15 to
    0.25 of a pitch aside, and the cell network reads a cell cut that far off as another character.
    """
    if len(centres) < 8:
        return centres
    k = np.arange(len(centres))
    at = np.array(centres)
    keep = np.ones(len(at), bool)
    for _ in range(2):
        fit = np.polyval(np.polyfit(k[keep], at[keep], 2), k)
        keep = np.abs(at - fit) < _OFF_GRID * pitch
        if keep.sum() < len(at) // 2:
            return centres  # no smooth grid: leave the glyphs' own places
    return [float(c) if on else float(f) for c, f, on in zip(at, fit, keep, strict=True)]


def cell_vectors(cells: np.ndarray) -> np.ndarray:
    """Cells as unit vectors (zero mean), the form every comparison here uses."""
    return _cell_vectors(np.array([cv2.GaussianBlur(c, (3, 3), 0) for c in cells]))


def match_cells(cells: np.ndarray) -> np.ndarray | None:
    """Correlation of every cell with every character, shape (cells, 37), columns in `ALPHABET` order."""
    t = _templates()
    if t is None:
        return None
    vectors, chars = t
    corr = cell_vectors(cells) @ vectors.T
    out = np.full((len(cells), len(ALPHABET)), -1.0, np.float32)
    for j, ch in enumerate(ALPHABET):
        cols = [k for k, c in enumerate(chars) if c == ch]
        out[:, j] = corr[:, cols].max(axis=1)
    # An empty cell (no ink) matches nothing: it is a gap the grid put there, not a character.
    blank = cells.reshape(len(cells), -1).max(axis=1) < 64
    out[blank] = -1.0
    return out
