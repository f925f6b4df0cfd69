"""Settle OCR's letter/digit confusions with the document's own glyphs.

An MRZ is printed in one fixed-pitch font (ICAO 9303 part 3 §4.3), so every document carries samples of
its own characters: the date fields (digits, proved by their check digits) and the names (letters only).
Every glyph of an alphanumeric or numeric field is compared with those samples; a near-identical sample of
another character that is clearly closer than the read one wins. This matters most where check digits are
blind: characters whose values differ by 10 (8/S/I, 1/B/L, 3/D/N, ...; part 3 §4.9) give the same digit.
Check digits then verify the result in `parse_mrz` as usual.
"""

from __future__ import annotations

import cv2
import numpy as np

from egate.drivers.document.models import MrzFormat
from egate.drivers.document.mrz import position_classes, trusted_spans

_SIZE = 24
_MARGIN = 0.05
_MATCH = 0.93


def normalise_glyph(binary_line: np.ndarray, x0: int, x1: int) -> np.ndarray | None:
    """Glyph scaled to a fixed height, width kept (0 is narrower than O), centred; float, zero mean."""
    crop = 255 - binary_line[:, max(0, x0) : max(x0 + 1, x1)]
    rows = np.where(crop.max(axis=1) > 0)[0]
    if rows.size == 0:
        return None
    crop = crop[rows[0] : rows[-1] + 1]
    h, w = crop.shape
    scale = _SIZE / float(h)
    new_w = max(1, min(_SIZE, round(w * scale)))
    small = cv2.resize(crop, (new_w, _SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    canvas = np.zeros((_SIZE, _SIZE), np.float32)
    off = (_SIZE - new_w) // 2
    canvas[:, off : off + new_w] = small
    canvas -= canvas.mean()
    norm = float(np.linalg.norm(canvas))
    return canvas / norm if norm > 0 else None


def refine(
    fmt: MrzFormat, lines: list[str], glyphs: list[list[np.ndarray | None] | None]
) -> tuple[list[str], frozenset[tuple[int, int]]]:
    """Lines re-decided by this document's glyph samples, and the positions a sample confirmed (locked)."""
    if len(glyphs) != len(lines) or any(
        g is not None and len(g) != len(ln) for g, ln in zip(glyphs, lines, strict=True)
    ):
        return lines, frozenset()
    digits, letters = trusted_spans(fmt, lines)
    templates: dict[str, list[tuple[tuple[int, int], np.ndarray]]] = {}
    for li, i in digits + letters:
        g = glyphs[li]
        sample = g[i] if g is not None else None
        if sample is not None:
            templates.setdefault(lines[li][i], []).append(((li, i), sample))
    # Fillers as read are reliable samples (tesseract seldom reads a letter as '<'); the reverse, '<' read
    # as K/R/E/X in long filler runs, is common on real scans.
    for li, ln in enumerate(lines):
        g = glyphs[li]
        if g is not None:
            templates.setdefault("<", []).extend(
                ((li, i), glyph)
                for i, (glyph, c) in enumerate(zip(g, ln, strict=True))
                if c == "<" and glyph is not None
            )

    def score(glyph: np.ndarray, k: str, pos: tuple[int, int]) -> float | None:
        # A glyph is never compared with itself: only other samples of k on this page count.
        values = [float(np.sum(glyph * t)) for p, t in templates.get(k, []) if p != pos]
        return max(values) if values else None

    classes = position_classes(fmt)
    out = [list(ln) for ln in lines]
    locked: set[tuple[int, int]] = set()
    for li, ln in enumerate(lines):
        g = glyphs[li]
        if g is None:
            continue
        for i, c in enumerate(ln):
            cls = classes[li][i]
            glyph = g[i]
            if glyph is None or c == "<":
                continue
            if cls in ("A", "F", "S"):
                self_score = score(glyph, c, (li, i))
                filler = score(glyph, "<", (li, i)) or 0.0
                if filler >= _MATCH and (self_score is None or filler - self_score >= _MARGIN):
                    out[li][i] = "<"
                continue
            scored = sorted(
                (
                    (sc, k)
                    for k in templates
                    if k != "<" and (cls == "X" or k.isdigit())
                    for sc in [score(glyph, k, (li, i))]
                    if sc is not None
                ),
                reverse=True,
            )
            if not scored:
                continue
            best_score, best = scored[0]
            current = next((sc for sc, k in scored if k == c), None)
            # Same font, same page: a true match scores > 0.95, the closest wrong pair (0 vs O) ~0.85.
            # Switch only on a near-identical sample that is clearly closer than the read character's own.
            if best_score >= _MATCH and (current is None or best == c or best_score - current >= _MARGIN):
                out[li][i] = best
                locked.add((li, i))
    return ["".join(ln) for ln in out], frozenset(locked)
