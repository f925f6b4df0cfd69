"""Decide MRZ characters from the OCR's alternatives with ICAO 9303 field types and check digits.

Every MRZ position has a type (parts 4-7): alphabetic (codes, names), numeric (dates, check digits),
alphanumeric (document number, optional data), sex, and the OCR's candidates for a position are first cut
to that type: a name never holds a digit, a date never holds a letter. Where the OCR's first choices fail a
check digit (part 3 §4.9), the check digit *chooses* among the candidates the OCR itself offered at
uncertain positions: the cheapest set of at most two swaps that makes the field's check digit and the
composite check digit verify (formats without a composite, MRV-A and MRV-B, get no swaps). When no such set exists, or two equally cheap
ones disagree, the printed characters are kept as read and the check fails: a wrong check digit that is
really printed is reported, never "repaired".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from egate.drivers.document.models import MrzFormat
from egate.drivers.document.mrz import check_digit, layout_of, position_classes

Candidates = list[tuple[str, float]]  # (character, score 0..1), best first

_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALLOWED = {
    "N": _DIGITS | {"<"},
    "A": _LETTERS | {"<"},
    "X": _DIGITS | _LETTERS | {"<"},
    "S": frozenset("MFX<"),
    "F": frozenset("<"),
}


def allowed_characters(cls: str) -> frozenset[str]:
    """The characters a position of ICAO 9303 type `cls` (A, N, X, S, F) may hold."""
    return _ALLOWED[cls]


# What a character of the wrong type most likely is, in OCR-B (shapes, not check-digit values).
_AS_DIGIT = {"O": "0", "Q": "0", "D": "0", "U": "0", "I": "1", "L": "1", "T": "7", "Z": "2", "S": "5", "B": "8",
             "G": "6", "A": "4", "E": "8", "J": "1"}  # fmt: skip
_AS_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "8": "B", "6": "G", "4": "A", "7": "T"}
_AS_FILLER = {"K", "X", "L", "E", "R", "C"}

# A position is uncertain when its best candidate is not clearly ahead of the next one.
_SURE_SCORE = 0.96
_ALT_MIN = 0.02
_MAX_SWAPS = 2
_MAX_UNCERTAIN = 10
_MAX_ALT_COST = 0.6


@dataclass
class Decoded:
    lines: list[str]
    swaps: list[tuple[int, int, str, str]]  # (line, index, as first read, chosen)
    cands: list[list[Candidates]]  # every position's candidates cut to its type, best first


def constrain(cands: Candidates, cls: str) -> Candidates:
    """The candidates a position of type `cls` can hold, best first; mapped look-alikes for wrong types."""
    allowed = _ALLOWED[cls]
    out: dict[str, float] = {}
    for ch, score in cands:
        if ch in allowed:
            out[ch] = max(out.get(ch, 0.0), score)
            continue
        mapped = None
        if cls == "N":
            mapped = _AS_DIGIT.get(ch)
        elif cls == "A":
            mapped = _AS_LETTER.get(ch)
        elif cls == "F" and ch in _AS_FILLER:
            mapped = "<"
        if mapped is not None:
            out[mapped] = max(out.get(mapped, 0.0), 0.9 * score)
    if not out:
        return [("<", 0.0)] if cls in ("F",) else list(cands[:1])
    return sorted(out.items(), key=lambda kv: -kv[1])


def _check_ok(data: str, digit: str) -> bool:
    if digit == "<":
        return set(data) <= {"<"}
    return digit.isdigit() and check_digit(data) == digit


Pos = tuple[int, int]


class _Decoder:
    def __init__(self, fmt: MrzFormat, cands: list[list[Candidates]]) -> None:
        self.fmt = fmt
        self.layout = layout_of(fmt)
        classes = position_classes(fmt)
        self.cands = [[constrain(c, classes[li][i]) for i, c in enumerate(line)] for li, line in enumerate(cands)]
        self.chosen: dict[Pos, str] = {}
        self.cost: dict[Pos, float] = {}

    def char(self, p: Pos) -> str:
        return self.chosen.get(p) or self.cands[p[0]][p[1]][0][0]

    def text(self, positions: list[Pos], override: dict[Pos, str] | None = None) -> str:
        override = override or {}
        return "".join(override.get(p) or self.char(p) for p in positions)

    def alternatives(self, p: Pos) -> list[tuple[str, float]]:
        """(character, cost) of the other candidates at an uncertain position."""
        cs = self.cands[p[0]][p[1]]
        top = cs[0][1]
        if top >= _SURE_SCORE and (len(cs) < 2 or cs[1][1] < _ALT_MIN):
            return []
        # Only alternatives the OCR found nearly as likely: a far-behind one is a shape the cell does not have.
        return [
            (ch, max(0.0, top - sc) + 0.02 * rank)
            for rank, (ch, sc) in enumerate(cs[1:4], 1)
            if top - sc <= _MAX_ALT_COST
        ]

    def solutions(self, positions: list[Pos], ok: Callable[[dict[Pos, str]], bool]) -> list[tuple[float, dict[Pos, str]]]:  # fmt: skip
        """Swap sets (cost, {pos: char}) that make ok(override) true, cheapest first.

        Without a composite check digit to confirm (MRV-A, MRV-B), no swap at all: a 7-3-1 digit has ten
        values, so even one free swap among a few uncertain cells "verifies" a wrong printed digit (measured:
        a visa with a wrong expiry digit came out valid). There a failing check is reported as read.
        """
        if ok({}):
            return [(0.0, {})]
        max_swaps = _MAX_SWAPS if self.layout.composite is not None else 0
        uncertain = [(p, alts) for p in positions if (alts := self.alternatives(p))]
        uncertain.sort(key=lambda pa: min(c for _, c in pa[1]))
        uncertain = uncertain[:_MAX_UNCERTAIN]
        found: list[tuple[float, dict[Pos, str]]] = []
        for n in range(1, max_swaps + 1):
            for combo in itertools.combinations(uncertain, n):
                for picks in itertools.product(*(alts for _, alts in combo)):
                    override = {p: ch for (p, _), (ch, _) in zip(combo, picks, strict=True)}
                    if ok(override):
                        found.append((sum(c for _, c in picks), override))
        found.sort(key=lambda s: s[0])
        return found

    def run(self) -> Decoded:
        lay = self.layout
        fields = lay.checked_fields()
        per_field: list[list[tuple[float, dict[Pos, str]]]] = []
        for data, check in fields:
            per_field.append(self.solutions([*data, check], self._field_ok(data, check))[:4])
        composite = lay.composite_positions()
        best: dict[Pos, str] | None = None
        if composite is not None:
            data, check = composite
            best = self._joint(per_field, data, check)
        if best is None:
            # No composite, or no combination satisfies it: each field alone, and only when unambiguous.
            best = {}
            for sols in per_field:
                if sols and (len(sols) == 1 or sols[1][0] - sols[0][0] > 0.05):
                    best.update(sols[0][1])
        swaps = []
        for p, ch in best.items():
            before = self.char(p)
            if ch != before:
                swaps.append((p[0], p[1], before, ch))
            self.chosen[p] = ch
        swaps += self._trailing_fillers()
        lines = ["".join(self.char((li, i)) for i in range(len(line))) for li, line in enumerate(self.cands)]
        return Decoded(lines=lines, swaps=swaps, cands=self.cands)

    def _trailing_fillers(self) -> list[tuple[int, int, str, str]]:
        """Unchecked optional data is left-justified and padded with fillers (part 3 §4.2): after three
        fillers, an uncertain cell that may be a filler is one (a '<' run read as K is tesseract's habit)."""
        lay = self.layout
        if lay.optional_check is not None or lay.composite is not None:
            return []
        span = lay.optional
        text = "".join(self.char((span.line, i)) for i in range(span.start, span.end))
        cut = text.find("<<<")
        out = []
        for k in range(max(cut, 0) + 3 if cut >= 0 else len(text), len(text)):
            p = (span.line, span.start + k)
            cs = self.cands[p[0]][p[1]]
            if self.char(p) != "<" and any(ch == "<" for ch, _ in cs) and not self._sure(p):
                out.append((p[0], p[1], self.char(p), "<"))
                self.chosen[p] = "<"
        return out

    def _sure(self, p: Pos) -> bool:
        cs = self.cands[p[0]][p[1]]
        return cs[0][1] >= _SURE_SCORE and (len(cs) < 2 or cs[1][1] < _ALT_MIN)

    def _field_ok(self, data: list[Pos], check: Pos) -> Callable[[dict[Pos, str]], bool]:
        return lambda o: _check_ok(self.text(data, o), self.text([check], o))

    def _joint(self, per_field: list[list[tuple[float, dict[Pos, str]]]], data: list[Pos], check: Pos) -> dict[Pos, str] | None:  # fmt: skip
        """Field choices that satisfy the composite check digit: fewest failing fields, then cheapest."""
        options = [[(0.0, {}), *[s for s in sols if s[1]]] for sols in per_field]
        fields = self.layout.checked_fields()
        scored: list[tuple[int, float, dict[Pos, str]]] = []
        for combo in itertools.product(*options):
            override: dict[Pos, str] = {}
            for _, o in combo:
                override.update(o)
            if not _check_ok(self.text(data, override), self.text([check], override)):
                continue
            fails = sum(not _check_ok(self.text(d, override), self.text([c], override)) for d, c in fields)
            scored.append((fails, sum(c for c, _ in combo), override))
        if not scored:
            # The composite also covers fields no other digit checks (TD1/TD2 optional data): let it choose
            # there, on top of each field's own unambiguous choice.
            covered = {p for d, c in fields for p in [*d, c]}
            rest = [p for p in [*data, check] if p not in covered]
            fixed: dict[Pos, str] = {}
            for sols in per_field:
                if sols and (len(sols) == 1 or sols[1][0] - sols[0][0] > 0.05):
                    fixed.update(sols[0][1])
            more = self.solutions(
                rest, lambda o: _check_ok(self.text(data, {**fixed, **o}), self.text([check], {**fixed, **o}))
            )
            if more and (len(more) == 1 or more[1][0] - more[0][0] > 0.05):
                return {**fixed, **more[0][1]}
            return None
        scored.sort(key=lambda s: (s[0], s[1]))
        first = scored[0]
        if (
            len(scored) > 1
            and scored[1][:1] == first[:1]
            and scored[1][1] - first[1] <= 0.05
            and scored[1][2] != first[2]
        ):
            return {}  # two readings equally likely: keep what was read
        return first[2]


def decode(fmt: MrzFormat, cands: list[list[Candidates]]) -> Decoded:
    """Lines chosen from per-position OCR candidates (`cands[line][index]`, best first) for format `fmt`."""
    return _Decoder(fmt, cands).run()
