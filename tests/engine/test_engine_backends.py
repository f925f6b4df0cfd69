"""The CPU backends give the same outputs for the same ONNX on real inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from egate.engines.backends.registry import create_backend, describe_backends, registered_backends
from egate.engines.models import Role, load_manifest
from tests.shared_data import shared_data


def _photo(size: int) -> np.ndarray:
    bgr = cv2.imread(str(shared_data("faces/face_recognition") / "examples/obama.jpg"))
    assert bgr is not None
    return cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]


def test_registry_lists_the_three_backends_with_reasons() -> None:
    assert {"opencv", "onnxruntime", "tensorrt"} <= set(registered_backends())
    rows = {r["name"]: r for r in describe_backends()}
    assert rows["opencv"]["available"] and rows["onnxruntime"]["available"]
    assert rows["tensorrt"]["available"] == (rows["tensorrt"]["reason"] is None)


def test_unknown_backend_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError,
        match=r"engine.backend='cuda' is not a known backend; use one of \['onnxruntime', 'opencv', 'tensorrt'\]",
    ):
        create_backend("cuda")


@pytest.mark.parametrize(
    ("role", "make_input", "tol"),
    [
        ("detector_short", lambda: (_photo(128).astype(np.float32) - 127.5) / 127.5, 2e-3),
        ("detector_full", lambda: (_photo(192).astype(np.float32) - 127.5) / 127.5, 2e-3),
        ("embedder", lambda: _photo(150).astype(np.float32), 1e-4),
    ],
)
def test_opencv_and_onnxruntime_agree(model_dir: Path, role: Role, make_input, tol: float) -> None:
    path = load_manifest(model_dir).path(model_dir, role)
    x = np.ascontiguousarray(make_input().transpose(2, 0, 1)[None])
    results: dict[str, list[np.ndarray]] = {}
    names: dict[str, tuple[list[str], list[str]]] = {}
    for name in ("opencv", "onnxruntime"):
        with create_backend(name).load(path) as session:
            results[name] = session.run({session.input_names[0]: x})
            names[name] = (session.input_names, session.output_names)
    assert names["opencv"] == names["onnxruntime"]
    for a, b in zip(results["opencv"], results["onnxruntime"], strict=True):
        assert a.shape == b.shape
        scale = max(1.0, float(np.abs(b).max()))
        assert float(np.abs(a - b).max()) <= tol * scale
    if role == "embedder":
        a, b = results["opencv"][0].ravel(), results["onnxruntime"][0].ravel()
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99999
