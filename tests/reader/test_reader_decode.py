"""Field-type-aware MRZ decoding: per-position types of every format, check digits choosing among the OCR's
alternatives, and printed check digits that are really wrong staying wrong."""

from __future__ import annotations

from datetime import date

import pytest

from egate.drivers.document.mrz import check_digit, parse_mrz, position_classes
from egate.drivers.document.mrz_decode import Candidates, constrain, decode
from tests.support.reader_fixtures import UTOPIA_TD2, UTOPIA_TD3

TD1 = ["I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6", "ERIKSSON<<ANNA<MARIA<<<<<<<<<<"]
MRV_A = ["VIUSATRAVELER<<HAPPYPERSON<<<<<<<<<<<<<<<<<<", "555123ABC6GBR6502056F04122361FLND00AMS803085"]
MRV_B = ["VCPOLKOWALSKA<KWIATKOWSKA<<BEATA<<<<", "PL00000008POL6002084F0505011<<<<<<<0"]
DOCS = {"TD1": TD1, "TD2": UTOPIA_TD2, "TD3": UTOPIA_TD3, "MRV-A": MRV_A, "MRV-B": MRV_B}
THEN = date(2003, 1, 1)


def sure(lines: list[str]) -> list[list[Candidates]]:
    return [[[(ch, 1.0)] for ch in line] for line in lines]


def with_doubt(cands: list[list[Candidates]], pos: tuple[int, int], read: str, other: str) -> None:
    """The OCR read `read` at `pos`, with `other` a close second."""
    cands[pos[0]][pos[1]] = [(read, 0.9), (other, 0.85)]


# Every format's types, position by position, from ICAO 9303 parts 4-7 (N digit, A letter, X either, S sex).
CLASSES = {
    "TD1": ["AAAAAXXXXXXXXXNXXXXXXXXXXXXXXX", "NNNNNNNSNNNNNNNAAAXXXXXXXXXXXN", "A" * 30],
    "TD2": ["A" * 36, "XXXXXXXXXNAAANNNNNNNSNNNNNNNXXXXXXXN"],
    "TD3": ["A" * 44, "XXXXXXXXXNAAANNNNNNNSNNNNNNNXXXXXXXXXXXXXXNN"],
    "MRV-A": ["A" * 44, "XXXXXXXXXNAAANNNNNNNSNNNNNNNXXXXXXXXXXXXXXXX"],
    "MRV-B": ["A" * 36, "XXXXXXXXXNAAANNNNNNNSNNNNNNNXXXXXXXX"],
}


@pytest.mark.parametrize("fmt", list(CLASSES))
def test_position_types_per_format(fmt: str) -> None:
    assert position_classes(fmt) == CLASSES[fmt]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cands", "cls", "first"),
    [
        ([("O", 0.9), ("Q", 0.3)], "N", "0"),  # a date never holds a letter
        ([("0", 0.9), ("8", 0.3)], "A", "O"),  # a name never holds a digit
        ([("8", 0.9), ("B", 0.8)], "A", "B"),
        ([("K", 0.9)], "F", "<"),
        ([("O", 0.9), ("0", 0.8)], "X", "O"),  # either is possible: the OCR's order stands
        ([("Q", 0.9)], "S", "Q"),  # nothing allowed: kept as read, so the parser names the field
    ],
)
def test_candidates_cut_to_the_field_type(cands: Candidates, cls: str, first: str) -> None:
    assert constrain(cands, cls)[0][0] == first


@pytest.mark.parametrize("fmt", list(DOCS))
def test_clean_read_passes_through(fmt: str) -> None:
    lines = DOCS[fmt]
    assert decode(fmt, sure(lines)).lines == lines  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "pos", "read"),
    [
        ("TD3", (1, 5), "O"),  # document number L898902C3: 0 read as O, O a close second choice
        ("TD3", (1, 2), "B"),  # 8 read as B in the number
        ("TD2", (1, 3), "I"),  # D231458907: 1 read as I
        ("TD1", (0, 9), "S"),  # D23145890: 5 read as S
    ],
)
def test_check_digit_chooses_the_ocr_alternative(fmt: str, pos: tuple[int, int], read: str) -> None:
    lines = DOCS[fmt]
    cands = sure(lines)
    with_doubt(cands, pos, read, lines[pos[0]][pos[1]])
    decoded = decode(fmt, cands)  # type: ignore[arg-type]
    assert decoded.lines == lines
    assert decoded.swaps == [(pos[0], pos[1], read, lines[pos[0]][pos[1]])]


@pytest.mark.parametrize(("fmt", "pos", "read"), [("MRV-A", (1, 2), "S"), ("MRV-B", (1, 8), "B")])
def test_without_a_composite_no_swap(fmt: str, pos: tuple[int, int], read: str) -> None:
    # A visa has no composite check digit to confirm a choice: the failing field is reported as read.
    lines = DOCS[fmt]
    cands = sure(lines)
    with_doubt(cands, pos, read, lines[pos[0]][pos[1]])
    decoded = decode(fmt, cands)  # type: ignore[arg-type]
    assert decoded.lines[pos[0]][pos[1]] == read and decoded.swaps == []
    assert "number" in {e.field for e in parse_mrz("\n".join(decoded.lines), today=THEN).errors}


def test_no_alternative_offered_no_change() -> None:
    # The OCR was sure of the wrong character: nothing to choose from, the failure is reported.
    lines = list(UTOPIA_TD3)
    read = [lines[0], lines[1][:5] + "O" + lines[1][6:]]
    decoded = decode("TD3", sure(read))
    assert decoded.lines == read
    r = parse_mrz("\n".join(decoded.lines), today=date(2010, 1, 1))
    assert "number" in {e.field for e in r.errors}


def _break(lines: list[str], pos: tuple[int, int]) -> list[str]:
    out = list(lines)
    wrong = str((int(out[pos[0]][pos[1]]) + 3) % 10)
    out[pos[0]] = out[pos[0]][: pos[1]] + wrong + out[pos[0]][pos[1] + 1 :]
    return out


def _recompute_composite(fmt: str, lines: list[str]) -> list[str]:
    out = list(lines)
    if fmt == "TD1":
        data = out[0][5:30] + out[1][0:7] + out[1][8:15] + out[1][18:29]
        out[1] = out[1][:29] + check_digit(data)
    elif fmt in ("TD2", "TD3"):
        n = len(out[1])
        data = out[1][0:10] + out[1][13:20] + out[1][21 : n - 1]
        out[1] = out[1][: n - 1] + check_digit(data)
    return out


# (format, the printed check digit that is wrong, an uncertain data cell of that field and its close second)
INVALID_CASES = [
    ("TD3", (1, 19), (1, 15), "S"),  # birth date check wrong; a birth digit 0 has a close letter second
    ("TD3", (1, 9), (1, 5), "O"),  # number check wrong; the number's 0 has O as a close second
    ("TD2", (1, 27), (1, 24), "B"),  # expiry check wrong
    ("TD1", (0, 14), (0, 9), "S"),  # number check wrong
    ("MRV-A", (1, 27), (1, 22), "I"),  # expiry check wrong, no composite
    ("MRV-B", (1, 9), (1, 3), "O"),  # number check wrong, no composite
]


@pytest.mark.parametrize(("fmt", "bad", "doubt", "other"), INVALID_CASES)
def test_a_printed_wrong_check_digit_is_reported_not_repaired(
    fmt: str, bad: tuple[int, int], doubt: tuple[int, int], other: str
) -> None:
    printed = _recompute_composite(fmt, _break(DOCS[fmt], bad))
    # Certain reading: the wrong digit is reported.
    decoded = decode(fmt, sure(printed))  # type: ignore[arg-type]
    assert decoded.lines == printed
    assert not parse_mrz("\n".join(decoded.lines), today=THEN).valid
    # The same with doubt at a data cell of that field: whatever the alternatives, the result is never a
    # "valid" document that differs from what is printed.
    cands = sure(printed)
    with_doubt(cands, doubt, printed[doubt[0]][doubt[1]], other)
    decoded = decode(fmt, cands)  # type: ignore[arg-type]
    result = parse_mrz("\n".join(decoded.lines), today=THEN)
    assert not (result.valid and decoded.lines != printed), decoded.lines
    assert decoded.lines == printed


def test_every_wrong_digit_of_every_field_reported() -> None:
    # Exhaustively: each check digit of each format printed wrong by each of the 9 wrong values.
    for fmt, lines in DOCS.items():
        digits = [(1, 9), (1, 19), (1, 27)] if fmt != "TD1" else [(0, 14), (1, 6), (1, 14)]
        for pos in digits:
            for k in range(1, 10):
                out = list(lines)
                wrong = str((int(out[pos[0]][pos[1]]) + k) % 10)
                out[pos[0]] = out[pos[0]][: pos[1]] + wrong + out[pos[0]][pos[1] + 1 :]
                out = _recompute_composite(fmt, out)
                decoded = decode(fmt, sure(out))  # type: ignore[arg-type]
                r = parse_mrz("\n".join(decoded.lines), today=THEN)
                assert decoded.lines == out and not r.valid, (fmt, pos, k)


def test_two_equally_likely_readings_decide_nothing() -> None:
    # Two cells in doubt, each alternative alone verifies the check digit: no evidence which; keep as read.
    lines = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]
    cands = sure(lines)
    cands[1][5] = [("O", 0.9), ("0", 0.85)]
    read = [lines[0], lines[1][:5] + "O" + lines[1][6:]]
    decoded = decode("TD3", cands)
    assert decoded.lines == lines  # the composite confirms the single consistent choice
    assert read != lines


def test_unchecked_optional_data_keeps_its_filler_padding() -> None:
    # MRV-A optional data has no check digit; after three fillers an uncertain K that may be '<' is '<'.
    lines = ["VIUSATRAVELER<<HAPPYPERSON<<<<<<<<<<<<<<<<<<", "555123ABC6GBR6502056F0412236<<<<<<<<<<<<<<<<"]
    cands = sure(lines)
    with_doubt(cands, (1, 33), "K", "<")
    assert decode("MRV-A", cands).lines == lines
    # Read with certainty, a letter there stays: optional data may be anything the issuer chose.
    printed = [lines[0], lines[1][:33] + "K" + lines[1][34:]]
    assert decode("MRV-A", sure(printed)).lines == printed
