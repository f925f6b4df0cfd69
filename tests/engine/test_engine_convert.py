"""dlib ResNet -> ONNX converter: same descriptors as dlib itself, deterministic, strict parser."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import numpy as np
import onnx
import pytest

from egate.engines.backends.registry import create_backend
from egate.engines.dlib_resnet import (
    INPUT_NAME,
    OUTPUT_NAME,
    DlibFormatError,
    convert_dlib_resnet,
    read_dlib_resnet,
)
from egate.engines.models import load_manifest
from tests.shared_data import shared_data

FACES = [
    "lfw_krasserm/Ariel_Sharon/Ariel_Sharon_0001.jpg",
    "lfw_krasserm/Hugo_Chavez/Hugo_Chavez_0003.jpg",
    "lfw_krasserm/Tony_Blair/Tony_Blair_0005.jpg",
    "orl_att/s7/3.pgm",
    "face_recognition/examples/obama-1080p.jpg",
]


def _dlib_chips(paths: list[Path], predictor_path: Path) -> list[np.ndarray]:
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path))
    chips = []
    for path in paths:
        bgr = cv2.imread(str(path))
        assert bgr is not None, path
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = detector(rgb, 1)
        assert faces, f"dlib finds no face in {path}"
        chips.append(dlib.get_face_chip(rgb, predictor(rgb, faces[0]), 150, 0.25))
    return chips


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_onnx_descriptor_equals_dlib_within_1e_5(model_dir: Path, backend: str) -> None:
    manifest = load_manifest(model_dir)
    faces = shared_data("faces")
    chips = _dlib_chips([faces / f for f in FACES], manifest.path(model_dir, "landmarks5"))
    net = dlib.face_recognition_model_v1(str(manifest.path(model_dir, "embedder_dlib")))
    with create_backend(backend).load(manifest.path(model_dir, "embedder")) as session:
        worst = 0.0
        for chip in chips:
            expected = np.array(net.compute_face_descriptor(chip))
            tensor = chip.transpose(2, 0, 1)[None].astype(np.float32)
            got = session.run({INPUT_NAME: tensor})[0].reshape(-1)
            worst = max(worst, float(np.abs(got - expected).max()))
            assert np.linalg.norm(expected) > 0.5  # a real descriptor, not zeros
    assert worst < 1e-5, f"max abs difference to dlib {worst:.2e}"


def test_conversion_is_deterministic_and_matches_the_cache(model_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(model_dir)
    out = tmp_path / "resnet.onnx"
    convert_dlib_resnet(manifest.path(model_dir, "embedder_dlib"), out)
    assert out.read_bytes() == manifest.path(model_dir, "embedder").read_bytes()


def test_graph_is_static_and_uses_plain_operators(model_dir: Path) -> None:
    model = onnx.load(str(load_manifest(model_dir).path(model_dir, "embedder")))
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 150, 150]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 128]
    ops = [n.op_type for n in model.graph.node]
    # 29 convolutions with the affine layers folded in; no BatchNormalization left.
    assert ops.count("Conv") == 29 and "BatchNormalization" not in ops
    # Zero padding where residual shapes differ: 3 channel pads on the shortcuts (32->64, 64->128,
    # 128->256) and 2 spatial pads of the stride-2 branch (3x3 -> 4x4 in alevel1, 1x1 -> 2x2 in alevel0).
    assert ops.count("Pad") == 5
    assert set(ops) <= {"Sub", "Mul", "Conv", "Relu", "MaxPool", "AveragePool", "Pad", "Add",
                        "GlobalAveragePool", "Flatten", "MatMul"}  # fmt: skip


def test_parser_reads_the_whole_file(model_dir: Path) -> None:
    net = read_dlib_resnet(load_manifest(model_dir).path(model_dir, "embedder_dlib"))
    assert net.size == 150
    assert np.allclose(net.means_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    assert len(net.layers) == 108  # computational layers; the 22 tag/skip layers carry no data


def test_parser_rejects_other_and_truncated_files(model_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(model_dir)
    with pytest.raises(DlibFormatError, match="loss_metric_2"):
        read_dlib_resnet(manifest.path(model_dir, "landmarks5"))  # a shape predictor, not a net
    data = manifest.path(model_dir, "embedder_dlib").read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="ends early"):
        read_dlib_resnet(cut)
