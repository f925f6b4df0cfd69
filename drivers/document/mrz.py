"""Parse and validate ICAO Doc 9303 machine readable zones: TD1, TD2, TD3, MRV-A and MRV-B.

`parse_mrz()` never raises: every problem becomes a `FieldError` naming the field. OCR confusions are
repaired only where a check digit proves the repaired value (ICAO 9303 part 3 §4.9): letters read in a
numeric field covered by a check digit, ambiguous characters in an alphanumeric field whose check digit
then verifies with one unique minimal set of changes, and `<` fillers read as K/X/L.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date

from egate.drivers.document.icao_codes import is_known_code
from egate.drivers.document.models import (
    CheckResults,
    Document,
    DocumentKind,
    FieldError,
    MrzFormat,
    MrzResult,
    Repair,
)

MRZ_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<")

# ICAO 9303 part 3 §4.9: weights 7, 3, 1 repeating; A-Z = 10..35; filler = 0.
_WEIGHTS = (7, 3, 1)

# Confusions OCR makes on OCR-B and similar fonts; each maps a read character to what it may really be.
_TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "U": "0", "I": "1", "L": "1", "T": "7", "Z": "2", "S": "5",
             "B": "8", "G": "6", "A": "4", "E": "8"}  # fmt: skip
_TO_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "8": "B", "6": "G", "4": "A", "7": "T"}
_ALNUM_SWAPS: dict[str, tuple[str, ...]] = {
    "0": ("O", "D", "Q"), "O": ("0",), "Q": ("0", "O"), "D": ("0",), "1": ("I",), "I": ("1",),
    "8": ("B",), "B": ("8",), "5": ("S",), "S": ("5",), "2": ("Z",), "Z": ("2",), "6": ("G",), "G": ("6",),
    "K": ("<",), "X": ("<",), "L": ("<",),
}  # fmt: skip
_MAX_AMBIGUOUS_POSITIONS = 12
_MAX_CHANGES = 2


def char_value(c: str) -> int:
    if c.isdigit():
        return ord(c) - 48
    if "A" <= c <= "Z":
        return ord(c) - 55
    return 0  # '<' and, defensively, anything else


def check_digit(data: str) -> str:
    """ICAO 9303 part 3 §4.9 check digit of `data`."""
    return str(sum(char_value(c) * _WEIGHTS[i % 3] for i, c in enumerate(data)) % 10)


def _check_ok(data: str, digit: str) -> bool:
    # An empty optional field may carry a filler instead of a check digit (9303 part 4 §4.2.2, note on
    # personal number): accept '<' only when the data is all fillers.
    if digit == "<":
        return set(data) <= {"<"}
    return digit.isdigit() and check_digit(data) == digit


@dataclass(frozen=True)
class _Span:
    line: int
    start: int
    end: int

    def get(self, lines: list[str]) -> str:
        return lines[self.line][self.start : self.end]

    def put(self, lines: list[str], value: str) -> None:
        s = lines[self.line]
        lines[self.line] = s[: self.start] + value + s[self.end :]


@dataclass(frozen=True)
class _Layout:
    fmt: MrzFormat
    line_len: int
    n_lines: int
    code: _Span
    issuer: _Span
    names: _Span
    number: _Span
    number_check: _Span
    nationality: _Span
    birth: _Span
    birth_check: _Span
    sex: _Span
    expiry: _Span
    expiry_check: _Span
    optional: _Span
    optional_check: _Span | None
    optional2: _Span | None
    composite: _Span | None
    composite_parts: tuple[_Span, ...]

    def checked_fields(self) -> list[tuple[list[tuple[int, int]], tuple[int, int]]]:
        """(data positions, check digit position) of every field its own check digit covers."""
        pairs = [(self.number, self.number_check), (self.birth, self.birth_check), (self.expiry, self.expiry_check)]
        if self.optional_check is not None:
            pairs.append((self.optional, self.optional_check))
        return [(_positions(d), (c.line, c.start)) for d, c in pairs]

    def composite_positions(self) -> tuple[list[tuple[int, int]], tuple[int, int]] | None:
        if self.composite is None:
            return None
        return [p for s in self.composite_parts for p in _positions(s)], (self.composite.line, self.composite.start)


def _positions(span: _Span) -> list[tuple[int, int]]:
    return [(span.line, i) for i in range(span.start, span.end)]


def _td3_like(fmt: MrzFormat, n: int, with_composite: bool) -> _Layout:
    # TD3 (part 4 §4.2.2) and MRV-A (part 7 §4.2.2) with n = 44; TD2 (part 6) and MRV-B (part 7) with n = 36.
    td3 = n == 44
    opt_end = (42 if td3 else 35) if with_composite else n
    return _Layout(
        fmt=fmt,
        line_len=n,
        n_lines=2,
        code=_Span(0, 0, 2),
        issuer=_Span(0, 2, 5),
        names=_Span(0, 5, n),
        number=_Span(1, 0, 9),
        number_check=_Span(1, 9, 10),
        nationality=_Span(1, 10, 13),
        birth=_Span(1, 13, 19),
        birth_check=_Span(1, 19, 20),
        sex=_Span(1, 20, 21),
        expiry=_Span(1, 21, 27),
        expiry_check=_Span(1, 27, 28),
        optional=_Span(1, 28, opt_end),
        optional_check=_Span(1, 42, 43) if (td3 and with_composite) else None,
        optional2=None,
        composite=_Span(1, n - 1, n) if with_composite else None,
        composite_parts=(_Span(1, 0, 10), _Span(1, 13, 20), _Span(1, 21, n - 1)) if with_composite else (),
    )


_TD1 = _Layout(
    # ICAO 9303 part 5 §4.2.2.
    fmt="TD1",
    line_len=30,
    n_lines=3,
    code=_Span(0, 0, 2),
    issuer=_Span(0, 2, 5),
    number=_Span(0, 5, 14),
    number_check=_Span(0, 14, 15),
    optional=_Span(0, 15, 30),
    birth=_Span(1, 0, 6),
    birth_check=_Span(1, 6, 7),
    sex=_Span(1, 7, 8),
    expiry=_Span(1, 8, 14),
    expiry_check=_Span(1, 14, 15),
    nationality=_Span(1, 15, 18),
    optional2=_Span(1, 18, 29),
    composite=_Span(1, 29, 30),
    composite_parts=(_Span(0, 5, 30), _Span(1, 0, 7), _Span(1, 8, 15), _Span(1, 18, 29)),
    names=_Span(2, 0, 30),
    optional_check=None,
)
_TD2 = _td3_like("TD2", 36, True)
_TD3 = _td3_like("TD3", 44, True)
_MRVA = _td3_like("MRV-A", 44, False)
_MRVB = _td3_like("MRV-B", 36, False)


def split_mrz_text(text: str) -> list[str]:
    """Lines of MRZ text: newline separated, or one run of 88/72/90 characters; spaces dropped."""
    lines = [ln.strip().replace(" ", "") for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if len(lines) == 1:
        one = lines[0]
        for n_lines, width in ((2, 44), (2, 36), (3, 30)):
            if len(one) == n_lines * width:
                return [one[i * width : (i + 1) * width] for i in range(n_lines)]
    return lines


def detect_layout(lines: list[str]) -> _Layout | None:
    lengths = [len(ln) for ln in lines]
    visa = bool(lines) and lines[0][:1] == "V"
    if lengths == [44, 44]:
        return _MRVA if visa else _TD3
    if lengths == [36, 36]:
        return _MRVB if visa else _TD2
    if lengths == [30, 30, 30]:
        return _TD1
    return None


def _kind(code: str) -> DocumentKind:
    first = code[:1]
    if first == "P":
        return "passport"
    if first in ("I", "A", "C"):
        return "id_card"
    if first == "V":
        return "visa"
    return "other"


def _birth_date(yymmdd: str, today: date) -> date:
    # Birth dates lie in the past: the latest century that does not put the date after today.
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    d = date(2000 + yy, mm, dd) if 2000 + yy <= today.year else date(1900 + yy, mm, dd)
    if d > today:
        d = date(d.year - 100, mm, dd)
    return d


def _expiry_date(yymmdd: str, today: date) -> date:
    # Expiry lies within 50 years either side of today (documents are valid for at most 10-15 years and
    # expired ones are read for years after): the century that puts it in that window.
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    year = 2000 + yy
    if year > today.year + 50:
        year -= 100
    elif year < today.year - 50:
        year += 100
    return date(year, mm, dd)


def _clean(value: str) -> str:
    return value.replace("<", "")


def _names(field: str) -> tuple[str, str]:
    # ICAO 9303 part 3 §4.6: primary and secondary identifiers separated by '<<'; '<' between name parts.
    field = field.rstrip("<")
    primary, _, secondary = field.partition("<<")
    return primary.replace("<", " ").strip(), secondary.replace("<", " ").strip()


class _Parser:
    def __init__(
        self, lines: list[str], layout: _Layout, today: date, uncertain: frozenset[tuple[int, int]] = frozenset()
    ) -> None:
        self.lines = list(lines)
        self.uncertain = uncertain
        self.layout = layout
        self.today = today
        self.errors: list[FieldError] = []
        self.repairs: list[Repair] = []

    def err(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field=field, message=message))

    def get(self, span: _Span) -> str:
        return span.get(self.lines)

    def put(self, field: str, span: _Span, value: str) -> None:
        before = span.get(self.lines)
        if before != value:
            span.put(self.lines, value)
            self.repairs.append(Repair(field=field, before=before, after=value))

    # --- repairs -------------------------------------------------------------------------------------

    def repair_numeric(self, field: str, span: _Span, check: _Span | None) -> None:
        """Letters in a numeric field: map to digits, keep the mapping only if the check digit verifies."""
        value, digit = self.get(span), self.get(check) if check else ""
        new_value = "".join(_TO_DIGIT.get(c, c) for c in value)
        new_digit = "".join(_TO_DIGIT.get(c, c) for c in digit) if digit != "<" else digit
        if (new_value, new_digit) == (value, digit):
            return
        if check is None or _check_ok(new_value, new_digit):
            self.put(field, span, new_value)
            if check is not None:
                self.put(f"{field}_check", check, new_digit)

    def _composite_ok_with(self, span: _Span, value: str) -> bool:
        lay = self.layout
        if lay.composite is None:
            return True
        trial = list(self.lines)
        span.put(trial, value)
        data = "".join(s.get(trial) for s in lay.composite_parts)
        return _check_ok(data, lay.composite.get(trial))

    def repair_alnum(self, field: str, span: _Span, check: _Span, trailing_only: bool = False) -> None:
        """Ambiguous characters at uncertain positions: the unique minimal change that the check proves.

        One check digit has only ten values, so a repair must also satisfy the composite check digit where
        the format has one (part 3 §4.9): together they leave about one wrong candidate in a hundred.
        """
        value, digit = self.get(span), self.get(check)
        digit = _TO_DIGIT.get(digit, digit)
        if _check_ok(value, digit):
            if digit != self.get(check):
                self.put(f"{field}_check", check, digit)
            return
        positions = [
            i for i, c in enumerate(value) if c in _ALNUM_SWAPS and (span.line, span.start + i) in self.uncertain
        ][:_MAX_AMBIGUOUS_POSITIONS]
        found: list[str] = []
        for n_changes in range(1, len(positions) + 1):
            for chosen in itertools.combinations(positions, n_changes):
                options = [_ALNUM_SWAPS[value[i]] for i in chosen]
                for repl in itertools.product(*options):
                    cand = list(value)
                    for i, r in zip(chosen, repl, strict=True):
                        cand[i] = r
                    s = "".join(cand)
                    if trailing_only and "<" in s.rstrip("<"):
                        continue  # part 3 §4.2: a document number is padded with fillers only at its end
                    if _check_ok(s, digit) and self._composite_ok_with(span, s):
                        found.append(s)
            if found or n_changes >= _MAX_CHANGES:
                break
        if len(set(found)) == 1:
            self.put(field, span, found[0])
            if digit != self.get(check):
                self.put(f"{field}_check", check, digit)

    def repair_composite_digit(self, lay: _Layout) -> None:
        assert lay.composite is not None
        digit = self.get(lay.composite)
        fixed = _TO_DIGIT.get(digit, digit)
        data = "".join(self.get(s) for s in lay.composite_parts)
        if fixed != digit and _check_ok(data, fixed):
            self.put("composite", lay.composite, fixed)

    def repair_code(self, field: str, span: _Span) -> None:
        """Digits in an issuer/nationality code: repaired only when that gives a known ICAO code."""
        value = self.get(span)
        if is_known_code(_clean(value)):
            return
        letters = "".join(_TO_LETTER.get(c, c) for c in value)
        # A one- or two-letter code is padded with fillers (D<<): fillers read as K/X/L.
        padded = letters[0] + "".join("<" if c in "KXL" else c for c in letters[1:])
        for cand in (letters, padded):
            if cand != value and is_known_code(_clean(cand)):
                self.put(field, span, cand)
                return

    def repair_name_fillers(self, span: _Span) -> None:
        # No check digit covers names; the syntax does: part 3 §4.6 separates the identifiers with '<<'
        # and name parts with one '<', so after three fillers only fillers can follow. Anything else
        # there is a filler misread (tesseract reads '<' as K, X, R, E on real scans).
        value = self.get(span)
        cut = value.find("<<<", 1)
        if cut < 0:
            return
        if value[cut:].strip("<"):
            self.put("names", span, value[:cut] + "<" * (len(value) - cut))

    # --- validation ----------------------------------------------------------------------------------

    def check(self, field: str, span: _Span, check: _Span) -> bool:
        ok = _check_ok(self.get(span), self.get(check))
        if not ok:
            self.err(
                field,
                f"check digit {self.get(check)!r} does not match (expected {check_digit(self.get(span))}); "
                "re-read the document",
            )
        return ok

    def date_field(self, field: str, span: _Span, birth: bool) -> date | None:
        raw = self.get(span)
        if birth and "<" in raw:
            # Part 3 §4.7.1 allows fillers for an unknown day/month of birth.
            return None
        if not raw.isdigit():
            self.err(field, f"{raw!r} is not a YYMMDD date")
            return None
        try:
            return _birth_date(raw, self.today) if birth else _expiry_date(raw, self.today)
        except ValueError:
            self.err(field, f"{raw!r} is not a calendar date (YYMMDD)")
            return None

    def code_field(self, field: str, span: _Span) -> str:
        raw = self.get(span)
        code = _clean(raw)
        if not is_known_code(code):
            self.err(field, f"{raw!r} is not an ICAO 9303 part 3 state or organisation code")
        return code

    def run(self) -> Document:
        lay = self.layout
        # Repairs first (each proved by its check digit), then validation on the repaired text.
        self.repair_numeric("birth_date", lay.birth, lay.birth_check)
        self.repair_numeric("expiry_date", lay.expiry, lay.expiry_check)
        self.repair_long_number_aware()
        if lay.optional_check is not None:
            self.repair_alnum("optional_data", lay.optional, lay.optional_check)
        if lay.composite is not None:
            self.repair_composite_digit(lay)
        self.repair_code("issuer", lay.issuer)
        self.repair_code("nationality", lay.nationality)
        self.repair_name_fillers(lay.names)

        code_raw = self.get(lay.code)
        if code_raw[0] not in "PIACV":
            self.err("document_code", f"{code_raw!r}: first character must be P, I, A, C or V (9303 part 3)")
        if lay.fmt in ("MRV-A", "MRV-B") and code_raw[0] != "V":
            self.err("document_code", f"{code_raw!r}: a visa MRZ starts with V")
        issuer = self.code_field("issuer", lay.issuer)
        nationality = self.code_field("nationality", lay.nationality)
        number, number_ok = self.number_and_check()
        birth_ok = self.check("birth_date", lay.birth, lay.birth_check)
        expiry_ok = self.check("expiry_date", lay.expiry, lay.expiry_check)
        birth = self.date_field("birth_date", lay.birth, birth=True)
        expiry = self.date_field("expiry_date", lay.expiry, birth=False)
        optional_ok: bool | None = None
        if lay.optional_check is not None:
            optional_ok = self.check("optional_data", lay.optional, lay.optional_check)
        composite_ok: bool | None = None
        if lay.composite is not None:
            data = "".join(self.get(s) for s in lay.composite_parts)
            composite_ok = _check_ok(data, self.get(lay.composite)) and self.get(lay.composite) != "<"
            if not composite_ok:
                self.err("composite", f"composite check digit {self.get(lay.composite)!r} does not match "
                         f"(expected {check_digit(data)}); re-read the document")  # fmt: skip
        sex_raw = self.get(lay.sex)
        if sex_raw not in ("M", "F", "<", "X"):
            self.err("sex", f"{sex_raw!r} is not M, F or < (9303 part 3 §4.7)")
        names_raw = self.get(lay.names)
        surname, given = _names(names_raw)
        # An empty primary identifier is legal (part 3 §4.6: a single name may be the secondary one).
        if any(c.isdigit() for c in names_raw):
            self.err("names", "names contain digits; re-read the document")
        expired = expiry is not None and expiry < self.today
        if expired:
            self.err("expiry_date", f"document expired on {expiry.isoformat() if expiry else ''}")
        optional = self.get(lay.optional)
        if lay.fmt == "TD1" and self._long_number_suffix is not None:
            optional = optional[len(self._long_number_suffix) + 1 :]
        return Document(
            kind=_kind(code_raw),
            format=lay.fmt,
            document_code=_clean(code_raw),
            issuer=issuer,
            number=number,
            surname=surname,
            given_names=given,
            nationality=nationality,
            birth_date=birth,
            sex="X" if sex_raw in ("<", "X") else ("M" if sex_raw == "M" else "F"),
            expiry_date=expiry,
            expired=expired,
            optional_data=_clean(optional),
            optional_data_2=_clean(self.get(lay.optional2)) if lay.optional2 else "",
            checks=CheckResults(
                number=number_ok,
                birth_date=birth_ok,
                expiry_date=expiry_ok,
                optional_data=optional_ok,
                composite=composite_ok,
            ),
        )

    # --- document numbers longer than 9 characters (part 5 §4.2.2 note j, part 6 §4.2.2 note j) ---------

    _long_number_suffix: str | None = None

    def _long_number_parts(self) -> tuple[str, str] | None:
        """(suffix, check digit) from the optional data when the number check position holds '<'."""
        lay = self.layout
        if lay.fmt not in ("TD1", "TD2") or self.get(lay.number_check) != "<":
            return None
        opt = self.get(lay.optional)
        end = opt.find("<")
        body = opt if end < 0 else opt[:end]
        if len(body) < 2:
            return None
        return body[:-1], body[-1]

    def repair_long_number_aware(self) -> None:
        if self._long_number_parts() is None:
            self.repair_alnum("number", self.layout.number, self.layout.number_check, trailing_only=True)

    def number_and_check(self) -> tuple[str, bool]:
        lay = self.layout
        parts = self._long_number_parts()
        if parts is None:
            ok = self.check("number", lay.number, lay.number_check)
            return _clean(self.get(lay.number)), ok
        suffix, digit = parts
        self._long_number_suffix = suffix
        full = self.get(lay.number) + suffix
        # Part 5 §4.2.2 note j computes the check over the complete number; some issuers' specimens
        # (Belgian ID BEL-BO-03003) include the '<' at position 15 in it. Accept either reading.
        ok = _check_ok(full, digit) or _check_ok(self.get(lay.number) + "<" + suffix, digit)
        if not ok:
            self.err("number", f"check digit {digit!r} of the long document number does not match "
                     f"(expected {check_digit(full)}); re-read the document")  # fmt: skip
        return _clean(full), ok


def parse_mrz(
    text: str, *, today: date | None = None, uncertain: frozenset[tuple[int, int]] = frozenset()
) -> MrzResult:
    """Parse MRZ text (lines separated by newlines). Never raises; see `MrzResult.errors`.

    Letters in digit-only fields and fillers read as K/X/L are always repaired where the check digit then
    verifies. Letter/digit swaps inside alphanumeric fields (document number, optional data) are tried only
    at `uncertain` (line, index) positions an OCR stage names: a 7-3-1 check digit has ten values, so
    searching every position would turn one in three real misreads into a wrong "valid" document.
    """
    try:
        return _parse_mrz(text, today or date.today(), uncertain)
    except Exception as exc:  # pragma: no cover - a bug here must still not escape into the lane
        return MrzResult(errors=[FieldError(field="mrz", message=f"internal parser error: {exc!r}")])


def parse_mrz_lines(lines: list[str], *, today: date | None = None) -> MrzResult:
    return parse_mrz("\n".join(lines), today=today)


def _parse_mrz(text: str, today: date, uncertain: frozenset[tuple[int, int]]) -> MrzResult:
    if not isinstance(text, str):
        return MrzResult(errors=[FieldError(field="mrz", message="MRZ input is not text")])
    lines = split_mrz_text(text)
    if not lines:
        return MrzResult(errors=[FieldError(field="mrz", message="no MRZ text; present the document again")])
    errors: list[FieldError] = []
    for i, ln in enumerate(lines):
        bad = sorted({c for c in ln if c not in MRZ_ALPHABET})
        if bad:
            errors.append(
                FieldError(
                    field=f"line{i + 1}",
                    message=f"characters {''.join(bad)!r} are not allowed in an MRZ (A-Z, 0-9, <)",
                )
            )
    layout = detect_layout(lines)
    if layout is None:
        shape = " x ".join(str(len(ln)) for ln in lines)
        errors.append(
            FieldError(
                field="mrz",
                message=f"line lengths {shape} match no MRZ format (TD1 3x30, TD2/MRV-B 2x36, TD3/MRV-A 2x44)",
            )
        )
        return MrzResult(lines=lines, errors=errors)
    if errors:
        return MrzResult(format=layout.fmt, lines=lines, errors=errors)
    parser = _Parser(lines, layout, today, uncertain)
    document = parser.run()
    return MrzResult(
        format=layout.fmt,
        lines=parser.lines,
        document=document,
        errors=parser.errors,
        repairs=parser.repairs,
    )


def check_failures(result: MrzResult) -> int:
    """How many structural/check-digit errors a result has, ignoring expiry-against-today (for OCR ranking)."""
    return sum(1 for e in result.errors if not e.message.startswith("document expired"))


def layout_of(fmt: MrzFormat) -> _Layout:
    return {"TD1": _TD1, "TD2": _TD2, "TD3": _TD3, "MRV-A": _MRVA, "MRV-B": _MRVB}[fmt]


def position_classes(fmt: MrzFormat) -> list[str]:
    """Per line, one class letter per character: N digit, A letter, X letter or digit, S sex, F filler/any.

    Derived from the layouts above (ICAO 9303 parts 4-7); used by OCR to know which confusions are possible.
    """
    lay = {"TD1": _TD1, "TD2": _TD2, "TD3": _TD3, "MRV-A": _MRVA, "MRV-B": _MRVB}[fmt]
    lines = [["F"] * lay.line_len for _ in range(lay.n_lines)]

    def mark(span: _Span | None, cls: str) -> None:
        if span is not None:
            for i in range(span.start, span.end):
                lines[span.line][i] = cls

    alpha: tuple[_Span | None, ...] = (lay.code, lay.issuer, lay.nationality, lay.names)
    alnum: tuple[_Span | None, ...] = (lay.number, lay.optional, lay.optional2)
    digits: tuple[_Span | None, ...] = (lay.birth, lay.birth_check, lay.expiry, lay.expiry_check,
                                        lay.number_check, lay.optional_check, lay.composite)  # fmt: skip
    for span in alpha:
        mark(span, "A")
    for span in alnum:
        mark(span, "X")
    for span in digits:
        mark(span, "N")
    mark(lay.sex, "S")
    return ["".join(ln) for ln in lines]


def trusted_spans(fmt: MrzFormat, lines: list[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(line, index) positions whose characters are certain: digits of date fields whose check digit
    verifies as read, and letters of the names field. OCR uses them as this document's own font samples."""
    lay = {"TD1": _TD1, "TD2": _TD2, "TD3": _TD3, "MRV-A": _MRVA, "MRV-B": _MRVB}[fmt]
    digits: list[tuple[int, int]] = []
    for span, chk in ((lay.birth, lay.birth_check), (lay.expiry, lay.expiry_check)):
        value, digit = span.get(lines), chk.get(lines)
        if value.isdigit() and _check_ok(value, digit):
            digits += [(span.line, i) for i in range(span.start, span.end)]
            digits.append((chk.line, chk.start))
    # Letters after the first '<<<' are where fillers misread as K/X/E sit: not samples.
    names = lay.names.get(lines)
    end = names.find("<<<")
    end = lay.names.end if end < 0 else lay.names.start + end
    letters = [(lay.names.line, i) for i in range(lay.names.start, end) if "A" <= lines[lay.names.line][i] <= "Z"]
    return digits, letters
