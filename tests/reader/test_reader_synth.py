"""The synthetic document generator (`egate bench mrz-synth`) and the MRZ reader on what it makes.

A small stress subset is read end to end (every format and damage at least once); the full set is
`egate bench mrz --dir` on a generated folder.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from egate.drivers.document.mrz import check_failures, parse_mrz
from egate.drivers.document.ocr import read_mrz_image
from egate.tools.sim.mrz_synth import (
    DEGRADATIONS,
    FORMATS,
    OCR_B_FONT,
    SynthParams,
    build_mrz,
    generate_sample,
    sample_kind,
    write_set,
)

pytestmark = pytest.mark.skipif(not OCR_B_FONT.exists(), reason="fonts-ocr-b is not installed")
REFERENCE = date(2026, 1, 1)


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    a, b = generate_sample(21, 7), generate_sample(21, 7)
    assert np.array_equal(a.image, b.image) and a.truth == b.truth
    assert generate_sample(22, 7).truth.lines != a.truth.lines


def test_index_walks_every_format_and_damage() -> None:
    params = SynthParams()
    n = len(FORMATS) * len(DEGRADATIONS)
    assert {sample_kind(i, params) for i in range(n)} == {(f, d) for f in FORMATS for d in DEGRADATIONS}
    assert generate_sample(3, 13).truth.format == sample_kind(13, params)[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_ground_truth_is_a_well_formed_mrz(fmt: str) -> None:
    from egate.tools.sim.mrz_synth import break_check_digit

    rng = np.random.default_rng(5)
    for _ in range(40):
        lines, where = build_mrz(fmt, rng, 2026)
        r = parse_mrz("\n".join(lines), today=REFERENCE)
        assert r.format == fmt and r.lines == lines and r.valid, (lines, r.errors)
        broken = break_check_digit(fmt, lines, where, rng)
        r = parse_mrz("\n".join(lines), today=REFERENCE)
        # Exactly the broken check digit fails: the composite covers what is printed, so it holds.
        assert {e.field for e in r.errors} == {broken}, (lines, r.errors)


def test_written_set_has_sidecars(tmp_path: Path) -> None:
    paths = write_set(tmp_path, seed=9, count=2, params=replace(SynthParams(), char_px=(14.0, 16.0)))
    assert [p.name.split("_")[1] for p in paths] == ["TD1", "TD2"]
    for p in paths:
        truth = json.loads(p.with_suffix(".json").read_text())
        assert p.with_suffix(".txt").read_text().split() == truth["lines"]
        assert truth["params"]["mrz_char_px"] <= 16.0
        assert cv2.imread(str(p)) is not None
    assert json.loads((tmp_path / "set.json").read_text())["seed"] == 9


# One of each damage, formats rotating: read end to end.
STRESS = [(21, i * 5 + i % 5) for i in range(len(DEGRADATIONS))]


def _key_fields(lines: list[str]) -> tuple[object, ...]:
    d = parse_mrz("\n".join(lines), today=REFERENCE).document
    return (d.number, d.birth_date, d.expiry_date, d.nationality) if d is not None else ()


@pytest.mark.slow
def test_stress_subset_end_to_end() -> None:
    right = 0
    misses = []
    for seed, index in STRESS:
        s = generate_sample(seed, index)
        r = read_mrz_image(s.image, today=REFERENCE)
        valid = r.document is not None and check_failures(r) == 0
        ok = r.lines == s.truth.lines
        right += ok
        if not ok:
            misses.append((s.truth.format, s.truth.degradation))
        if not s.truth.checks_valid:
            assert not valid, "a printed wrong check digit must be reported"
        if valid:
            # The check digits guard number, dates and (by the code list) nationality: a read that passes
            # them must have them right. Names carry no check digit (see docs/mrz_reading.md).
            assert _key_fields(r.lines) == _key_fields(s.truth.lines), (s.truth.format, s.truth.degradation)
    assert right >= len(STRESS) - 3, misses


def test_diag_reader_reads_a_generated_page(tmp_path: Path) -> None:
    import typer

    from egate.tools.cli import app as _unused  # noqa: F401  (the real CLI wiring is exercised elsewhere)
    from egate.tools.diag import reader as diag_reader

    s = generate_sample(21, 2)  # a clean TD3
    path = tmp_path / "page.png"
    cv2.imwrite(str(path), s.image)
    app = typer.Typer()
    diag = typer.Typer()
    diag_reader.register(diag)
    app.add_typer(diag, name="diag")
    result = CliRunner().invoke(app, ["diag", "reader", "--image", str(path), "--json"])
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["lines"] == s.truth.lines


def test_page_camera_reader_reads_a_generated_page() -> None:
    # edge/lane/page.py reads each placed page through DocumentReader.read_image: the same reader.
    from egate.drivers.document import DocumentReader, MrzResult, ReaderConfig

    s = generate_sample(21, 9)  # MRV-B, tilted up to 10 degrees
    reader = DocumentReader(ReaderConfig(), on_result=lambda _r: None, today=lambda: REFERENCE)
    result = reader.read_image(s.image)
    assert isinstance(result, MrzResult) and result.format == "MRV-B"
    assert result.lines == s.truth.lines


def test_a_failing_tesseract_costs_its_opinion_not_the_read() -> None:
    # A printed wrong check digit makes the reader ask tesseract; `false` stands for a tesseract that fails.
    from egate.drivers.document.ocr import OcrSettings

    s = generate_sample(21, 2, SynthParams(invalid_share=1.0))  # a clean TD3
    assert not s.truth.checks_valid
    r = read_mrz_image(s.image, today=REFERENCE, settings=OcrSettings(tesseract_cmd="false"))
    assert r.lines == s.truth.lines and not r.valid
    assert s.truth.broken_field in {e.field for e in r.errors}
