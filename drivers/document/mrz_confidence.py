"""Is an MRZ read sure enough to act on? Check digits prove only the fields they cover.

ICAO 9303 check digits (part 3 §4.9) cover the document number, the dates, optional data in some formats,
and a composite over most of those; the names, the issuing state, the nationality and the sex carry none.
A misread letter there passes every check: a valid-looking read of another identity, the worst outcome at a
gate. A read is therefore *uncertain* when a character outside the check digits' reach was not read
clearly (its OCR opinions were weak or close to each other), or when a checked field holds so many doubtful
characters that the check digits agreeing may be chance (a 7-3-1 digit has only ten values). An uncertain
read is reported invalid: the traveller is referred or asked to present the document again, which is safe;
a wrong identity is not.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from egate.drivers.document.models import MrzFormat
from egate.drivers.document.mrz import check_digit, layout_of, position_classes
from egate.drivers.document.mrz_decode import Candidates

Pos = tuple[int, int]

# The `FieldError.field` of a read whose check digits pass but whose characters are not all sure.
UNCERTAIN_FIELD = "ocr_confidence"

# A character is clear when its OCR score is at least this and this far ahead of the next candidate.
MIN_SCORE = 0.45
MIN_MARGIN = 0.25
# Two independent opinions (the OCR-B match and tesseract) naming the same character make it clear even
# when the match is weak (glare, blur), unless the cell hardly resembles any character at all.
AGREED_MIN_SCORE = 0.3
DISPUTED_MARGIN = 0.3
# Alternatives of a doubtful checked character that count as readings the print may also have.
_ALT_MAX_BEHIND = 0.6
_MAX_CHANGES = 2
_MAX_DOUBTFUL = 12
# OCR-B pairs that differ by a stroke or a width (0/O, 1/I, 8/B, ...): in an alphanumeric field even a
# clear lead is weak evidence, so such a cell's look-alike is always tried against the check digits.
_LOOKALIKES = {frozenset(p) for p in ("0O", "0D", "0Q", "1I", "1T", "2Z", "5S", "6G", "8B")}
_LOOKALIKE_MARGIN = 0.5
# OCR-B look-alikes whose ICAO values differ by 10 (H 17, R 27; 6 and G 16; ...). Every 7-3-1 weight is prime
# to 10, so such a swap leaves every check digit as it was: the digits prove nothing between them.
_CHECK_BLIND = {frozenset(p) for p in ("HR", "FP", "6G", "GQ", "8S", "0U", "1L", "JT", "9J", "MW", "DN", "NX")}


def check_blind(ch: str) -> bool:
    """Whether a check digit cannot tell `ch` from one of its OCR-B look-alikes."""
    return any(ch in pair for pair in _CHECK_BLIND)


@dataclass(frozen=True)
class Confidence:
    weak_unchecked: list[Pos]  # doubtful characters no check digit covers (names, codes, sex)
    weak_checked: list[Pos]  # doubtful characters inside fields a check digit covers
    ambiguous: bool  # another reading of the doubtful checked characters passes every check digit too

    @property
    def uncertain(self) -> bool:
        return bool(self.weak_unchecked) or self.ambiguous


def cell_margin(cands: Candidates, chosen: str) -> tuple[float, float]:
    """(score of the chosen character, its lead over the best other candidate)."""
    score = next((sc for ch, sc in cands if ch == chosen), 0.0)
    other = max((sc for ch, sc in cands if ch != chosen), default=0.0)
    return score, score - other


def is_weak(cands: Candidates, chosen: str, agreed: bool = False, min_score: float = MIN_SCORE) -> bool:
    score, lead = cell_margin(cands, chosen)
    if agreed and score >= AGREED_MIN_SCORE:
        return False
    return score < min_score or lead < MIN_MARGIN


def checked_positions(fmt: MrzFormat) -> set[Pos]:
    """Every position a check digit covers (its own field's or the composite's), check digits included."""
    lay = layout_of(fmt)
    out: set[Pos] = set()
    for data, check in lay.checked_fields():
        out.update(data)
        out.add(check)
    composite = lay.composite_positions()
    if composite is not None:
        out.update(composite[0])
        out.add(composite[1])
    return out


def _all_checks_pass(fmt: MrzFormat, lines: list[str]) -> bool:
    lay = layout_of(fmt)
    fields = list(lay.checked_fields())
    composite = lay.composite_positions()
    if composite is not None:
        fields.append(composite)
    for data, (cl, ci) in fields:
        text = "".join(lines[li][i] for li, i in data)
        digit = lines[cl][ci]
        if digit == "<":
            if set(text) - {"<"}:
                return False
        elif not digit.isdigit() or check_digit(text) != digit:
            return False
    return True


def _lookalikes(cands: Candidates, chosen: str) -> list[str]:
    """Candidates of a cell that are the chosen character's OCR-B look-alike, when the lead over them is modest."""
    score = next((sc for ch, sc in cands if ch == chosen), 0.0)
    return [ch for ch, sc in cands if frozenset((ch, chosen)) in _LOOKALIKES and score - sc < _LOOKALIKE_MARGIN]


def _other_reading_passes(
    fmt: MrzFormat,
    cands: list[list[Candidates]],
    lines: list[str],
    weak: list[Pos],
    lookalike: list[Pos],
    dissent: dict[Pos, list[str]],
) -> bool:
    """Whether changing up to two doubtful checked characters to their own alternatives also passes."""
    options: list[tuple[Pos, list[str]]] = []
    for li, i in weak:
        cs = cands[li][i]
        top = max((sc for _, sc in cs), default=0.0)
        alts = [ch for ch, sc in cs if ch != lines[li][i] and (top - sc <= _ALT_MAX_BEHIND or sc == 0.0)]
        if alts:
            options.append(((li, i), alts))
    for li, i in lookalike:
        if (li, i) not in weak and (alts := _lookalikes(cands[li][i], lines[li][i]) + dissent.get((li, i), [])):
            options.append(((li, i), list(dict.fromkeys(alts))))
    options = options[:_MAX_DOUBTFUL]
    for n in range(1, _MAX_CHANGES + 1):
        for combo in itertools.combinations(options, n):
            for picks in itertools.product(*(alts for _, alts in combo)):
                trial = [list(ln) for ln in lines]
                for ((li, i), _), ch in zip(combo, picks, strict=True):
                    trial[li][i] = ch
                if _all_checks_pass(fmt, ["".join(t) for t in trial]):
                    return True
    return False


def assess(
    fmt: MrzFormat,
    cands: list[list[Candidates]],
    lines: list[str],
    agreed: set[Pos] | frozenset[Pos] = frozenset(),
    disputed: dict[Pos, str] | None = None,
    matched: bool = True,
    unsupported: set[Pos] | frozenset[Pos] = frozenset(),
) -> Confidence:
    """Doubtful characters of a decoded read.

    `agreed`: positions both OCR opinions read as chosen; `disputed`: positions where the two opinions read
    different characters, with the one not chosen. A disputed character is doubtful, and in a checked field
    the other opinion's character is tried against the check digits like any alternative. `matched`: the
    scores are OCR-B match qualities; tesseract's own confidences (a print in another OCR-B cut, read by
    tesseract alone) sit lower on their scale, and there only the lead over the alternatives counts.
    `unsupported`: positions where the trained classifier's character is read by neither other opinion (the
    OCR-B match, tesseract). A network is sure of things it has never seen (a line of the background across a
    glyph, another OCR-B cut); where no check digit covers the position, that alone is not enough.
    """
    min_score = MIN_SCORE if matched else 0.0
    disputed = disputed or {}
    checked = checked_positions(fmt)
    classes = position_classes(fmt)
    names = layout_of(fmt).names
    weak_unchecked: list[Pos] = []
    weak_checked: list[Pos] = []
    lookalike: list[Pos] = []
    for li, line in enumerate(lines):
        for i, ch in enumerate(line):
            p = (li, i)
            if li >= len(cands) or i >= len(cands[li]):
                continue
            if p in checked and classes[li][i] == "X" and _lookalikes(cands[li][i], ch):
                lookalike.append(p)
            # A checked alphanumeric character with a check-blind look-alike is proved by no digit: it must be
            # read as clearly as a name letter.
            proved = p in checked and not (classes[li][i] == "X" and check_blind(ch))
            weak = (p in unsupported and not proved) or is_weak(cands[li][i], ch, p in agreed, min_score)
            if p in disputed:
                # Tesseract alone is often wrong on names; its dissent weighs only where the match is not clear.
                weak = weak or cell_margin(cands[li][i], ch)[1] < DISPUTED_MARGIN
                if p in checked:
                    lookalike.append(p)  # the dissenting character is tried against the check digits
            if not weak and li == names.line and names.start < i < names.end - 1 and ch != "<":
                # A one-letter name part between fillers is what a blurred filler read as K or X looks like.
                weak = line[i - 1] == line[i + 1] == "<" and any(c == "<" for c, _ in cands[li][i])
            if weak:
                (weak_checked if proved else weak_unchecked).append(p)
    dissent = {p: [ch] for p, ch in disputed.items()}
    ambiguous = bool(weak_checked or lookalike) and _other_reading_passes(
        fmt, cands, lines, weak_checked, list(dict.fromkeys(lookalike)), dissent
    )
    return Confidence(weak_unchecked, weak_checked, ambiguous)


def describe(fmt: MrzFormat, positions: list[Pos]) -> str:
    """The fields the doubtful characters sit in, for the error message (never the characters themselves)."""
    lay = layout_of(fmt)
    spans = {
        "names": lay.names, "document number": lay.number, "nationality": lay.nationality,
        "issuing state": lay.issuer, "document code": lay.code, "sex": lay.sex, "optional data": lay.optional,
    }  # fmt: skip
    names = []
    for li, i in positions:
        label = next((k for k, sp in spans.items() if sp.line == li and sp.start <= i < sp.end), "check digits")
        if label not in names:
            names.append(label)
    return ", ".join(names) or "rows"
