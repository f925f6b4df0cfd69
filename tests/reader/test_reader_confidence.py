"""A read whose characters are not all sure is reported invalid (uncertain), never a confident wrong identity.

Check digits prove the document number and the dates; nothing proves the names. `mrz_confidence.assess`
decides from the OCR's own candidates, and the reader adds an `ocr_confidence` error to such a read.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest

from egate.drivers.document.mrz import check_digit, parse_mrz
from egate.drivers.document.mrz_confidence import UNCERTAIN_FIELD, assess
from egate.drivers.document.mrz_decode import Candidates
from egate.drivers.document.mrz_locate import binarise
from egate.drivers.document.ocr import OcrTrace, read_mrz_image
from egate.tools.sim.mrz_synth import OCR_B_FONT, SynthParams, generate_sample

REFERENCE = date(2026, 1, 1)
BEFORE_UTOPIA_EXPIRY = date(2012, 1, 1)
UTOPIA_TD3 = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]


def _sure(lines: list[str]) -> list[list[Candidates]]:
    return [[[(ch, 1.0)] for ch in line] for line in lines]


def test_clear_read_is_certain() -> None:
    conf = assess("TD3", _sure(UTOPIA_TD3), UTOPIA_TD3)
    assert not conf.uncertain and conf.weak_unchecked == [] and not conf.ambiguous


def test_a_doubtful_name_letter_makes_the_read_uncertain() -> None:
    cands = _sure(UTOPIA_TD3)
    cands[0][9] = [("S", 0.5), ("B", 0.45)]  # ERIKSSON: an S hardly ahead of a B
    conf = assess("TD3", cands, UTOPIA_TD3)
    assert conf.uncertain and conf.weak_unchecked == [(0, 9)]
    # Both OCR opinions reading the same letter make the same weak match clear enough.
    assert not assess("TD3", cands, UTOPIA_TD3, agreed={(0, 9)}).uncertain


def test_a_letter_between_fillers_that_may_be_a_filler_is_doubtful() -> None:
    lines = ["P<UTOERIKSSON<<ANNA<K<MARIA<<<<<<<<<<<<<<<<<", UTOPIA_TD3[1]]
    cands = _sure(lines)
    cands[0][20] = [("K", 0.9), ("<", 0.2)]
    assert assess("TD3", cands, lines).weak_unchecked == [(0, 20)]


def _td3_with_number(number: str) -> list[str]:
    line2 = f"{number}{check_digit(number)}UTO7408122F1204159ZE184226B<<<<<1"
    composite = line2[0:10] + line2[13:20] + line2[21:43]
    return [UTOPIA_TD3[0], line2 + check_digit(composite)]


def test_another_reading_that_passes_every_check_digit_makes_the_read_uncertain() -> None:
    # O and 0 differ by 24 in check-digit value: two of them at weights 7 and 3 change no check digit.
    lines = _td3_with_number("OO1234567")
    assert parse_mrz("\n".join(lines), today=BEFORE_UTOPIA_EXPIRY).valid
    cands = _sure(lines)
    cands[1][0] = [("O", 0.9), ("0", 0.6)]
    cands[1][1] = [("O", 0.9), ("0", 0.6)]
    assert assess("TD3", cands, lines).ambiguous
    # One look-alike alone cannot pass: the check digit proves the read.
    cands[1][1] = [("O", 1.0)]
    assert not assess("TD3", cands, lines).uncertain


def test_a_dissenting_second_opinion_is_tried_against_the_check_digits() -> None:
    lines = _td3_with_number("OO1234567")
    cands = _sure(lines)  # the OCR-B match is sure of both O's; tesseract reads 0 at both
    assert assess("TD3", cands, lines, disputed={(1, 0): "0", (1, 1): "0"}).ambiguous


def test_a_check_digit_proves_nothing_between_letters_ten_apart() -> None:
    # H (17) and R (27): swapped, every check digit stays as it was (7-3-1 weights are prime to 10).
    h, r = _td3_with_number("H12345678"), _td3_with_number("R12345678")
    assert h[1][9] == r[1][9] and h[1][43] == r[1][43]
    cands = _sure(h)
    # The network alone reads H (no other opinion): in a checked field that was enough, but not for H.
    assert assess("TD3", cands, h, unsupported={(1, 0)}).weak_unchecked == [(1, 0)]
    # A digit-value-distinct character, unsupported in a checked field, is still proved by the check digit.
    k = _td3_with_number("K12345678")
    assert not assess("TD3", _sure(k), k, unsupported={(1, 0)}).uncertain
    # A doubtful H stays doubtful even though every check passes.
    cands[1][0] = [("H", 0.6), ("N", 0.5)]
    assert assess("TD3", cands, h).uncertain


pytestmark_font = pytest.mark.skipif(not OCR_B_FONT.exists(), reason="fonts-ocr-b is not installed")


@pytestmark_font
def test_glare_washed_glyphs_survive_binarisation() -> None:
    # A row of dark bars with a bright spot over half of them: the washed-out bars must stay ink.
    row = np.full((60, 600), 220, np.uint8)
    for x in range(20, 580, 40):
        row[15:45, x : x + 8] = 60
    _yy, xx = np.mgrid[0:60, 0:600]
    spot = np.exp(-((xx - 450) ** 2) / (2 * 80.0**2))
    glared = np.clip(row + (255 - row) * 0.75 * spot, 0, 255).astype(np.uint8)
    ink = binarise(glared) == 0
    for x in range(20, 580, 40):
        assert ink[25:35, x + 2 : x + 6].mean() > 0.9, x
    assert ink[:, 0:15].mean() < 0.01


@pytestmark_font
def test_a_page_with_an_erased_name_letter_is_never_a_confident_wrong_read(tmp_path: Path) -> None:
    s = generate_sample(21, 2, SynthParams())  # a clean TD3
    trace = OcrTrace()
    first = read_mrz_image(s.image, today=REFERENCE, trace=trace)
    assert first.lines == s.truth.lines and first.valid
    # Wipe one letter of the surname (where the third name letter sits on the first row).
    image = s.image.copy()
    x, y, w, h = trace.boxes[0]
    pitch = w / 44.0
    cx = int(x + (5 + 0.5) * pitch)
    cv2.rectangle(image, (int(cx - 0.45 * pitch), y - 2), (int(cx + 0.45 * pitch), y + h + 2), (235, 235, 235), -1)
    r = read_mrz_image(image, today=REFERENCE)
    assert not r.valid
    if r.document is not None and all(e.field == UNCERTAIN_FIELD for e in r.errors):
        assert r.errors[0].message.startswith("MRZ characters not read clearly")


@pytestmark_font
def test_bench_never_counts_an_uncertain_read_as_fully_right(tmp_path: Path) -> None:
    from egate.tools.bench.mrz import run_bench

    s = generate_sample(21, 2, SynthParams())  # a clean TD3
    trace = OcrTrace()
    read_mrz_image(s.image, today=REFERENCE, trace=trace)
    x, y, w, h = trace.boxes[0]
    erased = s.image.copy()
    cx = int(x + 5.5 * w / 44.0)
    cv2.rectangle(erased, (int(cx - 0.4 * w / 44), y - 2), (int(cx + 0.4 * w / 44), y + h + 2), (235, 235, 235), -1)
    for name, image in (("clean", s.image), ("erased", erased)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), image)
        (tmp_path / f"{name}.txt").write_text("\n".join(s.truth.lines) + "\n")
    out = run_bench(tmp_path)
    assert out["with_truth"] == 2 and "clean.png" not in out["not_fully_right"]
    assert set(out["uncertain_images"]) <= set(out["not_fully_right"])
    assert out["fully_right"] == 2 - len(out["not_fully_right"]) and out["wrong_but_valid"] == 0
    assert out["uncertain"] == len(out["uncertain_images"])
