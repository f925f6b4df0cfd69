"""Find MRZ lines anywhere in an image from the zone's own texture, whatever the page around it looks like.

An MRZ is 2 or 3 rows of equal length, parallel, evenly spaced, of one fixed-pitch font (ICAO 9303 part 3
§4.3), dark on a light clear zone. Dark text is picked out with a black-hat filter and each text row is
fused into one blob by a horizontal closing; a blob's rotated rectangle gives the row's centre, length,
height and angle, so tilt (and the slight convergence of perspective) costs nothing. Groups of 2-3 rows
with the same angle, length and height, side by side at an even pitch, are MRZ candidates; they are ranked
by how much their rows look like MRZ rows: the number of separate glyphs over the row's length matches
30, 36 or 44 characters, at a regular pitch. The page's design (where the photo is, what is printed above)
plays no part, and the same groups come out of an upside-down page (the reader tries both directions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_WORK_WIDTH = 1200
_WIDTHS = (30, 36, 44)


@dataclass(frozen=True)
class Row:
    """One text row in full-resolution pixels: centre, length along the row, height, angle (degrees)."""

    cx: float
    cy: float
    length: float
    height: float
    angle: float

    def unit(self) -> tuple[float, float]:
        a = math.radians(self.angle)
        return math.cos(a), math.sin(a)

    def normal_offset(self, other: Row) -> float:
        ux, uy = self.unit()
        return (other.cx - self.cx) * -uy + (other.cy - self.cy) * ux

    def along_offset(self, other: Row) -> float:
        ux, uy = self.unit()
        return (other.cx - self.cx) * ux + (other.cy - self.cy) * uy


def _blackhat(small: np.ndarray, k: int) -> np.ndarray:
    return cv2.morphologyEx(small, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))


def _levels(bh: np.ndarray) -> list[float]:
    """Ink thresholds: Otsu's, then higher ones that drop light security print and keep the dark MRZ ink."""
    otsu = float(cv2.threshold(bh, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0])
    top = float(np.percentile(bh, 99.7))
    return [otsu] + [otsu + f * (top - otsu) for f in (0.35, 0.6)] if top > otsu + 6 else [otsu]


def _rows(bh: np.ndarray, kernel_w: int, level: float) -> list[Row]:
    small = bh
    binary = (bh > level).astype(np.uint8) * 255
    closed = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_w, 1)))
    closed = cv2.morphologyEx(closed, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_w // 2, 3)))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rows = []
    min_len = 0.06 * small.shape[1]
    for c in contours:
        if len(c) < 5:
            continue
        (cx, cy), (w, h), angle = cv2.minAreaRect(c)
        if w < h:
            w, h, angle = h, w, angle + 90.0
        angle = (angle + 90.0) % 180.0 - 90.0  # (-90, 90]: direction of the row, reading way unknown
        if w < min_len or h < 4 or w / max(h, 1.0) < 4 or abs(angle) > 30:
            continue
        # A row fused with something else (a photo edge, a curve) fills its rectangle badly: drop it.
        if cv2.contourArea(c) < 0.6 * w * h:
            continue
        rows.append(Row(float(cx), float(cy), float(w), float(h), float(angle)))
    min_len = 0.15 * small.shape[1]
    return [r for r in _merge_pieces(rows) if r.length >= min_len]


# Glare can wash out five or six glyphs of a row: pieces of one row this far apart (in row heights) are joined.
_MAX_GAP_HEIGHTS = 8.0


def _merge_pieces(rows: list[Row]) -> list[Row]:
    """Join collinear pieces of one row (glare or a fold can break a row in two)."""
    rows = sorted(rows, key=lambda r: -r.length)
    out: list[Row] = []
    for r in rows:
        for i, o in enumerate(out):
            if abs(o.angle - r.angle) > 3 or abs(o.normal_offset(r)) > 0.5 * max(o.height, r.height):
                continue
            if max(o.height, r.height) > 1.6 * min(o.height, r.height):
                continue
            along = o.along_offset(r)
            lo, hi = min(-o.length / 2, along - r.length / 2), max(o.length / 2, along + r.length / 2)
            if (hi - lo) - o.length - r.length > _MAX_GAP_HEIGHTS * max(o.height, r.height):
                continue  # too far apart along the row
            ux, uy = o.unit()
            mid = (lo + hi) / 2
            out[i] = Row(o.cx + ux * mid, o.cy + uy * mid, hi - lo, max(o.height, r.height), o.angle)
            break
        else:
            out.append(r)
    return out


def _compatible(a: Row, b: Row) -> bool:
    if abs(a.angle - b.angle) > 4.0:
        return False
    if abs(a.length - b.length) > 0.2 * max(a.length, b.length):
        return False
    if max(a.height, b.height) > 1.7 * min(a.height, b.height):
        return False
    gap = abs(a.normal_offset(b))
    h = max(a.height, b.height)
    return 1.2 * h < gap < 3.5 * h and abs(a.along_offset(b)) < 0.1 * max(a.length, b.length)


def _groups(rows: list[Row]) -> list[list[Row]]:
    """Every run of 2-3 compatible rows at an even pitch, ordered across the rows."""
    out: list[list[Row]] = []
    for i, a in enumerate(rows):
        partners = sorted((r for r in rows if r is not a and _compatible(a, r)), key=a.normal_offset)
        below = [r for r in partners if a.normal_offset(r) > 0]
        for b in below[:1]:
            out.append([a, b])
            pitch = a.normal_offset(b)
            for c in (r for r in rows if r is not b and r is not a):
                if _compatible(b, c) and abs(a.normal_offset(c) - 2 * pitch) < 0.25 * pitch:
                    out.append([a, b, c])
                    break
        del i
    return out


def completions(group: list[Row]) -> list[list[Row]]:
    """A two-row group as the three rows of an ID card whose third row the locator lost (glare over it, or too
    faint at low resolution): the lost row between the two when they are two pitches apart, else above the
    first or below the second, at the group's pitch and as long as its longest row."""
    if len(group) != 2:
        return []
    a, b = group
    pitch = a.normal_offset(b)
    height = (a.height + b.height) / 2
    length = max(a.length, b.length)
    ux, uy = a.unit()

    def beside(r: Row, offset: float) -> Row:
        return Row(r.cx - uy * offset, r.cy + ux * offset, length, height, r.angle)

    if pitch > _TWO_PITCHES * height:
        return [[a, beside(a, pitch / 2), b]]
    return [[beside(a, -pitch), a, b], [a, b, beside(b, pitch)]]


# Rows of one MRZ are 1.5-1.7 glyph heights apart; this far apart, a row between them was lost.
_TWO_PITCHES = 2.4


def glyph_count_score(strip: np.ndarray) -> float:
    """How well a binarised row (text white on black) fits 30/36/44 glyphs at a fixed pitch: 0 bad .. 1 good."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(strip)
    h = strip.shape[0]
    xs = sorted(int(s[0] + s[2] / 2) for s in stats[1:n] if s[3] >= 0.25 * h and s[4] >= 4)
    if len(xs) < 10:
        return 0.0
    count = len(xs)
    best = min(abs(count - w) / w for w in _WIDTHS)
    gaps = np.diff(xs)
    regular = float(np.median(gaps)) / (float(np.mean(gaps)) + 1e-6) if gaps.size else 0.0
    return max(0.0, 1.0 - 3 * best) * min(1.0, regular)


def rectify_row(gray: np.ndarray, row: Row, char_height: int, flip: bool = False, extra: float = 0.0) -> np.ndarray:
    """The row cut out along its own axis, scaled to `char_height`-pixel glyphs (optionally turned 180°).

    `extra`: image pixels added at both ends, for a row found shorter than the others of its group.
    """
    # A little beyond the ends: blur and glare shorten a row's blob.
    pad_y, pad_x = 0.45 * row.height, 1.2 * row.height + max(0.0, extra)
    scale = char_height / max(row.height, 1.0)
    out_w = max(8, round((row.length + 2 * pad_x) * scale))
    out_h = max(8, round((row.height + 2 * pad_y) * scale))
    angle = row.angle + (180.0 if flip else 0.0)
    m = cv2.getRotationMatrix2D((row.cx, row.cy), angle, scale)
    m[0, 2] += out_w / 2 - row.cx
    m[1, 2] += out_h / 2 - row.cy
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return cv2.warpAffine(gray, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def turn(image: np.ndarray, degrees: float) -> np.ndarray:
    """The image turned by `degrees` about its centre on a canvas large enough to keep every corner."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _smooth(image: np.ndarray, sigma: float, by: int = 4) -> np.ndarray:
    """A wide Gaussian blur (float32) taken at 1/`by` of the size and scaled back.

    The local paper and ink levels below are blurred over a character or more (sigma 15-35 px): at full size
    that is most of a row read's cost, at a quarter it differs by under a grey level and costs a twentieth.
    """
    h, w = image.shape[:2]
    if sigma < 2 * by or min(h, w) < 4 * by:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    small = cv2.resize(image, (w // by, h // by), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / by), (w, h), interpolation=cv2.INTER_LINEAR)


def binarise(line: np.ndarray) -> np.ndarray:
    """Dark glyphs -> black on white, after flattening glare and uneven light across the row.

    The row is divided by its own paper level (a closing) and thresholded as a whole (Otsu). Glare adds
    light over a few characters, though, and there the ink is washed out to a grey that one threshold for the
    row loses. Where the local print contrast (paper against the darkest print within about a character
    pitch) falls well below the row's usual contrast, a pixel is ink when it lies nearer the local ink than
    the local paper; where the contrast is only a small share of the usual there is no glyph (background
    pattern) and it stays white.
    """
    h = line.shape[0]
    k = max(3, (h // 2) | 1)
    paper = cv2.morphologyEx(line, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    flat = cv2.divide(line, paper, scale=255)
    whole = cv2.threshold(flat, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
    paper_f = _smooth(paper.astype(np.float32), k / 2)
    kw = max(3, int(h * 1.2) | 1)
    ink = cv2.erode(line, cv2.getStructuringElement(cv2.MORPH_RECT, (kw, h | 1)))
    ink_f = _smooth(ink.astype(np.float32), kw / 3)
    contrast = paper_f - ink_f
    usual = float(np.percentile(contrast, 90))
    # Sensor noise alone gives a local max-min range of several sigma: that is no print either.
    noise = 1.4826 * float(np.median(np.abs(line.astype(np.int16) - cv2.medianBlur(line, 5).astype(np.int16))))
    floor = max(_MIN_CONTRAST_SHARE * usual, _NOISE_RANGE * noise)
    washed = (contrast < _WASHED_SHARE * usual) & (contrast > floor)
    if not washed.any():
        return whole
    level = (line.astype(np.float32) - ink_f) / np.maximum(contrast, 1.0)
    # Strokes are several pixels wide at the working glyph height; speckle of background texture is not.
    local = cv2.medianBlur(np.where(level < _INK_LEVEL, 0, 255).astype(np.uint8), 5)
    return np.where(washed, local, whole).astype(np.uint8)


_INK_LEVEL = 0.55  # share of the way from local ink to local paper below which a pixel is ink
_WASHED_SHARE = 0.85  # local contrast below this share of the row's usual: read against the local levels
_MIN_CONTRAST_SHARE = 0.25  # below this share: no print here
_NOISE_RANGE = 8.0  # local contrast within this many noise sigmas is noise, not print


def find_mrz_rows(gray: np.ndarray, max_groups: int = 3) -> list[list[Row]]:
    """Candidate MRZ row groups (full-resolution), best first; each group ordered across its rows."""
    h, w = gray.shape[:2]
    if h < 20 or w < 20:
        return []
    scale = min(2.0, _WORK_WIDTH / float(max(w, h)))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    seen: list[tuple[float, list[Row]]] = []
    for kernel_w, blackhat_k in ((17, 21), (27, 31), (11, 15)):
        bh = _blackhat(small, blackhat_k)
        for level in _levels(bh):
            for g in _groups(_rows(bh, kernel_w, level)):
                full = [Row(r.cx / scale, r.cy / scale, r.length / scale, r.height / scale, r.angle) for r in g]
                if any(_same_group(full, s[1]) for s in seen):
                    continue
                seen.append((_texture_score(gray, full), full))
            if any(s[0] > 0.85 for s in seen):
                break
        if any(s[0] > 0.85 for s in seen):
            break
    seen.sort(key=lambda s: -s[0])
    return [g for score, g in seen[:max_groups] if score > 0.05]


def _same_group(a: list[Row], b: list[Row]) -> bool:
    return len(a) == len(b) and all(abs(x.cx - y.cx) + abs(x.cy - y.cy) < x.height for x, y in zip(a, b, strict=True))


def _texture_score(gray: np.ndarray, group: list[Row]) -> float:
    scores = [glyph_count_score(255 - binarise(rectify_row(gray, r, 24))) for r in group]
    # Three rows of one format beat two of them (a TD1 is not two thirds of a TD2).
    return float(np.mean(scores)) * (1.0 if len(group) == 3 else 0.9)
