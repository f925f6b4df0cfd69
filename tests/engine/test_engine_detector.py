"""BlazeFace detector on real photos: faces found where dlib's own detector finds them, none in blanks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from egate.engines.backends.registry import create_backend
from egate.engines.detector import BlazeFaceDetector, Variant, ssd_anchors, weighted_nms
from egate.engines.models import Role, load_manifest
from tests.shared_data import shared_data

ONE_FACE = [
    "examples/obama.jpg",
    "examples/biden.jpg",  # 970x2204: a large photo
    "examples/alex-lacamoire.png",  # RGBA
    "examples/lin-manuel-miranda.png",
    "examples/obama-480p.jpg",
    "examples/obama_small.jpg",
]
ROLES: dict[Variant, Role] = {"short": "detector_short", "full": "detector_full"}


@pytest.fixture(scope="module", params=["short", "full"])
def detector(request: pytest.FixtureRequest, model_dir: Path) -> Iterator[BlazeFaceDetector]:
    variant: Variant = request.param
    path = load_manifest(model_dir).path(model_dir, ROLES[variant])
    with create_backend("onnxruntime").load(path) as session:
        yield BlazeFaceDetector(session, variant)


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


@pytest.fixture(scope="module")
def hog() -> dlib.fhog_object_detector:
    return dlib.get_frontal_face_detector()


def test_anchor_grids_match_the_model_outputs() -> None:
    assert ssd_anchors(128, (8, 16, 16, 16)).shape == (896, 2)
    assert ssd_anchors(192, (4,)).shape == (2304, 2)
    a = ssd_anchors(128, (8, 16, 16, 16))
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])  # 2 anchors per cell
    assert np.allclose(a[512], [0.5 / 8, 0.5 / 8]) and np.allclose(a[512:518], a[512])  # 6 per cell


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[1] += 1
    scores = np.array([0.9, 0.3, 0.8], np.float32)
    out = weighted_nms(boxes, kps, scores)
    assert [round(s, 2) for _, _, s in out] == [0.9, 0.8]
    merged_box, merged_kps, _ = out[0]
    assert np.allclose(merged_box, [0.25, 0.25, 10.25, 10.25])  # weights 0.9 and 0.3
    assert np.allclose(merged_kps, 0.25)
    assert np.allclose(out[1][0], boxes[2])


@pytest.mark.parametrize("name", ONE_FACE)
def test_real_face_found_where_dlib_finds_it(
    detector: BlazeFaceDetector, hog: dlib.fhog_object_detector, name: str
) -> None:
    path = shared_data("faces/face_recognition") / name
    rgb = _rgb(path)
    faces = detector.detect(rgb)
    assert faces, f"{detector.variant}: no face in {name}"
    best = faces[0]
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = best.box_xyxy
    assert -0.05 * w <= x1 < x2 <= 1.05 * w and -0.05 * h <= y1 < y2 <= 1.05 * h
    assert best.score >= 0.7
    # An independent reference: dlib's HOG detector on the same photo (upsampled once for small ones).
    reference = hog(np.ascontiguousarray(rgb[:, :, :3]), 1 if max(h, w) < 1000 else 0)
    assert reference, f"dlib found no face in {name}"
    r = max(reference, key=lambda d: d.area())
    ref_box = (r.left(), r.top(), r.right(), r.bottom())
    assert _iou(best.box_xyxy, ref_box) > 0.4, (best.box_xyxy, ref_box)
    # Keypoints: the right eye (subject's) is at smaller x, both eyes above the mouth, inside the box.
    right_eye, left_eye, nose, mouth = best.keypoints6[:4]
    assert right_eye[0] < nose[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    assert x1 <= right_eye[0] <= x2 and y1 <= mouth[1] <= y2


def test_two_people_are_both_reported(detector: BlazeFaceDetector) -> None:
    faces = detector.detect(_rgb(shared_data("faces/face_recognition") / "examples/two_people.jpg"))
    assert len(faces) == 2
    assert abs(faces[0].box_xyxy[0] - faces[1].box_xyxy[0]) > 200  # side by side, not one face twice


@pytest.mark.parametrize("fill", [0, 128, 255])
def test_no_face_in_blank_images(detector: BlazeFaceDetector, fill: int) -> None:
    assert detector.detect(np.full((480, 640, 3), fill, np.uint8)) == []


def test_no_face_in_noise(detector: BlazeFaceDetector) -> None:
    noise = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_grey_tight_crops_found_with_padding(detector: BlazeFaceDetector) -> None:
    # ORL/AT&T: 92x112 greyscale, the face fills the frame (like a document portrait).
    root = shared_data("faces/orl_att")
    files = sorted(root.glob("s*/1.pgm"))[:10]
    assert files
    found = 0
    for f in files:
        grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        assert grey is not None
        faces = detector.detect(grey, pad=0.25)
        if faces:
            found += 1
            x1, _, x2, _ = faces[0].box_xyxy
            # The face fills the crop: its box is most of the image width, centred.
            assert 0.4 * grey.shape[1] < x2 - x1 < 1.3 * grey.shape[1]
            assert 0.2 * grey.shape[1] < (x1 + x2) / 2 < 0.8 * grey.shape[1]
    assert found >= 9


def test_letterbox_maps_a_point_back_to_the_source(detector: BlazeFaceDetector) -> None:
    image = np.zeros((300, 500, 3), np.uint8)
    cv2.circle(image, (400, 220), 12, (255, 255, 255), -1)
    tensor, scale, ox, oy = detector.preprocess(image)
    assert tensor.shape == (1, 3, detector.input_size, detector.input_size)
    bright = np.argwhere(tensor[0, 0] > 0.5)
    cy, cx = bright.mean(axis=0)
    assert (cx - ox) / scale == pytest.approx(400, abs=4)
    assert (cy - oy) / scale == pytest.approx(220, abs=4)
    assert tensor.min() == -1.0  # black letterbox in MediaPipe's [-1, 1] input range
