"""Image -> MRZ text: locate the MRZ lines, clean them up, OCR with tesseract, repair with check digits.

Pipeline (each step is there because plain passporteye fell short on real and synthetic pages):
1. Locate: black-hat + horizontal closing at a fixed working width finds text lines; the MRZ is the
   lowest group of 2-3 long lines of equal width and left edge (ICAO 9303 part 3 §4: MRZ at the bottom).
2. Normalise every line to a fixed character height, binarise (Otsu), stack them into one page so
   tesseract runs once per attempt (a process start costs ~60 ms).
3. Tesseract LSTM with the MRZ alphabet as whitelist, dictionaries off, psm 6.
4. Structure repair: lines one or two characters too long/short are cut/padded where the check digits
   (part 3 §4.9) prove the result; then `parse_mrz` repairs confusions its check digits prove.
A second preprocessing attempt runs only when the first leaves a check digit failing.
"""

from __future__ import annotations

import html
import itertools
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import date

import cv2
import numpy as np
import structlog

from drivers.document.glyphs import normalise_glyph, refine
from drivers.document.models import FieldError, MrzResult
from drivers.document.mrz import check_failures, detect_layout, parse_mrz, position_classes

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


@dataclass
class OcrTrace:
    """What the pipeline did, for `egate diag reader` and the bench."""

    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    raw_attempts: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0


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


def run_tesseract(image: np.ndarray, settings: OcrSettings, psm: int = 6, hocr: bool = False) -> str:
    """OCR a binary page with the MRZ whitelist; plain text, or hOCR with character boxes."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        return ""
    cmd = [
        settings.tesseract_cmd, "stdin", "stdout", "--psm", str(psm), "-l", "eng",
        "-c", f"tessedit_char_whitelist={WHITELIST}",
        "-c", "load_system_dawg=0", "-c", "load_freq_dawg=0",
    ]  # fmt: skip
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
    return proc.stdout.decode("utf-8", errors="replace")


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
            # Every alphanumeric position a glyph sample did not confirm may hold an OCR confusion.
            uncertain = frozenset(
                (li, i)
                for li, cls_line in enumerate(position_classes(layout.fmt))
                for i, cls in enumerate(cls_line)
                if cls == "X" and (li, i) not in locked
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
