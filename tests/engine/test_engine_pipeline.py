"""FaceEngine on real photos: faces found, same person closer than others, ops-photo cases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from egate.engines.config import EngineConfig
from egate.engines.pipeline import FaceEngine, FaceObservation
from tests.shared_data import shared_data


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[FaceEngine]:
    with FaceEngine.from_config(EngineConfig(), model_dir) as eng:
        yield eng


def _bgr(relative: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    image = cv2.imread(str(shared_data("faces") / relative), flags)
    assert image is not None, relative
    return image


def _enrolled(engine: FaceEngine, image: np.ndarray) -> FaceObservation:
    obs = engine.enroll(image)
    assert obs is not None
    return obs


def test_one_face_with_every_field(engine: FaceEngine) -> None:
    (obs,) = engine.analyze(_bgr("face_recognition/examples/obama.jpg"))
    assert obs.descriptor.shape == (128,) and obs.descriptor.dtype == np.float32
    assert obs.landmarks5.shape == (5, 2)
    x1, y1, x2, y2 = obs.box_xyxy
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in obs.landmarks5)  # points inside the face
    assert obs.det_score > 0.5
    assert obs.model_id == engine.model_id and engine.model_id.startswith("dlib-resnet-v1.")
    assert obs.quality.eye_distance_px > 20
    assert set(obs.timings_ms) >= {"detect", "landmarks", "align", "embed"}
    assert "descriptor" not in repr(obs)  # a template must not end up in logs via repr


def test_two_faces_reported_largest_first(engine: FaceEngine) -> None:
    observations = engine.analyze(_bgr("face_recognition/examples/two_people.jpg"))
    assert len(observations) == 2
    assert observations[0].area >= observations[1].area
    # Two different people: their descriptors are far apart.
    assert engine.distance(observations[0], observations[1]) > engine.threshold


def test_same_person_closer_than_different_people(engine: FaceEngine) -> None:
    obama = _enrolled(engine, _bgr("face_recognition/examples/obama.jpg"))
    obama2 = _enrolled(engine, _bgr("face_recognition/examples/obama2.jpg"))
    biden = _enrolled(engine, _bgr("face_recognition/examples/biden.jpg"))
    same = engine.distance(obama, obama2)
    assert same < engine.threshold
    assert same < engine.distance(obama, biden)
    assert engine.distance(obama2, biden) > engine.threshold


def test_lfw_identities_rank_correctly(engine: FaceEngine) -> None:
    root = shared_data("faces/lfw_krasserm")
    people = sorted(p.name for p in root.iterdir() if p.is_dir())[:4]
    desc = {
        (who, i): _enrolled(engine, _bgr(f"lfw_krasserm/{who}/{who}_000{i}.jpg")).descriptor
        for who in people
        for i in (1, 2)
    }
    for who in people:
        same = np.linalg.norm(desc[(who, 1)] - desc[(who, 2)])
        others = [np.linalg.norm(desc[(who, 1)] - desc[(o, 2)]) for o in people if o != who]
        assert same < min(others), who


def test_grayscale_photo(engine: FaceEngine) -> None:
    colour = _enrolled(engine, _bgr("face_recognition/examples/obama.jpg"))
    grey = _enrolled(engine, _bgr("face_recognition/examples/obama.jpg", cv2.IMREAD_GRAYSCALE))
    other = _enrolled(engine, _bgr("face_recognition/examples/obama2.jpg", cv2.IMREAD_GRAYSCALE))
    assert engine.distance(colour, grey) < engine.threshold
    assert engine.distance(grey, other) < engine.threshold
    # A native one-channel scan (ORL, 92x112 PGM) works too.
    assert engine.enroll(_bgr("orl_att/s1/1.pgm", cv2.IMREAD_UNCHANGED)) is not None


def test_tight_crop_where_the_face_fills_the_image(engine: FaceEngine) -> None:
    image = _bgr("face_recognition/examples/obama.jpg")
    full = _enrolled(engine, image)
    x1, y1, x2, y2 = (round(v) for v in full.box_xyxy)
    crop = np.ascontiguousarray(image[max(y1, 0) : y2, max(x1, 0) : x2])
    tight = _enrolled(engine, crop)
    assert engine.distance(full, tight) < engine.threshold


def test_large_photo(engine: FaceEngine) -> None:
    image = _bgr("face_recognition/examples/obama.jpg")
    normal = _enrolled(engine, image)
    big = cv2.resize(image, None, fx=4.0, fy=4.0, interpolation=cv2.INTER_CUBIC)  # ~3600x4500
    large = _enrolled(engine, big)
    assert max(big.shape[:2]) > 3000
    # Landmarks are on the full-resolution image: 4x the coordinates of the original.
    assert np.abs(large.landmarks5 / 4 - normal.landmarks5).max() < 6
    assert engine.distance(normal, large) < 0.25


def test_no_face_gives_nothing(engine: FaceEngine) -> None:
    blank = np.full((480, 640, 3), 128, np.uint8)
    assert engine.analyze(blank) == []
    assert engine.enroll(blank) is None
