"""`egate bench verify` / `egate bench pairs`: pairs files, metrics and the JSON report on real faces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from egate.tools.bench.verify import (
    Pair,
    all_pairs,
    compute_metrics,
    equal_error_rate,
    read_pairs,
    register,
    threshold_at_fmr,
    write_pairs,
)
from tests.shared_data import shared_data


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _small_pairs(tmp_path: Path) -> tuple[Path, Path]:
    """3 people x 2 LFW images (3 genuine, 12 impostor) plus a pair with a blank image (an FTA)."""
    root = shared_data("faces")
    people = ["Colin_Powell", "Hugo_Chavez", "Vladimir_Putin"]
    images = [(p, f"lfw_krasserm/{p}/{p}_000{i}.jpg") for p in people for i in (1, 2)]
    pairs = [Pair(a, b, pa == pb) for i, (pa, a) in enumerate(images) for pb, b in images[i + 1 :]]
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 90, np.uint8))
    pairs.append(Pair(str(blank), images[0][1], False))  # absolute path: --root does not apply
    path = tmp_path / "pairs.tsv"
    write_pairs(path, pairs)
    return path, root


def test_threshold_keeps_fmr_at_or_below_target() -> None:
    impostor = np.linspace(0.3, 1.3, 1000)
    t = threshold_at_fmr(impostor, 1e-2)
    assert np.mean(impostor <= t) <= 1e-2
    assert np.mean(impostor <= np.nextafter(impostor[10], np.inf)) > 1e-2  # and it is the largest one
    assert threshold_at_fmr(np.array([0.5]), 1e-3) < 0.5


def test_eer_and_system_fnmr_count_failures_to_acquire() -> None:
    genuine = np.array([0.2, 0.3, 0.4, 0.7])
    impostor = np.array([0.5, 0.8, 0.9, 1.0])
    eer, _ = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx(0.25)
    m = compute_metrics(genuine, impostor, fta_genuine=1, fta_impostor=2)
    assert (m["pairs"], m["genuine"], m["impostor"], m["fta"]) == (11, 5, 6, 3)
    row = m["fnmr"]["1e-2"]  # no false accept allowed: threshold just below 0.5
    assert row["algorithm"] == pytest.approx(1 / 4)
    assert row["system"] == pytest.approx(2 / 5)


def test_pairs_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.tsv"
    write_pairs(path, [Pair("a.jpg", "b.jpg", True), Pair("a.jpg", "c.jpg", False)])
    assert read_pairs(path) == [Pair("a.jpg", "b.jpg", True), Pair("a.jpg", "c.jpg", False)]
    path.write_text("a.jpg b.jpg 1\n")
    with pytest.raises(ValueError, match=r"p\.tsv:1"):
        read_pairs(path)


def test_all_pairs_of_lfw_krasserm() -> None:
    pairs = all_pairs(shared_data("faces"), ["lfw_krasserm"])
    assert len(pairs) == 4950 and sum(p.same for p in pairs) == 450
    assert all(not Path(p.a).is_absolute() for p in pairs)


def test_pairs_command_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "dev.tsv"
    result = CliRunner().invoke(
        _app(), ["pairs", "--out", str(out), "--faces", str(shared_data("faces")), "--dataset", "orl_att", "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["pairs"] == 79800 and info["genuine"] == 1800
    assert len(out.read_text().splitlines()) == 79800


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["egate", "dlib"])
def test_verify_json_on_real_faces(model_dir: Path, tmp_path: Path, pipeline: str) -> None:
    pairs, root = _small_pairs(tmp_path)
    plot = tmp_path / "det.png"
    calibration = tmp_path / "calibration.json"
    args = ["verify", "--pairs", str(pairs), "--root", str(root), "--json", "--pipeline", pipeline,
            "--model-dir", str(model_dir), "--plot", str(plot), "--write-calibration", str(calibration)]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    # The report is pretty-printed; skip any log line another test's logging setup sent to stdout.
    lines = result.stdout.splitlines()
    report = json.loads("\n".join(lines[lines.index("{") :]))
    assert {"pairs", "genuine", "impostor", "fta", "eer", "fnmr"} <= set(report)
    assert (report["pairs"], report["genuine"], report["impostor"], report["fta"]) == (16, 3, 13, 1)
    assert report["images_without_face"] == 1
    assert report["eer"] == 0.0  # three well-separated LFW identities
    for key in ("1e-2", "1e-3"):
        row = report["fnmr"][key]
        assert set(row) >= {"algorithm", "system", "threshold"}
        assert row["algorithm"] == 0.0 and row["system"] == 0.0
        assert 0.3 < row["threshold"] < 1.2 and math.isfinite(row["threshold"])
    assert plot.stat().st_size > 1000
    record = json.loads(calibration.read_text())
    assert record["target_fmr"] == 1e-3 and record["threshold"] <= report["fnmr"]["1e-3"]["threshold"]
    assert record["datasets"] == ["lfw_krasserm"]
