"""`egate models`, `egate diag engines` and `egate bench engine` through their typer commands."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from egate.engines.backends.plugins.tensorrt import TensorRTBackend
from egate.engines.models import load_manifest
from egate.tools.bench import engine as bench_engine
from egate.tools.diag import engines as diag_engines
from egate.tools.models import commands as models_cmd
from tests.shared_data import shared_data


def _app(register) -> typer.Typer:  # type: ignore[no-untyped-def]
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # keeps typer in group mode with one real command
    return app


def test_models_show_and_build_json(model_dir: Path) -> None:
    app = _app(models_cmd.register)
    shown = CliRunner().invoke(app, ["show", "--dir", str(model_dir), "--json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.stdout)
    assert summary["model_id"] == load_manifest(model_dir).model_id
    assert set(summary["files"]) >= {"detector_short", "embedder", "landmarks5"}
    built = CliRunner().invoke(app, ["build", "--dir", str(model_dir), "--json"])
    assert built.exit_code == 0 and json.loads(built.stdout)["model_id"] == summary["model_id"]


def test_models_show_on_empty_dir_fails_with_the_fix(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(models_cmd.register), ["show", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no model manifest" in result.stderr and "egate models build" in result.stderr


def test_models_build_tensorrt_fails_with_reason_without_tensorrt(model_dir: Path) -> None:
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here")
    result = CliRunner().invoke(_app(models_cmd.register), ["build", "--tensorrt", "--dir", str(model_dir)])
    assert result.exit_code == 1 and reason in result.stderr


def test_diag_engines_lists_backends_and_device_check_exits_non_zero_without_tensorrt(model_dir: Path) -> None:
    app = _app(diag_engines.register)
    listed = CliRunner().invoke(app, ["engines", "--dir", str(model_dir), "--json"])
    assert listed.exit_code == 0
    rows = {r["name"]: r for r in json.loads(listed.stdout)["backends"]}
    assert rows["onnxruntime"]["available"] and rows["opencv"]["available"]
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here: the device check would run for real")
    assert rows["tensorrt"] == {"name": "tensorrt", "available": False, "reason": reason}
    for flag in ("--device-check", "--parity"):  # --parity is the same check under its old name
        check = CliRunner().invoke(app, ["engines", flag, "--dir", str(model_dir), "--json"])
        assert check.exit_code == 1
        assert reason in json.loads(check.stdout)["device_check"]["tensorrt"]["error"]


def test_bench_engine_reports_stages_per_backend(model_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted(shared_data("faces/lfw_krasserm").glob("*/*.jpg"))[:3]:
        (photos / src.name).symlink_to(src)
    cv2.imwrite(str(photos / "blank.png"), np.zeros((240, 320, 3), np.uint8))
    result = CliRunner().invoke(
        _app(bench_engine.register),
        ["engine", "--images", str(photos), "--dir", str(model_dir), "--backend", "onnxruntime", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 4
    assert [(r["backend"], r["detector"]) for r in report["runs"]] == [
        ("onnxruntime", "short"),
        ("onnxruntime", "full"),
    ]
    for run in report["runs"]:
        assert run["frames_without_face"] == 1 and run["frames_with_one_face"] == 3
        assert set(run["stages"]) == {"detect", "landmarks", "align", "embed", "quality"}
        assert run["stages"]["embed"]["n"] == 3 and run["frame"]["n"] == 3
        assert 0 < run["stages"]["embed"]["median_ms"] <= run["stages"]["embed"]["p95_ms"]
    assert set(report["meets_targets"]) == {"onnxruntime/short", "onnxruntime/full"}
