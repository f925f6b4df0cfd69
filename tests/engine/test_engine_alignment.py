"""Face chips equal dlib's get_face_chip; the 5-point predictor is seeded with a dlib-framed box."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from egate.engines.alignment import face_chip, face_chip_details, pyramid_down_rgb
from egate.engines.backends.base import Session
from egate.engines.backends.registry import create_backend
from egate.engines.embedder import Embedder
from egate.engines.landmarks import BoxMapping, LandmarkPredictor, fit_box_mapping, map_detector_box
from egate.engines.models import load_manifest
from tests.shared_data import shared_data

IMAGES = [
    "lfw_krasserm/Colin_Powell/Colin_Powell_0002.jpg",
    "lfw_krasserm/Vladimir_Putin/Vladimir_Putin_0004.jpg",
    "orl_att/s12/5.pgm",  # 92x112 grey: chip larger than the face region (upsampling)
    "face_recognition/examples/obama-1080p.jpg",  # face region larger than the chip: pyramid
    "face_recognition/examples/biden.jpg",  # 970x2204: two pyramid levels
    "face_recognition/examples/two_people.jpg",
]


@pytest.fixture(scope="module")
def dlib_parts(model_dir: Path) -> tuple[dlib.fhog_object_detector, dlib.shape_predictor]:
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(load_manifest(model_dir).path(model_dir, "landmarks5"))),
    )


@pytest.fixture(scope="module")
def embed_session(model_dir: Path) -> Iterator[Session]:
    with create_backend("onnxruntime").load(load_manifest(model_dir).path(model_dir, "embedder")) as s:
        yield s


def _rgb(relative: str) -> np.ndarray:
    image = cv2.imread(str(shared_data("faces") / relative))
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _dlib_shape(parts: tuple, rgb: np.ndarray) -> dlib.full_object_detection:
    detector, predictor = parts
    faces = detector(rgb, 1)
    assert faces
    return predictor(rgb, max(faces, key=lambda r: r.area()))


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


@pytest.mark.parametrize("relative", IMAGES)
def test_chip_equals_dlib_get_face_chip(dlib_parts: tuple, relative: str) -> None:
    rgb = _rgb(relative)
    shape = _dlib_shape(dlib_parts, rgb)
    expected = dlib.get_face_chip(rgb, shape, 150, 0.25)
    got = face_chip(rgb, _points(shape))
    assert got.shape == (150, 150, 3) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - expected.astype(int))
    # Byte-exact in practice; allow a rare 1-level rounding flip from float order of operations.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_chip_details_match_dlib(dlib_parts: tuple) -> None:
    rgb = _rgb("face_recognition/examples/obama.jpg")
    shape = _dlib_shape(dlib_parts, rgb)
    ref = dlib.get_face_chip_details(shape, 150, 0.25)
    got = face_chip_details(_points(shape), 150, 0.25)
    assert got.angle == pytest.approx(ref.angle, abs=1e-9)
    assert (got.left, got.top, got.right, got.bottom) == pytest.approx(
        (ref.rect.left(), ref.rect.top(), ref.rect.right(), ref.rect.bottom()), abs=1e-6
    )


@pytest.mark.slow
def test_descriptors_from_our_chip_match_dlib_chip_and_beat_a_naive_warp(
    dlib_parts: tuple, embed_session: Session
) -> None:
    embedder = Embedder(embed_session)
    ours, naive = [], []
    for relative in IMAGES:
        rgb = _rgb(relative)
        shape = _dlib_shape(dlib_parts, rgb)
        reference = embedder.embed(dlib.get_face_chip(rgb, shape, 150, 0.25))
        ours.append(np.linalg.norm(embedder.embed(face_chip(rgb, _points(shape))) - reference))
        # The naive alternative: one warpAffine with dlib's similarity transform, no pyramid.
        d = face_chip_details(_points(shape))
        scale = (d.right - d.left + 1) / 150
        ca, sa = np.cos(d.angle) * scale, np.sin(d.angle) * scale
        cx, cy = (d.left + d.right) / 2, (d.top + d.bottom) / 2
        m = np.array([[ca, -sa, cx - ca * 74.5 + sa * 74.5], [sa, ca, cy - sa * 74.5 - ca * 74.5]])
        warped = cv2.warpAffine(rgb, m, (150, 150), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        naive.append(np.linalg.norm(embedder.embed(warped) - reference))
    assert max(ours) < 0.01, ours
    assert max(naive) > max(ours)


def test_pyramid_halves_with_dlib_sizes() -> None:
    image = np.full((101, 60, 3), 200, np.uint8)
    down = pyramid_down_rgb(image)
    assert down.shape == ((101 - 3) // 2, (60 - 3) // 2, 3)
    assert (down == 200).all()  # the [1 4 6 4 1]^2 / 256 kernel preserves a flat image
    assert pyramid_down_rgb(np.zeros((8, 50, 3), np.uint8)).size == 0


def test_fit_box_mapping_recovers_a_known_mapping() -> None:
    rng = np.random.default_rng(1)
    x1 = rng.uniform(0, 500, 50)
    y1 = rng.uniform(0, 500, 50)
    w = rng.uniform(60, 300, 50)
    boxes = np.stack([x1, y1, x1 + w, y1 + w], axis=1)
    true = BoxMapping(dx=0.05, dy=-0.1, side=0.9, use_keypoints=False)
    dlib_boxes = np.array([true.apply(b) for b in boxes], dtype=np.float64)
    fitted = fit_box_mapping(boxes, None, dlib_boxes)
    assert fitted.dx == pytest.approx(0.05, abs=0.01)
    assert fitted.dy == pytest.approx(-0.1, abs=0.01)
    assert fitted.side == pytest.approx(0.9, abs=0.01)


def test_mapped_box_is_square_and_inclusive() -> None:
    left, top, right, bottom = map_detector_box((100.0, 120.0, 200.0, 220.0))
    assert right - left == bottom - top
    assert right - left + 1 == pytest.approx(98, abs=1)  # side 0.9832 of the 100 px box


def test_landmarks_from_a_mapped_blazeface_box_agree_with_hog(model_dir: Path, dlib_parts: tuple) -> None:
    from egate.engines.detector import BlazeFaceDetector

    manifest = load_manifest(model_dir)
    predictor = LandmarkPredictor(manifest.path(model_dir, "landmarks5"))
    errors_mapped, errors_raw = [], []
    with create_backend("onnxruntime").load(manifest.path(model_dir, "detector_short")) as session:
        detector = BlazeFaceDetector(session, "short")
        for person in sorted(shared_data("faces/lfw_krasserm").iterdir())[:10]:
            if not person.is_dir():
                continue
            rgb = _rgb(f"lfw_krasserm/{person.name}/{person.name}_0001.jpg")
            reference = _points(_dlib_shape(dlib_parts, rgb))
            iod = np.linalg.norm(reference[0] - reference[2])
            det = max(detector.detect(rgb), key=lambda d: d.width)
            mapped = predictor.predict(rgb, map_detector_box(det.box_xyxy, det.keypoints6))
            raw = predictor.predict(rgb, tuple(round(v) for v in det.box_xyxy))  # type: ignore[arg-type]
            errors_mapped.append(np.abs(mapped - reference).max() / iod)
            errors_raw.append(np.abs(raw - reference).max() / iod)
    assert np.median(errors_mapped) < 0.05
    assert np.mean(errors_mapped) <= np.mean(errors_raw)


def test_the_68_point_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-commercial"):
        LandmarkPredictor(tmp_path / "shape_predictor_68_face_landmarks.dat")
