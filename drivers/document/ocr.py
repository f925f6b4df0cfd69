"""Image -> MRZ text: find the MRZ rows by their texture, read every cell twice, decide by field types.

Pipeline (docs/mrz_reading.md has the whole story):
1. Locate (`mrz_locate`): rows of print fused by a horizontal closing; groups of 2-3 parallel rows of one
   length at an even pitch, ranked by how well their glyphs fit 30/36/44 characters. Any angle, any page
   design; an upside-down page is read the other way round when the first way fails.
2. Cut each row along its axis at a fixed glyph height, flatten glare and uneven light, binarise, and lay
   a fixed-pitch grid of cells snapped to the printed glyphs.
3. Each cell against rendered OCR-B (`ocrb_match`), and tesseract LSTM with its per-character alternatives
   (one run for all rows: a process start costs ~60 ms); this document's own clear glyphs settle look-alikes.
4. `mrz_decode`: candidates cut to each position's ICAO 9303 type, check digits choose among the OCR's
   alternatives; a wrong printed check digit stays wrong. `parse_mrz` validates and names every field.
The page-layout locator of earlier versions (`find_mrz_lines`, tesseract on whole lines, length repair by
check digits) is the fallback when the texture path finds no usable MRZ.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import cv2
import numpy as np
import structlog

from egate.drivers.document.glyphs import normalise_glyph, refine
from egate.drivers.document.models import FieldError, MrzFormat, MrzResult
from egate.drivers.document.mrz import check_failures, detect_layout, parse_mrz, position_classes
from egate.drivers.document.mrz_confidence import UNCERTAIN_FIELD, Confidence, assess, describe
from egate.drivers.document.mrz_decode import Candidates, Decoded, allowed_characters, constrain, decode
from egate.drivers.document.mrz_locate import Row, binarise, completions, find_mrz_rows, rectify_row, turn
from egate.drivers.document.ocrb_match import (
    ALPHABET,
    cell_bands,
    cell_images,
    cell_vectors,
    match_cells,
    snap_centres,
    text_band,
)
from egate.drivers.document.ocrb_net import classify, grey_cells

log = structlog.get_logger(__name__)

WHITELIST = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<"
_WORK_WIDTH = 1000
_FORMAT_WIDTHS = (44, 36, 30)


@dataclass(frozen=True)
class OcrSettings:
    """Tunables for MRZ OCR; defaults measured on tony_xlh_synthetic and the PassportEye specimens."""

    char_height: int = 40
    retry_char_height: int = 56
    tesseract_cmd: str = "tesseract"
    timeout_s: float = 10.0
    # PassportEye's own MRZ locator when ours finds no lines: +3.5 s import and ~3 s per image, so off
    # by default (it found no extra MRZ on the test sets; kept for odd layouts in the field).
    use_passporteye_fallback: bool = False
    # The trained cell classifier (`ocrb_net`) as the OCR-B opinion on rows printed in the templates' cut.
    use_cell_network: bool = True


@dataclass
class OcrTrace:
    """What the pipeline did, for `egate diag reader` and the bench."""

    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    raw_attempts: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    decoded: Decoded | None = None  # the chosen texture read's per-cell candidates and check-digit choices
    aligned: bool = True  # the chosen texture read's rows start at the same place
    confidence: Confidence | None = None


def find_mrz_lines(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) boxes of the MRZ lines in full-resolution pixel coordinates, top to bottom; [] if none."""
    h, w = gray.shape[:2]
    if h < 20 or w < 20:
        return []
    scale = _WORK_WIDTH / float(w)
    small = cv2.resize(gray, (_WORK_WIDTH, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    for kernel_w in (21, 31, 13):
        boxes = _line_boxes(small, kernel_w)
        group = _mrz_group(boxes)
        if group:
            return [
                (int(x / scale), int(y / scale), int(np.ceil(bw / scale)), int(np.ceil(bh / scale)))
                for x, y, bw, bh in group
            ]
    return []


def _line_boxes(small: np.ndarray, kernel_w: int) -> list[tuple[int, int, int, int]]:
    blackhat = cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (15, 15)))
    binary = cv2.threshold(blackhat, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
    closed = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_w, 1)))
    closed = cv2.morphologyEx(closed, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, 3)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(closed)
    boxes = []
    for i in range(1, n):
        x, y, bw, bh, _area = (int(v) for v in stats[i])
        if bw > 0.25 * small.shape[1] and bw / max(bh, 1) > 10 and 4 <= bh <= 60:
            boxes.append((x, y, bw, bh))
    boxes.sort(key=lambda b: b[1])
    return boxes


def _mrz_group(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    best: list[tuple[int, int, int, int]] = []
    for i in range(len(boxes)):
        group = [boxes[i]]
        for b in boxes[i + 1 :]:
            p = group[-1]
            same_width = abs(b[2] - p[2]) < 0.25 * max(p[2], b[2])
            same_left = abs(b[0] - p[0]) < 0.08 * max(p[2], b[2])
            near = 0 < b[1] - p[1] < 4 * max(p[3], b[3])
            same_height = max(p[3], b[3]) < 1.6 * min(p[3], b[3])
            if same_width and same_left and near and same_height and len(group) < 3:
                group.append(b)
        if len(group) >= 2:
            best = group  # keep the lowest qualifying group
    return best


def _line_image(gray: np.ndarray, box: tuple[int, int, int, int], char_height: int) -> np.ndarray:
    x, y, bw, bh = box
    pad_y, pad_x = max(2, int(bh * 0.35)), max(4, int(bh * 0.8))
    crop = gray[max(0, y - pad_y) : y + bh + pad_y, max(0, x - pad_x) : x + bw + pad_x]
    factor = char_height / float(max(bh, 1))
    interp = cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA
    crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=interp)
    return cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


_PAGE_MARGIN_X = 20
_ROW_PAD = 12


def _stack(lines: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """One page with every line; returns the page and each line's top offset."""
    width = max(im.shape[1] for im in lines) + 2 * _PAGE_MARGIN_X
    rows, tops, y = [], [], 0
    for im in lines:
        row = np.full((im.shape[0] + 2 * _ROW_PAD, width), 255, np.uint8)
        row[_ROW_PAD : _ROW_PAD + im.shape[0], _PAGE_MARGIN_X : _PAGE_MARGIN_X + im.shape[1]] = im
        rows.append(row)
        tops.append(y + _ROW_PAD)
        y += row.shape[0]
    return np.vstack(rows), tops


def segment_glyphs(line_binary: np.ndarray, char_height: int) -> list[tuple[int, int]]:
    """x ranges of the characters of one binarised line (dark text on white), left to right.

    MRZ fonts are monospaced with clear gaps (ICAO 9303 part 3 §4.3: OCR-B, fixed pitch), so connected
    components give one box per character, `<` included. Pieces overlapping in x are one character.
    """
    n, _, stats, _ = cv2.connectedComponentsWithStats(255 - line_binary)
    min_h = 0.25 * char_height
    boxes = sorted(
        (int(st[0]), int(st[0] + st[2]))
        for st in stats[1:n]
        if st[3] >= min_h and st[3] <= 2.5 * char_height and st[4] >= 0.01 * char_height * char_height
    )
    merged: list[list[int]] = []
    for x0, x1 in boxes:
        if merged and x0 < merged[-1][1] - 0.3 * min(x1 - x0, merged[-1][1] - merged[-1][0]):
            merged[-1][1] = max(merged[-1][1], x1)
        else:
            merged.append([x0, x1])
    return [(a, b) for a, b in merged]


_HOCR_CHAR = re.compile(r"x_bboxes (\d+) (\d+) (\d+) (\d+); x_conf ([\d.]+)'>([^<]+)</span>")


@dataclass
class _Symbol:
    x0: int
    y0: int
    x1: int
    y1: int
    conf: float
    char: str


def _parse_hocr(hocr: str) -> list[_Symbol]:
    out = []
    for m in _HOCR_CHAR.finditer(hocr):
        ch = html.unescape(m.group(6))
        if len(ch) != 1:
            continue
        out.append(_Symbol(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                           float(m.group(5)), ch))  # fmt: skip
    return out


def _align(symbols: list[_Symbol], glyphs: list[tuple[int, int]]) -> str:
    """One character per glyph: the most confident symbol overlapping it; none -> filler.

    LSTM tesseract sometimes emits an extra symbol in the wide gaps of letter-spaced MRZ fonts; tying
    symbols to the segmented glyphs removes those insertions and keeps the line length exact.
    """
    best: list[_Symbol | None] = [None] * len(glyphs)
    for sym in symbols:
        overlaps = [min(sym.x1, g1) - max(sym.x0, g0) for g0, g1 in glyphs]
        i = int(np.argmax(overlaps))
        if overlaps[i] <= 0:
            continue
        cur = best[i]
        if cur is None or sym.conf > cur.conf:
            best[i] = sym
    return "".join(b.char if b is not None else "<" for b in best)


_HOCR_ITEM = re.compile(
    r"x_bboxes (\d+) (\d+) (\d+) (\d+); x_conf ([\d.]+)'>([^<]+)</span>"
    r"|id='choice_[\d_]+' title='x_confs ([\d.]+)'>([^<]+)</span>"
)


@dataclass
class _Choice:
    x: float
    y: float
    cands: Candidates


def _parse_hocr_choices(hocr: str) -> list[_Choice]:
    """Each recognised symbol with its centre and tesseract's alternatives (lstm_choice_mode=2), best first."""
    out: list[_Choice] = []
    for m in _HOCR_ITEM.finditer(hocr):
        if m.group(1) is not None:
            ch = html.unescape(m.group(6))
            if len(ch) != 1:
                continue
            x0, y0, x1, y1 = (int(m.group(i)) for i in range(1, 5))
            out.append(_Choice((x0 + x1) / 2, (y0 + y1) / 2, [(ch, float(m.group(5)) / 100.0)]))
        elif out:
            ch = html.unescape(m.group(8))
            if len(ch) == 1 and all(c != ch for c, _ in out[-1].cands):
                out[-1].cands.append((ch, float(m.group(7)) / 100.0))
    return out


def glyph_grid(binary_line: np.ndarray, char_height: int, n_hint: int | None = None) -> tuple[float, float, int] | None:
    """(first centre, pitch, count) of the fixed-pitch character cells of a binarised row.

    OCR-B in an MRZ has one pitch, 2.54 mm for capitals about 2.4 mm high (part 3 §4.3): the span from the
    first to the last glyph over the capitals' height gives the count, even where a pattern or blur fuses
    glyphs; the spacing of separate glyphs is the second opinion when the height is off.
    """
    spans = segment_glyphs(binary_line, char_height)
    if len(spans) < 10:
        return None
    centres = np.array([(a + b) / 2 for a, b in spans], np.float64)
    band = text_band(binary_line)
    cap = band[1] - band[0] if band is not None and band[1] - band[0] > 4 else None
    pitch_ref = _PITCH_PER_CAP * cap if cap else float(np.median(np.diff(centres)))
    # An MRZ row has no gap wider than a cell or two: ink beyond one (a page edge, other print) is not in it.
    pieces = np.split(centres, np.where(np.diff(centres) > 2.2 * pitch_ref)[0] + 1)
    centres = _trim_specks(max(pieces, key=len), pitch_ref)
    if len(centres) < 10:
        return None
    first, last = float(centres[0]), float(centres[-1])
    widths = (n_hint,) if n_hint else _FORMAT_WIDTHS
    estimates = []
    pitch0 = float(np.median(np.diff(centres)))
    by_spacing = (last - first) / pitch0 + 1 if pitch0 > 0 else 0.0
    # Nearly every glyph separate: their spacing is the surest count. Many fused: the capitals' height.
    if by_spacing and len(centres) >= 0.9 * by_spacing:
        estimates.append(by_spacing)
    if cap:
        estimates.append((last - first) / pitch_ref + 1)
    if by_spacing:
        estimates.append(by_spacing)
    for n_est in estimates:
        n = min(widths, key=lambda w: abs(w - n_est))
        if abs(n - n_est) <= max(2.5, 0.08 * n):
            return first, (last - first) / (n - 1), n
    return None


_PITCH_PER_CAP = 2.54 / 2.4


def _trim_specks(centres: np.ndarray, pitch: float) -> np.ndarray:
    """Drop a speck of background at either end of a row: it stands off the glyphs' fixed-pitch grid.

    Glyph centres sit a whole number of pitches apart; a speck before the first glyph (or after the last)
    sits a fraction of a pitch from it, and taken as a glyph it shifts every cell of the row by that much.
    """

    def off_grid(a: float, b: float) -> bool:
        steps = abs(b - a) / pitch
        return abs(steps - round(steps)) > 0.3 or round(steps) == 0

    while (
        len(centres) > 10
        and off_grid(float(centres[0]), float(centres[1]))
        and not off_grid(float(centres[1]), float(centres[2]))
    ):
        centres = centres[1:]
    while (
        len(centres) > 10
        and off_grid(float(centres[-1]), float(centres[-2]))
        and not off_grid(float(centres[-2]), float(centres[-3]))
    ):
        centres = centres[:-1]
    return centres


def _cells_from_choices(choices: list[_Choice], centres: list[float], pitch: float) -> list[Candidates]:
    n = len(centres)
    cells: list[Candidates | None] = [None] * n
    best: list[float] = [-1.0] * n
    at = np.array(centres)
    for c in choices:
        k = int(np.argmin(np.abs(at - c.x)))
        if abs(c.x - at[k]) < 0.6 * pitch and c.cands[0][1] > best[k]:
            cells[k], best[k] = c.cands, c.cands[0][1]
    # A cell tesseract left empty is most often a filler it skipped in a long run.
    return [c if c is not None else [("<", 0.5)] for c in cells]


_TESS_WEIGHT = 0.05
_NET_TYPICAL = 0.97  # median network probability of a row in the templates' cut, blurred
_OCRB_BLURRED = 0.6  # ...whose median correlation blur has lowered this far (other designs go lower)
_OCRB_TYPICAL = 0.78  # median best correlation of a row printed in the templates' OCR-B, under damage  # tesseract's vote next to the OCR-B match: a tie-breaker between near-equal shapes
_MARGIN_SCALE = 0.1  # correlation margin that makes a cell's first candidate certain
_PROB_DECADES = 2.0  # how many times less likely than the first (as a power of ten) a candidate drops to 0


def fuse(match: np.ndarray | None, tess: Candidates | None, probabilities: bool = False) -> Candidates:
    """One cell's candidates from the OCR-B match and tesseract's choices, best first, 0..1.

    `match` holds correlations, or with `probabilities` the network's probabilities (`ocrb_net`). A
    correlation a tenth behind the best is no shape the cell has; a probability a tenth of the best is a real
    second reading (0 for O under motion blur), which the check digits may choose and which makes an unchecked
    character doubtful: there the candidates are scored by how many times less likely they are.
    """
    if match is None:
        if not tess:
            return [("<", 0.3)]
        # Tesseract's own choice confidences are often 0 for the runners-up: rank them just behind.
        top = tess[0][1]
        return [tess[0], *[(ch, max(sc, top - 0.08 * k)) for k, (ch, sc) in enumerate(tess[1:4], 1)]]
    t = dict(tess or [])
    # The worse the cell matches any OCR-B glyph (another OCR-B cut, damage), the more tesseract decides.
    weight = _TESS_WEIGHT + 0.6 * min(1.0, max(0.0, (0.88 - float(match.max())) / 0.25)) if tess else 0.0
    fused = {ch: float(match[j]) + weight * t.get(ch, 0.0) for j, ch in enumerate(ALPHABET)}
    ranked = sorted(fused.items(), key=lambda kv: -kv[1])[:4]
    best = ranked[0][1]
    quality = min(1.0, max(0.3, (float(match.max()) - 0.55) / 0.33))
    if probabilities:
        return [(ch, quality * max(0.0, 1 + math.log10(max(v, 1e-9) / best) / _PROB_DECADES)) for ch, v in ranked]
    return [(ch, quality * max(0.0, 1 - (best - v) / _MARGIN_SCALE)) for ch, v in ranked]


@dataclass
class RowRead:
    fmt: MrzFormat | None
    cands: list[list[Candidates]]
    raw: list[str]
    images: list[np.ndarray]
    weakest_match: float = 0.0  # lowest OCR-B correlation of any cell's best character
    ocrb_like: bool = False  # every row looks printed in the templates' OCR-B
    aligned: bool = True  # every row starts where the others start
    opinions: list[list[tuple[str, str, float] | None]] = field(default_factory=list)  # (OCR-B, tesseract, corr)
    disagree: bool = False  # two rows starting at different places: read again anchored at each
    correlations: list[np.ndarray | None] = field(default_factory=list)  # per row: cells x ALPHABET (`match_cells`)
    learnt: bool = False  # the trained classifier gave the OCR-B opinion (`ocrb_net`)
    # Its probabilities as it gave them, before the cut to each position's type: a cell it hesitates on
    # between a letter and a digit is not near certain of the letter (a wiped name letter's remnant read as
    # I at 0.95, digits 0.04, becomes 0.99 once cut to letters).
    probs: list[np.ndarray | None] = field(default_factory=list)


def _lengthened(row: Row, by: float) -> Row:
    """The row made `abs(by)` pixels longer at one end: past its right end (in the image) for `by` > 0."""
    ux, uy = row.unit()
    return Row(row.cx + ux * by / 2, row.cy + uy * by / 2, row.length + abs(by), row.height, row.angle)


def _passport_rows(rows: list[Row], pitches: list[float], flip: bool, char_height: int) -> Iterator[list[Row]]:
    """Two passport rows of 36 cells, each lengthened by the 8 missing cells (and one more) past its end,
    then past its start. `pitches` are in reading order, at `char_height`; upside down the rows, their ends
    and the pitches run the other way in the image."""
    in_image_order = pitches[::-1] if flip else pitches
    for way in (-1.0, 1.0) if flip else (1.0, -1.0):
        yield [_lengthened(r, way * 9 * p * r.height / char_height) for r, p in zip(rows, in_image_order, strict=True)]


def _format_of(n_rows: int, n: int, first_char: str) -> MrzFormat | None:
    if n_rows == 3 and n == 30:
        return "TD1"
    if n_rows == 2 and n in (36, 44):
        visa = first_char == "V"
        return ("MRV-A" if visa else "TD3") if n == 44 else ("MRV-B" if visa else "TD2")
    return None


_LOST_END = 0.25  # room cut out beyond each end of a row found too short, as a share of its length


@dataclass
class RowCells:
    """One candidate row group cut into cells: binarised and grey rows, cell centres, pitch per row."""

    images: list[np.ndarray]  # binarised rows, dark glyphs on white
    greys: list[np.ndarray]  # the same rows before binarising
    centres: list[list[float]]
    pitches: list[float]
    n: int
    aligned: bool
    disagree: bool = False  # two rows starting at different places (see `_align_rows`)


@dataclass
class _ReadCache:
    """What one image's read computes more than once, kept for the length of that read.

    The same row is cut out many times (each anchoring, each cut again with more room, with and without
    tesseract), and tesseract is asked again about the same rows when two anchorings are compared. A cut's
    entry holds the image it came from, so no other image can take its id while the entry lives.
    """

    cuts: dict[tuple[int, Row, int, bool, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )
    tesseract: dict[tuple[bytes, int, bool, bool], str] = field(default_factory=dict)


_READ_CACHE: ContextVar[_ReadCache | None] = ContextVar("mrz_read_cache", default=None)


def _cut(gray: np.ndarray, row: Row, char_height: int, flip: bool, extra: float) -> tuple[np.ndarray, np.ndarray]:
    """The row straightened (`rectify_row`) and binarised."""
    cache = _READ_CACHE.get()
    key = (id(gray), row, char_height, flip, extra)
    if cache is not None and key in cache.cuts:
        return cache.cuts[key][1], cache.cuts[key][2]
    grey = rectify_row(gray, row, char_height, flip, extra)
    binary = binarise(grey)
    if cache is not None:
        cache.cuts[key] = (gray, grey, binary)
    return grey, binary


def _binary_cuts(
    sources: list[np.ndarray], rows: list[Row], char_height: int, flip: bool, extra: list[float]
) -> Iterator[list[np.ndarray]]:
    """Each source image's binarised cuts of the rows, one source at a time: a caller with its answer stops."""
    for source in sources:
        yield [_cut(source, r, char_height, flip, e)[1] for r, e in zip(rows, extra, strict=True)]


def row_cells(
    gray: np.ndarray,
    rows: list[Row],
    char_height: int,
    flip: bool,
    extra: list[float] | None = None,
    anchor: int | None = None,
    witness: np.ndarray | None = None,
) -> RowCells | None:
    """Cut a row group along its axis and lay the fixed-pitch grid of cells; None when no grid fits.

    `witness`: the same image before faint print was erased from `gray` (`darkest_ink`). A row's print
    running on past its last cell is looked for there too: glare fades a visa row's filler run, and the
    erasing takes it away with the security print, so 36 cells of a 44-cell row would look whole.
    """
    order = list(reversed(rows)) if flip else list(rows)
    if extra is None:
        # MRZ rows are equally long (part 3 §4.3): a row found shorter (a filler run too faint for the
        # locator, glare over an end) is cut out as long as the longest.
        longest = max(r.length for r in order)
        extra = [longest - r.length for r in order]
    greys, images = zip(*(_cut(gray, r, char_height, flip, e) for r, e in zip(order, extra, strict=True)), strict=True)
    n_hint = 30 if len(order) == 3 else None
    grids = [glyph_grid(im, char_height, n_hint) for im in images]
    counts = [g[2] for g in grids if g is not None]
    if not counts:
        return None
    n = max(set(counts), key=counts.count)
    if (n == 30) != (len(order) == 3) and max(extra) < _LOST_END * max(r.length for r in order):
        # No MRZ has two rows of 30 or three of 36/44: a run of separate fillers is missing from every row's
        # blob (six of 36 cells on a small print). Cut again with room beyond both ends.
        more = [e + _LOST_END * r.length for e, r in zip(extra, order, strict=True)]
        return row_cells(gray, rows, char_height, flip, more, anchor, witness)
    fixed: list[tuple[float, float, int]] = []
    for im, grid in zip(images, grids, strict=True):
        if grid is None or grid[2] != n:
            # This row's glyphs did not give the grid: borrow the pitch of the others, anchor at its first glyph.
            other = next(g for g in grids if g is not None and g[2] == n)
            spans = segment_glyphs(im, char_height)
            if not spans:
                return None
            grid = ((spans[0][0] + spans[0][1]) / 2, other[1], n)
        fixed.append(grid)
    centres = [snap_centres(segment_glyphs(im, char_height), first, pitch, n) for im, (first, pitch, _) in zip(images, fixed, strict=True)]  # fmt: skip
    centres, aligned = _align_rows(order, images, centres, fixed, char_height, flip, anchor)
    disagree = not aligned and len(order) == 2
    overflow = [
        max(0.0, at[-1] + 0.7 * g[1] - im.shape[1], 0.7 * g[1] - at[0])
        for im, at, g in zip(images, centres, fixed, strict=True)
    ]
    if any(overflow) and max(extra) < 8 * max(r.height for r in order):
        # The grid runs off the cut-out (every row found short): cut again with room for the cells.
        more = [
            e + (o + g[1]) * r.height / char_height for e, o, g, r in zip(extra, overflow, fixed, order, strict=True)
        ]
        return row_cells(gray, rows, char_height, flip, more, anchor, witness)
    roomy = max(extra) >= _LOST_END * max(r.length for r in order)
    sources = [gray] if witness is None else [gray, witness]
    if n == 36 and not roomy:
        # A 36-cell grid may be a 44-character visa row whose end the locator lost (faint fillers, glare, blur):
        # MRV-B has no composite check digit to catch that. Look past the 36th cell with room beyond the ends:
        # clear OCR-B glyphs there are the row running on. Then a grid of 44 is the row as printed; anything
        # else is never a sure read.
        more = [e + _LOST_END * r.length for e, r in zip(extra, order, strict=True)]
        runs_on = any(
            # (The wider cut-out is centred on the same row.)
            _runs_on(w, [c + (w.shape[1] - im.shape[1]) / 2 for c in at], g[1])
            for wide in _binary_cuts(sources, order, char_height, flip, more)
            for w, im, at, g in zip(wide, images, centres, fixed, strict=True)
        )
        if runs_on:
            again = row_cells(gray, rows, char_height, flip, more, anchor, witness)
            if again is not None and again.n == 44 and not disagree:
                return again
            aligned = False
    elif n == 36:
        # The row's own cuts first; the witness is cut only when they show nothing beyond.
        cuts = itertools.chain([list(images)], _binary_cuts(sources[1:], order, char_height, flip, extra))
        if any(_ink_beyond(im, at, g[1], char_height) for c in cuts for im, at, g in zip(c, centres, fixed, strict=True)):  # fmt: skip
            aligned = False
    if any(_at_frame_edge(gray, r) for r in order):
        # A row that runs into the edge of the image may go on outside it (a 44-character visa row seen as 36):
        # what is not in view cannot be read, however well the rest passes its checks.
        aligned = False
    return RowCells(list(images), list(greys), centres, [g[1] for g in fixed], n, aligned, disagree)


def read_rows(
    gray: np.ndarray,
    rows: list[Row],
    char_height: int,
    settings: OcrSettings,
    flip: bool,
    use_tesseract: bool = True,
    anchor: int | None = None,
    lengthened: bool = False,
    witness: np.ndarray | None = None,
) -> RowRead:
    """OCR one candidate row group: every cell's candidates (OCR-B match, tesseract's choices), raw text, images.

    `lengthened`: the rows are a passport's, already lengthened past a lost end (`_passport_rows`), and are
    cut out as they are. `witness`: `gray` before faint print was erased (see `row_cells`).
    """
    rc = row_cells(gray, rows, char_height, flip, [0.0] * len(rows) if lengthened else None, anchor, witness)
    if rc is None:
        return RowRead(None, [], [], [])
    images, centres, n, aligned = rc.images, rc.centres, rc.n, rc.aligned
    fixed = [(0.0, p, n) for p in rc.pitches]
    matches: list[np.ndarray | None] = []
    vectors: list[np.ndarray | None] = []
    learnt: list[np.ndarray | None] = []
    for im, grey, at, (_, pitch, _) in zip(images, rc.greys, centres, fixed, strict=True):
        bands = cell_bands(im, at)  # one band fit for both cuts of the row's cells
        cells = cell_images(im, at, pitch, bands)
        matches.append(match_cells(cells) if cells is not None else None)
        vectors.append(cell_vectors(cells) if cells is not None else None)
        grey_row = grey_cells(grey, im, at, pitch, bands) if settings.use_cell_network else None
        probs = classify(grey_row) if grey_row is not None else None
        if probs is not None and cells is not None:
            # A cell with no ink after binarising (off the print, washed out) is no character: no opinion.
            probs[cells.reshape(len(cells), -1).max(axis=1) < 64] = 1.0 / len(ALPHABET)
        learnt.append(probs)
    tess_cells: list[list[Candidates] | None] = [None] * len(images)
    raw: list[str] = []
    if use_tesseract or any(m is None for m in matches):
        page, tops = _stack(images)
        try:
            choices = _parse_hocr_choices(run_tesseract(page, settings, hocr=True, choices=True))
        except (subprocess.TimeoutExpired, RuntimeError) as exc:
            # A starved or broken tesseract costs its opinion, not the whole read: the OCR-B match remains.
            log.warning("mrz_tesseract_failed", error=repr(exc))
            choices = []
        for k, (im, top, at, (_, pitch, _)) in enumerate(zip(images, tops, centres, fixed, strict=True)):
            mine = [c for c in choices if top - _ROW_PAD <= c.y < top + im.shape[0] + _ROW_PAD]
            raw.append("".join(c.cands[0][0] for c in mine))
            if choices:
                tess_cells[k] = _cells_from_choices(mine, [x + _PAGE_MARGIN_X for x in at], pitch)
    cands: list[list[Candidates]] = []
    weakest = 1.0
    typical = [float(np.median(m.max(axis=1))) for m in matches if m is not None]
    ocrb_like = bool(typical) and len(typical) == len(matches) and min(typical) >= _OCRB_TYPICAL
    if not ocrb_like and typical and len(typical) == len(matches) and all(p is not None for p in learnt):
        # Blur flattens the correlations of the templates' own cut; the network, trained on that cut under the
        # same damage, still names nearly every cell with near certainty, and it does not on other designs.
        sure = [float(np.median(p.max(axis=1))) for p in learnt if p is not None]
        ocrb_like = min(sure) >= _NET_TYPICAL and min(typical) >= _OCRB_BLURRED
    correlations = list(matches)
    used_net = ocrb_like and all(p is not None for p in learnt)
    if used_net:
        # The trained network's probabilities stand in for the correlations: on this typeface they stay
        # sharp under the blur, glare and compression that flatten the correlations (`ocrb_net`).
        matches = _typed(len(rows), n, [p for p in learnt if p is not None])
    template_opinion = list(matches)
    if any(t is not None for t in tess_cells) and not ocrb_like:
        # Not the OCR-B cut the templates come from (or a row badly cut): tesseract reads, alone.
        matches = [None] * len(matches)
    for m, t in zip(matches, tess_cells, strict=True):
        cands.append(
            [fuse(m[i] if m is not None else None, t[i] if t is not None else None, used_net) for i in range(n)]
        )
        weakest = min(weakest, float(m.max(axis=1).min()) if m is not None else 0.0)
    if not raw:
        raw = ["".join(c[0][0] for c in line) for line in cands]
    fmt = _format_of(len(rows), n, cands[0][0][0][0])
    if fmt == "TD2" and cands[0][0][0][0] == "P" and not lengthened:
        # Passports are TD3 only (part 4): 36 cells starting with P are a passport row whose end the locator
        # lost (glare or a faint filler run). 44 cells once lengthened, or no sure read.
        for longer in _passport_rows(rows, rc.pitches, flip, char_height):
            wide = read_rows(gray, longer, char_height, settings, flip, use_tesseract, anchor, True, witness)
            if wide.fmt == "TD3":
                return wide
        aligned = False
    if fmt is not None and not used_net and all(v is not None for v in vectors):
        # (The network already learnt these shapes under damage; against it the binarised samples mislead.)
        cands = _settle_by_own_glyphs(fmt, cands, [v for v in vectors if v is not None])
    opinions = _agreement(fmt, template_opinion, tess_cells, n) if fmt is not None else []
    return RowRead(
        fmt, cands, raw, images, weakest, ocrb_like, aligned, opinions, rc.disagree, correlations, used_net,
        learnt if used_net else [],
    )  # fmt: skip


# A network character this probable needs no second opinion where no check digit covers it.
_NEAR_CERTAIN = 0.98


@lru_cache(maxsize=8)
def _type_mask(cls: str) -> np.ndarray:
    """Which columns of `ALPHABET` a position of ICAO 9303 type `cls` may hold."""
    allowed = allowed_characters(cls)
    return np.array([ch in allowed for ch in ALPHABET])


def _typed(n_rows: int, n: int, probs: list[np.ndarray]) -> list[np.ndarray | None]:
    """The network's probabilities with each position cut to the characters its ICAO 9303 type allows.

    A name never holds a digit and a date never holds a letter: where the network wavers between O and 0 in
    a nationality, the type settles it. Alphanumeric positions keep every character (check digits decide
    there), and filler positions too: a character printed where only a filler belongs is what is printed.
    """
    fmt = _format_of(n_rows, n, ALPHABET[int(probs[0][0].argmax())])
    if fmt is None:
        return list(probs)
    out: list[np.ndarray | None] = []
    for cls_line, p in zip(position_classes(fmt), probs, strict=True):
        q = p.copy()
        for i, cls in enumerate(cls_line):
            if cls in ("X", "F") or i >= len(q):
                continue
            mask = _type_mask(cls)
            if q[i][mask].sum() > 0.05:  # a cell that is none of them keeps its own opinion (and fails parsing)
                q[i] = np.where(mask, q[i], 0.0) / q[i][mask].sum()
        out.append(q)
    return out


def _agreement(
    fmt: MrzFormat, matches: list[np.ndarray | None], tess: list[list[Candidates] | None], n: int
) -> list[list[tuple[str, str, float] | None]]:
    """Per cell, the characters the two opinions (OCR-B match, tesseract) read first for its field type, and
    the OCR-B match's correlation with its character."""
    classes = position_classes(fmt)
    out: list[list[tuple[str, str, float] | None]] = []
    for li, (m, t) in enumerate(zip(matches, tess, strict=True)):
        row: list[tuple[str, str, float] | None] = [None] * n
        if m is not None and t is not None:
            for i in range(n):
                ranked = [(ALPHABET[j], float(m[i][j])) for j in np.argsort(-m[i])[:4]]
                a = constrain(ranked, classes[li][i])[0][0]
                row[i] = (a, constrain(t[i], classes[li][i])[0][0], float(m[i][ALPHABET.index(a)]))
        out.append(row)
    return out


def _at_frame_edge(gray: np.ndarray, row: Row) -> bool:
    ux, uy = row.unit()
    h, w = gray.shape[:2]
    margin = 0.6 * row.height
    for sign in (-1.0, 1.0):
        x = row.cx + sign * ux * row.length / 2
        y = row.cy + sign * uy * row.length / 2
        if x < margin or y < margin or x > w - 1 - margin or y > h - 1 - margin:
            return True
    return False


def _ink_beyond(image: np.ndarray, centres: list[float], pitch: float, char_height: int) -> bool:
    """Whether glyphs stand within a few cells after the row's last cell.

    The cut-out is as long as the grid needs plus a margin (`row_cells`), so a print that runs on shows
    there. A sliver at the very end of the cut-out is the cut's own border (or the page's edge), not a glyph,
    and a single speck is background.
    """
    last = centres[-1]
    spans = segment_glyphs(image, char_height)
    end = image.shape[1] - 2
    beyond = [
        (a, b)
        for a, b in spans
        if last + 0.7 * pitch < (a + b) / 2 < last + 4 * pitch and (b < end or b - a >= 0.4 * pitch)
    ]
    # A row running on shows as glyphs at the pitch (three within four cells); one speck is background.
    return len(beyond) >= 2


_RUNS_ON_MATCH = 0.75  # OCR-B correlation of a cell that is surely a printed character


def _runs_on(image: np.ndarray, centres: list[float], pitch: float) -> bool:
    """Whether the row's print goes on past its last cell: two of the next three cells are clear OCR-B glyphs.

    Background beyond a row (guilloche, the page's edge, the scene) makes specks a glyph count would take for
    print; only characters the OCR-B match recognises clearly are the row running on.
    """
    last = centres[-1]
    if last + 3.5 * pitch > image.shape[1]:
        return False
    cells = cell_images(image, [last + k * pitch for k in (1, 2, 3)], pitch)
    match = match_cells(cells) if cells is not None else None
    return match is not None and int((match.max(axis=1) >= _RUNS_ON_MATCH).sum()) >= 2


def _align_rows(
    rows: list[Row],
    images: list[np.ndarray],
    centres: list[list[float]],
    grids: list[tuple[float, float, int]],
    char_height: int,
    flip: bool,
    anchor: int | None = None,
) -> tuple[list[list[float]], bool]:
    """Cell centres with every row starting where the others start, and whether the rows agreed.

    MRZ rows are left-aligned and equally long (ICAO 9303 part 3 §4.3): a row whose first cell lies half a
    pitch or more from the others' picked up a speck of background as a glyph, or lost its first glyph, and
    every cell of it is one character off. With three rows the two that agree re-anchor the third; with two
    rows nothing says which is right, and the read is marked misaligned (uncertain), unless the caller names
    the row to trust (`anchor`): the reader tries each and lets the check digits and codes decide.
    """
    sign = -1.0 if flip else 1.0
    ref = rows[0]
    scales = [char_height / max(r.height, 1.0) for r in rows]
    starts = [
        (at[0] - im.shape[1] / 2) / sc + sign * ref.along_offset(r)
        for r, im, at, sc in zip(rows, images, centres, scales, strict=True)
    ]
    page_pitch = float(np.median([g[1] / sc for g, sc in zip(grids, scales, strict=True)]))
    middle = float(np.median(starts)) if anchor is None else starts[anchor]
    off = [k for k, s in enumerate(starts) if abs(s - middle) > 0.5 * page_pitch]
    if not off:
        return centres, True
    if len(rows) < 3 and anchor is None:
        return centres, False
    out = list(centres)
    for k in off:
        first = (middle - sign * ref.along_offset(rows[k])) * scales[k] + images[k].shape[1] / 2
        _, pitch, n = grids[k]
        out[k] = snap_centres(segment_glyphs(images[k], char_height), first, pitch, n)
    return out, True


_CLEAR_MATCH = 0.8
_NO_MATCH = 0.7
_OWN_SAME = 0.95


def _settle_by_own_glyphs(fmt: MrzFormat, cands: list[list[Candidates]], vectors: list[np.ndarray]) -> list[list[Candidates]]:  # fmt: skip
    """Unsure cells compared with this document's own print of the characters they may be.

    Cells read clearly (and, for letters and digits, in a field whose type allows only that kind) are samples
    of this very printing, damage included, closer to a doubtful cell than any rendered template: settles
    0/O, 1/I, 8/B, 5/S in alphanumeric fields, a filler read as K in a long run, E/F under glare.
    """
    classes = position_classes(fmt)
    samples: dict[str, list[tuple[tuple[int, int], np.ndarray]]] = {}
    unsure: list[tuple[int, int]] = []
    for li, line in enumerate(cands):
        for i, c in enumerate(line):
            typed = constrain(c, classes[li][i])
            ch, sc = typed[0]
            sure = sc >= 0.9 and (len(typed) < 2 or typed[1][1] < 0.5 * sc)
            if sure and (ch == "<" or classes[li][i] in ("A", "N")):
                samples.setdefault(ch, []).append(((li, i), vectors[li][i]))
            if not sure or classes[li][i] == "X":
                unsure.append((li, i))
    out = [list(line) for line in cands]
    for li, i in unsure:
        c = cands[li][i]
        options = list(dict.fromkeys([ch for ch, _ in c[:3]] + ["<"]))
        own = {
            ch: max(float(vectors[li][i] @ v) for p, v in samples[ch] if p != (li, i))
            for ch in options
            if any(p != (li, i) for p, _ in samples.get(ch, []))
        }
        if not own:
            continue
        # The same print of the same character matches at ~0.97; a different character at <= 0.93.
        top = max(own, key=lambda ch: own[ch])
        current = own.get(c[0][0])
        needed = _OWN_SAME if current is not None else _OWN_SAME + 0.01
        if own[top] < needed or any(own[top] - v < 0.03 for ch, v in own.items() if ch != top):
            continue
        pick = top
        if pick != c[0][0]:
            out[li][i] = [(pick, c[0][1]), *[(ch, sc * 0.5) for ch, sc in c if ch != pick]]
    return out


def _flip_first(gray: np.ndarray, rows: list[Row]) -> bool:
    """Whether the rows more likely read upside down: MRZ filler runs sit at the right end of rows."""
    left = right = 0.0
    for r in rows:
        im = 255 - _cut(gray, r, 24, False, 0.0)[1]
        q = im.shape[1] // 4
        left += float(im[:, :q].mean())
        right += float(im[:, -q:].mean())
    return left < 0.8 * right


def run_tesseract(
    image: np.ndarray, settings: OcrSettings, psm: int = 6, hocr: bool = False, choices: bool = False
) -> str:
    """OCR a binary page with the MRZ whitelist; plain text, or hOCR with character boxes."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        return ""
    cache = _READ_CACHE.get()
    key = (hashlib.blake2b(png.tobytes(), digest_size=16).digest(), psm, hocr, choices)
    if cache is not None and key in cache.tesseract:
        return cache.tesseract[key]
    cmd = [
        settings.tesseract_cmd, "stdin", "stdout", "--psm", str(psm), "-l", "eng",
        "-c", f"tessedit_char_whitelist={WHITELIST}",
        "-c", "load_system_dawg=0", "-c", "load_freq_dawg=0",
    ]  # fmt: skip
    if choices:
        cmd += ["-c", "lstm_choice_mode=2"]
    if hocr:
        cmd += ["-c", "hocr_char_boxes=1", "hocr"]
    # One OpenMP thread: with 2 shared cores tesseract's default thread team spins and waits; measured
    # 1.3-1.5 s -> 0.27 s per MRZ on this machine under load.
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    proc = subprocess.run(
        cmd, input=png.tobytes(), capture_output=True, timeout=settings.timeout_s, check=False, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tesseract failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}")
    text = proc.stdout.decode("utf-8", errors="replace")
    if cache is not None:
        cache.tesseract[key] = text
    return text


def _text_lines(text: str) -> list[str]:
    return [ln.replace(" ", "") for ln in text.splitlines() if ln.strip()]


GlyphRow = list[np.ndarray | None]


def ocr_lines(
    line_images: list[np.ndarray], char_height: int, settings: OcrSettings
) -> tuple[list[str], list[GlyphRow | None]]:
    """OCR the normalised MRZ lines in one tesseract run; each line aligned to its segmented glyphs.

    Returns the text lines and, for lines whose glyph count fits an MRZ width, each glyph's normalised image.
    """
    page, tops = _stack(line_images)
    symbols = _parse_hocr(run_tesseract(page, settings, hocr=True))
    out: list[str] = []
    crops: list[GlyphRow | None] = []
    for im, top in zip(line_images, tops, strict=True):
        bottom = top + im.shape[0]
        mine = [s for s in symbols if top - _ROW_PAD <= (s.y0 + s.y1) / 2 < bottom + _ROW_PAD]
        spans = segment_glyphs(im, char_height)
        glyphs = [(a + _PAGE_MARGIN_X, b + _PAGE_MARGIN_X) for a, b in spans]
        if len(glyphs) in _FORMAT_WIDTHS and mine:
            out.append(_align(mine, glyphs))
            crops.append([normalise_glyph(im, a, b) for a, b in spans])
        else:
            out.append("".join(s.char for s in mine))
            crops.append(None)
    return out, crops


# --- structure repair -------------------------------------------------------------------------------


def _target_width(lines: list[str]) -> int:
    longest = max(len(ln) for ln in lines)
    return min(_FORMAT_WIDTHS, key=lambda w: abs(w - longest))


def _score(lines: list[str], today: date) -> tuple[int, int]:
    result = parse_mrz("\n".join(lines), today=today)
    return check_failures(result), len(result.repairs)


def _fit_names_line(line: str, width: int) -> str:
    # Name lines carry no check digit: only the trailing filler run may be cut or padded.
    if len(line) > width:
        extra = len(line) - width
        stripped = line.rstrip("<")
        if len(line) - len(stripped) >= extra:
            return line[:width]
        return line[:width]
    return line + "<" * (width - len(line))


def _length_candidates(line: str, width: int, max_edits: int = 2) -> list[str]:
    diff = len(line) - width
    if diff == 0:
        return [line]
    if 0 < diff <= max_edits:
        out = set()
        for drop in itertools.combinations(range(len(line)), diff):
            out.add("".join(c for i, c in enumerate(line) if i not in drop))
        return sorted(out)
    if 0 < -diff <= max_edits:
        # Tesseract drops characters mostly inside filler runs: insert fillers.
        out = set()
        for pos in itertools.combinations_with_replacement(range(len(line) + 1), -diff):
            s = line
            for p in sorted(pos, reverse=True):
                s = s[:p] + "<" + s[p:]
            out.add(s)
        return sorted(out)
    return []


def assemble_mrz(raw_lines: list[str], today: date) -> list[str] | None:
    """Choose and length-fix the MRZ lines from OCR output; check digits arbitrate the edits."""
    lines = [ln for ln in raw_lines if len(ln) >= 20]
    if len(lines) < 2:
        return None
    width = _target_width(lines)
    n_lines = 3 if width == 30 else 2
    lines = lines[-n_lines:] if len(lines) > n_lines else lines
    if len(lines) != n_lines:
        return None
    names_index = 2 if n_lines == 3 else 0
    fixed = list(lines)
    fixed[names_index] = _fit_names_line(fixed[names_index], width)
    for i in range(n_lines):
        if i == names_index or len(fixed[i]) == width:
            continue
        best: tuple[tuple[int, int], str] | None = None
        for cand in _length_candidates(fixed[i], width):
            trial = [*fixed[:i], cand, *fixed[i + 1 :]]
            s = _score(trial, today)
            if best is None or s < best[0]:
                best = (s, cand)
                if s == (0, 0):
                    break
        if best is None:
            fixed[i] = (fixed[i] + "<" * width)[:width]
        else:
            fixed[i] = best[1]
    return fixed


def read_mrz_image(
    image_bgr: np.ndarray,
    *,
    today: date | None = None,
    settings: OcrSettings | None = None,
    trace: OcrTrace | None = None,
) -> MrzResult:
    """Read the MRZ of a document image (BGR or grey). Never raises: failures are in `.errors`."""
    started = time.perf_counter()
    settings = settings or OcrSettings()
    today = today or date.today()
    trace = trace if trace is not None else OcrTrace()
    try:
        result = _read(image_bgr, today, settings, trace)
    except Exception as exc:
        log.warning("mrz_ocr_failed", error=repr(exc))
        result = MrzResult(errors=[FieldError(field="image", message=f"MRZ OCR failed: {exc}")])
    trace.seconds = time.perf_counter() - started
    log.info(
        "mrz_ocr_done",
        format=result.format,
        valid=result.valid,
        number=result.document.masked_number if result.document else None,
        errors=[e.field for e in result.errors],
        seconds=round(trace.seconds, 3),
    )
    return result


def _match_top(rr: RowRead, classes: str, li: int, i: int) -> str:
    """The OCR-B match's best character of the position's type, without mapping look-alikes (1 -> I); none
    where even that character is barely like the cell (under `_OCRB_BLURRED`): no opinion worth a vote."""
    corr = rr.correlations[li] if li < len(rr.correlations) else None
    if corr is None or i >= len(corr):
        return ""
    allowed = allowed_characters(classes[i])
    j = next((j for j in np.argsort(-corr[i]) if ALPHABET[j] in allowed), None)
    return ALPHABET[j] if j is not None and corr[i][j] >= _OCRB_BLURRED else ""


def _confidence_of(rr: RowRead, decoded: Decoded) -> Confidence:
    assert rr.fmt is not None
    classes = position_classes(rr.fmt)
    agreed: set[tuple[int, int]] = set()
    disputed: dict[tuple[int, int], str] = {}
    for li, row in enumerate(rr.opinions):
        for i, pair in enumerate(row):
            if pair is None or li >= len(decoded.lines):
                continue
            chosen = decoded.lines[li][i]
            if pair[0] == pair[1] == chosen or (pair[1] == chosen and pair[2] < _NO_MATCH and not rr.learnt):
                # Both opinions agree, or the OCR-B match has no opinion worth the name (the cell is like
                # none of the templates' cut: another OCR-B design) and tesseract's reading was chosen. Not
                # where the network read the row: it is the templates' cut, so a cell like none of them is
                # damaged or wiped, and tesseract reading a wiped name letter as a filler proves nothing.
                agreed.add((li, i))
            elif rr.learnt and pair[0] == chosen and _match_top(rr, classes[li], li, i) == chosen:
                # The network and the OCR-B match read the same character: tesseract alone (weak on 0/O)
                # dissenting is outvoted, not a second reading to try against the check digits.
                agreed.add((li, i))
            elif pair[0] == pair[1] != chosen or (
                pair[0] != pair[1] and (pair[0] == chosen or pair[2] >= _CLEAR_MATCH)
            ):
                # Tesseract dissenting from the chosen OCR-B character, or a clear OCR-B match overruled. An
                # OCR-B match barely like its own character (another OCR-B cut) is no opinion worth a doubt.
                disputed[(li, i)] = pair[1] if pair[0] == chosen else pair[0]
    unsupported: set[tuple[int, int]] = set()
    if rr.learnt:
        for li, line in enumerate(decoded.lines):
            for i, ch in enumerate(line):
                pair = rr.opinions[li][i] if li < len(rr.opinions) and i < len(rr.opinions[li]) else None
                probs = rr.probs[li] if li < len(rr.probs) else None
                if probs is not None and float(probs[i][ALPHABET.index(ch)]) >= _NEAR_CERTAIN:
                    continue  # near certain: in this cut it tells 0 from O better than either other opinion
                if _match_top(rr, classes[li], li, i) != ch and (pair is None or pair[1] != ch):
                    unsupported.add((li, i))
    return assess(rr.fmt, decoded.cands, decoded.lines, agreed, disputed, matched=rr.ocrb_like, unsupported=unsupported)


def _with_confidence(result: MrzResult, trace: OcrTrace) -> MrzResult:
    """The read, reported invalid when characters no check digit proves were not read clearly."""
    decoded = trace.decoded
    confidence = trace.confidence
    if result.format is None or decoded is None or check_failures(result) > 0:
        return result  # not a texture read, or already reported invalid
    # (The parser may have repaired what was read, a stray mark in a filler run: the doubts about the other
    # characters stand all the same. Comparing the lines here once let a doubtful name letter through.)
    if confidence is None:
        return result
    if confidence.uncertain or not trace.aligned:
        where = describe(result.format, [*confidence.weak_unchecked, *confidence.weak_checked])
        message = (
            f"MRZ characters not read clearly ({where}); present the document again"
            if trace.aligned
            else "MRZ rows not cut as printed (start or end); present the document again"
        )
        return result.model_copy(
            update={"errors": [*result.errors, FieldError(field=UNCERTAIN_FIELD, message=message)]}
        )
    return result


def _read(image: np.ndarray, today: date, settings: OcrSettings, trace: OcrTrace) -> MrzResult:
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        return MrzResult(errors=[FieldError(field="image", message="not an image (expected a BGR array)")])
    if shutil.which(settings.tesseract_cmd) is None:
        return MrzResult(
            errors=[FieldError(field="image", message="tesseract not installed: apt-get install tesseract-ocr")]
        )
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if gray.dtype != np.uint8:
        gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # type: ignore[call-overload]
    colour = image if image.ndim == 3 and image.dtype == np.uint8 else None
    cache = _READ_CACHE.set(_ReadCache())
    try:
        best, best_score = _read_by_texture(gray, today, settings, trace, colour)
    finally:
        _READ_CACHE.reset(cache)
    if best is not None and best_score <= _GOOD_ENOUGH:
        return _with_confidence(best, trace)
    # The page-layout locator of earlier versions: a second opinion when the texture locator found nothing.
    legacy = _read_legacy(image, gray, today, settings, trace)
    if best is None or (legacy.document is not None and check_failures(legacy) < best_score):
        if legacy.format in ("MRV-A", "MRV-B") and legacy.document is not None and check_failures(legacy) == 0:
            # The page-layout path has no per-character evidence, and a visa has no composite check digit.
            error = FieldError(
                field=UNCERTAIN_FIELD, message="MRZ read without per-character evidence; present the document again"
            )
            return legacy.model_copy(update={"errors": [*legacy.errors, error]})
        return legacy
    return _with_confidence(best, trace)


# A read with this many failing checks is a document as printed (one wrong digit also fails the composite).
_GOOD_ENOUGH = 2
_SURE_MATCH = 0.72


def _as_printed(score: int, unsure: bool) -> bool:
    """A read of the document as printed: every check passes and every character is sure, or a check digit or
    two fail (a document printed so). A read that passes with doubts may read surely in another look."""
    return score <= _GOOD_ENOUGH and not (score == 0 and unsure)


@dataclass
class _Best:
    """The best texture read so far: its result, failing checks, whether any character is in doubt, where it
    was read (image, rows, which way up), and how many row reads the page has cost (bounded: a page nothing
    reads well is refused in seconds, not searched for long)."""

    result: MrzResult | None = None
    score: int = 1 << 30
    unsure: bool = True
    where: tuple[np.ndarray, list[Row], bool, np.ndarray | None] | None = None  # image, rows, upside down, witness
    reads: int = 0

    @property
    def good_enough(self) -> bool:
        return self.result is not None and _as_printed(self.score, self.unsure)


# Row reads (one cut of a row group, OCR'd) a page may cost: a clear page takes one to three, a damaged one
# that reads in the end rarely more than twelve.
_MAX_ROW_READS = 16


_DIM_PAPER = 0.4  # the dimmest paper uneven light leaves, as a share of the page's bright paper


def evenly_lit(gray: np.ndarray) -> np.ndarray:
    """The image divided by its paper's brightness around each pixel, so one threshold fits the whole page.

    The paper's brightness is a grey closing wider than any glyph stroke (the print drops out; a dark scene
    keeps its own level instead of taking the page's), smoothed: uneven light and a glare's halo become flat
    paper, and print keeps its contrast. Nothing is brightened more than paper at `_DIM_PAPER` of the page's:
    a dark scene around the document is not stretched into noise the locator would take for texture.
    """
    k = max(15, min(gray.shape[:2]) // 20)
    window = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    paper = cv2.blur(cv2.morphologyEx(gray, cv2.MORPH_CLOSE, window), (k, k))
    floor = max(1.0, _DIM_PAPER * float(np.percentile(paper, 90)))
    return np.clip(gray.astype(np.float32) * (235.0 / np.maximum(paper, floor)), 0, 255).astype(np.uint8)


def darkest_ink(gray: np.ndarray) -> np.ndarray:
    """The image, evenly lit, with everything lighter than its darkest print made paper-white.

    Otsu's threshold parts paper from print; a second one within the print parts the darkest class, the MRZ
    ink, from grey guilloches and security print that a row's own threshold would keep as glyph strokes. Both
    are global, so the light is evened out first (`evenly_lit`).
    """
    gray = evenly_lit(gray)
    paper_level = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0]
    dark = gray[gray < paper_level]
    if dark.size < 16:
        return gray
    ink_level = cv2.threshold(dark.reshape(1, -1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0]
    return np.where(gray > ink_level, np.uint8(255), gray).astype(np.uint8)


def _levelled_groups(
    gray: np.ndarray, companion: np.ndarray | None = None
) -> tuple[np.ndarray, list[list[Row]], np.ndarray | None]:
    """The image (turned back when steeply tilted), its MRZ row groups, and `companion` turned with it."""
    groups = find_mrz_rows(gray)
    for degrees in _LEVELLING_TURNS if not groups else ():
        # The locator fuses each row with a horizontal closing; at a steep tilt a row fills its rectangle
        # badly and is dropped. Turned back by about the tilt, the rows are found again.
        turned = turn(gray, degrees)
        if groups := find_mrz_rows(turned):
            return turned, groups, None if companion is None else turn(companion, degrees)
    return gray, groups, companion


def _read_by_texture(
    gray: np.ndarray, today: date, settings: OcrSettings, trace: OcrTrace, colour: np.ndarray | None = None
) -> tuple[MrzResult | None, int]:
    """Rows found by their texture, OCR'd with alternatives, decided by field types and check digits.

    Cheapest looks first, each at the working glyph height: the rows found; the rows found on the darkest
    print alone (`darkest_ink`: security print as dark as mid-grey is gone); two rows as an ID card with its
    lost third row added; the rows found on the `colour` image's brightest channel (MRZ ink is black while
    guilloches and security print are coloured, so they fade, as under a page reader's infrared light). Once
    a look reads well enough, only a sharper look at those rows, that way up, can improve it; otherwise the
    looks again at the sharper glyph height, within the page's budget of row reads.
    """
    gray, groups, _ = _levelled_groups(gray)
    variants: dict[str, tuple[np.ndarray, list[list[Row]], np.ndarray | None]] = {}

    def looks() -> Iterator[tuple[np.ndarray, list[Row], np.ndarray | None]]:
        """(image, row group, the image before faint print was erased from it, if it was)"""
        yield from ((gray, g, None) for g in groups[:2])
        if "darkest" not in variants:
            variants["darkest"] = _levelled_groups(darkest_ink(gray), companion=gray)
        darkest, darkest_groups, witness = variants["darkest"]
        yield from ((darkest, g, witness) for g in darkest_groups[:2])
        yield from ((gray, c, None) for g in groups[:2] for c in completions(g))
        if colour is not None:
            if "ink" not in variants:
                variants["ink"] = _levelled_groups(colour.max(axis=2))
            yield from ((variants["ink"][0], g, None) for g in variants["ink"][1][:2])

    best = _Best()
    for char_height in (settings.char_height, settings.retry_char_height):
        if best.good_enough and best.where is not None:
            image, group, flip, witness = best.where
            _read_group(image, group, char_height, [flip], today, settings, trace, best, witness)
            continue
        for image, group, witness in looks():
            if best.reads >= _MAX_ROW_READS:
                break
            flips = [True, False] if _flip_first(image, group) else [False, True]
            if _read_group(image, group, char_height, flips, today, settings, trace, best, witness):
                return best.result, best.score
            if best.good_enough:
                break
    return best.result, best.score


def _read_group(
    gray: np.ndarray,
    group: list[Row],
    char_height: int,
    flips: list[bool],
    today: date,
    settings: OcrSettings,
    trace: OcrTrace,
    best: _Best,
    witness: np.ndarray | None = None,
) -> bool:
    """Read one row group each way up in `flips` at one glyph height, updating `best`; True when settled.

    `witness`: `gray` before faint print was erased from it (`darkest_ink`); a row's print running on past
    its found end is looked for there too (`row_cells`).
    """
    for flip in flips:
        template_lines: list[str] | None = None
        for use_tesseract in (False, True):
            if best.reads >= _MAX_ROW_READS:
                return False
            best.reads += 1
            rr = read_rows(gray, group, char_height, settings, flip, use_tesseract, witness=witness)
            trace.raw_attempts.append(rr.raw)
            if rr.fmt is None:
                break
            if rr.disagree:
                best.reads += len(group)
                rr = _settle_anchor(gray, group, char_height, settings, flip, use_tesseract, today, witness) or rr
            if rr.fmt is None:
                break
            if not use_tesseract and not rr.ocrb_like:
                continue  # another typeface: the OCR-B match alone means nothing, ask tesseract
            decoded = decode(rr.fmt, rr.cands)
            lines = decoded.lines
            result = parse_mrz("\n".join(lines), today=today)
            score = check_failures(result) if result.document is not None else 1 << 20
            unsure = True
            confidence = None
            if score == 0:
                confidence = _confidence_of(rr, decoded)
                unsure = confidence.uncertain or not rr.aligned
            # On a tie the read that also heard tesseract wins: names carry no check digit. A read whose
            # every character is sure beats one that passes the same checks with doubts.
            if (score, unsure) < (best.score, best.unsure) or (
                use_tesseract and (score, unsure) == (best.score, best.unsure)
            ):
                best.result, best.score, best.unsure = result, score, unsure
                best.where = (gray, group, flip, witness)
                trace.boxes = [_row_box(r) for r in group]
                trace.decoded, trace.aligned, trace.confidence = decoded, rr.aligned, confidence
            # The OCR-B match alone is trusted only when every cell is a clear OCR-B character and every
            # check digit agrees; anything less is read again with tesseract's opinion too.
            if score == 0 and not unsure and (use_tesseract or rr.weakest_match >= _SURE_MATCH):
                return True
            if use_tesseract and lines == template_lines and _as_printed(score, unsure):
                # Both opinions read the same characters and only a check digit or two fail: that is the
                # document as printed, not a misread a sharper look would change.
                return True
            if not use_tesseract:
                template_lines = lines
        if best.good_enough:
            return False  # this way up reads; the other way up is the same rows upside down
    return False


_LEVELLING_TURNS = (8.0, -8.0, 16.0, -16.0)


def _settle_anchor(
    gray: np.ndarray,
    group: list[Row],
    char_height: int,
    settings: OcrSettings,
    flip: bool,
    use_tesseract: bool,
    today: date,
    witness: np.ndarray | None = None,
) -> RowRead | None:
    """Two rows that start at different places, read anchored at each: the one reading that passes.

    One row picked up a speck of background before its first glyph (or lost its first glyph), so one of the
    two is every cell off. Shifted by a cell, a row fails its check digits, or its document code and state
    codes, almost surely. The anchoring kept has at most two field errors (a document printed with a wrong
    check digit still qualifies) and at least two fewer than the other; a read with no errors must also be
    sure of every character. Otherwise undecided: the read stays uncertain.
    """
    reads: list[tuple[int, RowRead]] = []
    for anchor in range(len(group)):
        rr = read_rows(gray, group, char_height, settings, flip, use_tesseract, anchor=anchor, witness=witness)
        if rr.fmt is None or not rr.aligned:
            continue
        decoded = decode(rr.fmt, rr.cands)
        result = parse_mrz("\n".join(decoded.lines), today=today)
        if result.document is None:
            continue
        if not result.errors and _confidence_of(rr, decoded).uncertain:
            continue
        reads.append((len(result.errors), rr))
    reads.sort(key=lambda r: r[0])
    # A document printed with a wrong check digit fails one or two checks however it is cut; a row shifted by
    # a cell fails several (its codes, dates and digits). The best anchoring must be clearly the best.
    if not reads or reads[0][0] > _GOOD_ENOUGH or (len(reads) > 1 and reads[1][0] < reads[0][0] + 2):
        return None
    return reads[0][1]


def _row_box(r: Row) -> tuple[int, int, int, int]:
    half_w = abs(r.length / 2 * np.cos(np.radians(r.angle))) + abs(r.height / 2 * np.sin(np.radians(r.angle)))
    half_h = abs(r.length / 2 * np.sin(np.radians(r.angle))) + abs(r.height / 2 * np.cos(np.radians(r.angle)))
    return int(r.cx - half_w), int(r.cy - half_h), int(2 * half_w), int(2 * half_h)


def _read_legacy(image: np.ndarray, gray: np.ndarray, today: date, settings: OcrSettings, trace: OcrTrace) -> MrzResult:
    boxes = find_mrz_lines(gray)
    trace.boxes = boxes
    best: MrzResult | None = None
    best_score = 1 << 30
    attempts: list[tuple[str, int]] = [("lines", settings.char_height), ("lines", settings.retry_char_height)]
    if boxes:
        attempts.append(("band", 0))
    else:
        attempts = [("page", 0)]
    for mode, char_height in attempts:
        crops: list[GlyphRow | None] = []
        if mode == "lines":
            raw, crops = ocr_lines([_line_image(gray, b, char_height) for b in boxes], char_height, settings)
        elif mode == "band":
            raw = _text_lines(run_tesseract(_band_around(gray, boxes, settings.char_height), settings))
        else:
            raw = _text_lines(run_tesseract(_bottom_band(gray), settings))
        trace.raw_attempts.append(raw)
        lines = assemble_mrz(raw, today)
        if lines is None:
            continue
        layout = detect_layout(lines)
        uncertain: frozenset[tuple[int, int]] = frozenset()
        if layout is not None:
            locked: frozenset[tuple[int, int]] = frozenset()
            if crops and lines == raw[-len(lines) :]:
                lines, locked = refine(layout.fmt, lines, crops[-len(lines) :])
            # Every alphanumeric position a glyph sample did not confirm may hold an OCR confusion; only
            # where a composite check digit can confirm a repair (not on MRV-A/B visas).
            uncertain = frozenset(
                (li, i)
                for li, cls_line in enumerate(position_classes(layout.fmt))
                for i, cls in enumerate(cls_line)
                if cls == "X" and (li, i) not in locked and layout.composite is not None
            )
        result = parse_mrz("\n".join(lines), today=today, uncertain=uncertain)
        score = check_failures(result)
        if score < best_score:
            best, best_score = result, score
        if score == 0:
            break
    if (best is None or best_score > 0) and settings.use_passporteye_fallback:
        raw = _passporteye_lines(image)
        trace.raw_attempts.append(raw)
        lines = assemble_mrz(raw, today)
        if lines is not None:
            result = parse_mrz("\n".join(lines), today=today)
            if check_failures(result) < best_score:
                best = result
    if best is None:
        return MrzResult(
            errors=[
                FieldError(
                    field="image",
                    message="no MRZ found: hold the data page flat, MRZ fully in view, no glare",
                )
            ]
        )
    return best


def _bottom_band(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape[:2]
    band = gray[int(h * 0.55) :, :]
    factor = 1600.0 / w
    band = cv2.resize(band, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return cv2.threshold(band, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def _band_around(gray: np.ndarray, boxes: list[tuple[int, int, int, int]], char_height: int) -> np.ndarray:
    """The found lines plus one line pitch above and below: catches a TD1 line the locator missed."""
    x0 = min(b[0] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    line_h = max(b[3] for b in boxes)
    pitch = (boxes[-1][1] - boxes[0][1]) / max(1, len(boxes) - 1) if len(boxes) > 1 else 2 * line_h
    y0 = int(max(0, boxes[0][1] - 1.2 * pitch))
    y1 = int(min(gray.shape[0], boxes[-1][1] + line_h + 1.2 * pitch))
    pad = line_h
    band = gray[y0:y1, max(0, x0 - pad) : x1 + pad]
    factor = char_height / float(max(line_h, 1))
    band = cv2.resize(band, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
    return cv2.threshold(band, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def _passporteye_lines(image: np.ndarray) -> list[str]:
    import tempfile

    from passporteye import read_mrz  # imported lazily: ~3.5 s

    with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
        cv2.imwrite(tmp.name, image)
        mrz = read_mrz(tmp.name, extra_cmdline_params=f"-c tessedit_char_whitelist={WHITELIST}")
    if mrz is None:
        return []
    return _text_lines(str(mrz.aux.get("text", "")))
