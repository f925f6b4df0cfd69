"""egate.drivers.camera on real sources: the Intel sample GIF, the face_recognition MP4 and image folders
written from LFW faces; loss and reconnect by removing the file/folder under a running camera."""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from egate.drivers.camera import Camera, CameraConfig, CameraState, jetson_csi_pipeline
from tests.shared_data import shared_data

GIF = "video/intel_sample_videos/preview/head-pose-face-detection-female.gif"
MP4 = "video/face_recognition/short_hamilton_clip.mp4"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition until it holds or the deadline passes (the camera's own thread moves it)."""
    done = threading.Event()
    deadline = timeout
    step = 0.01
    while deadline > 0:
        if predicate():
            return True
        done.wait(step)
        deadline -= step
    return predicate()


class StateLog:
    """on_state callback that records transitions and lets a test wait for one."""

    def __init__(self) -> None:
        self.states: list[tuple[CameraState, str | None]] = []
        self._cond = threading.Condition()

    def __call__(self, state: CameraState, error: str | None) -> None:
        with self._cond:
            self.states.append((state, error))
            self._cond.notify_all()

    def wait_for(self, state: CameraState, count: int = 1, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: [s for s, _ in self.states].count(state) >= count, timeout)


def decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


@pytest.fixture
def face_folder(tmp_path: Path) -> Path:
    """A folder of 8 LFW face images (two people), named so that name order is a known sequence."""
    lfw = shared_data("faces/lfw_krasserm")
    folder = tmp_path / "faces"
    folder.mkdir()
    sources = sorted((lfw / "Tony_Blair").glob("*.jpg"))[:4] + sorted((lfw / "Colin_Powell").glob("*.jpg"))[:4]
    for i, src in enumerate(sources):
        shutil.copyfile(src, folder / f"{i:03d}_{src.name}")
    return folder


def test_gif_lockstep_delivers_every_frame_in_order_then_ends() -> None:
    gif = shared_data(GIF)
    expected = decode_all(gif)
    assert len(expected) > 5
    states = StateLog()
    got = []
    with Camera(CameraConfig(kind="file", location=str(gif), pacing="lockstep"), on_state=states) as cam:
        seq = 0
        while (frame := cam.latest(seq, timeout=5.0)) is not None:
            got.append(frame)
            seq = frame.seq
        stats = cam.stats()
    assert [f.seq for f in got] == list(range(1, len(expected) + 1))
    assert all(np.array_equal(f.image, e) for f, e in zip(got, expected, strict=True))
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(got))
    assert stats.state == "ended" and stats.dropped == 0 and stats.delivered == len(expected)
    assert (stats.width, stats.height) == (expected[0].shape[1], expected[0].shape[0])
    assert [s for s, _ in states.states][:3] == ["connecting", "streaming", "ended"]


def test_fast_pacing_keeps_only_the_newest_frame() -> None:
    """Nobody reads while an MP4 plays as fast as it decodes: only the last frame is left, the rest
    count as dropped (no queue grows)."""
    mp4 = shared_data(MP4)
    total = len(decode_all(mp4))
    states = StateLog()
    with Camera(CameraConfig(kind="file", location=str(mp4), pacing="fast"), on_state=states) as cam:
        assert states.wait_for("ended", timeout=60.0)
        frame = cam.latest(None, timeout=1.0)
        assert frame is not None and frame.seq == total
        assert cam.latest(frame.seq, timeout=0.05) is None  # nothing newer will come: ended
        stats = cam.stats()
    assert stats.frames == total
    assert stats.delivered == 1
    assert stats.dropped == total - 1


def test_folder_plays_images_in_name_order(face_folder: Path) -> None:
    files = sorted(face_folder.iterdir())
    with Camera(CameraConfig(kind="folder", location=str(face_folder), pacing="lockstep")) as cam:
        images = []
        seq = 0
        while (frame := cam.latest(seq, timeout=5.0)) is not None:
            images.append(frame.image)
            seq = frame.seq
    assert len(images) == len(files)
    for img, path in zip(images, files, strict=True):
        expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert expected is not None and np.array_equal(img, expected)


def test_realtime_pacing_spaces_frames_by_the_configured_rate(face_folder: Path) -> None:
    cfg = CameraConfig(kind="folder", location=str(face_folder), pacing="realtime", fps=40.0, loop=True)
    stamps: list[float] = []
    with Camera(cfg) as cam:
        seq = 0
        while len(stamps) < 12:
            frame = cam.latest(seq, timeout=5.0)
            assert frame is not None
            stamps.append(frame.timestamp)
            seq = frame.seq
        assert cam.stats().fps > 0
    gaps = np.diff(stamps)
    # Frames are never closer than one period (a lower bound: a busy machine only widens the gaps).
    assert gaps.min() >= 1 / 40.0 * 0.95


def test_folder_removed_and_restored_reconnects(face_folder: Path) -> None:
    states = StateLog()
    cfg = CameraConfig(
        kind="folder",
        location=str(face_folder),
        pacing="realtime",
        fps=100.0,
        loop=True,
        reconnect_initial_s=0.02,
        reconnect_max_s=0.1,
    )
    away = face_folder.with_name("unplugged")
    with Camera(cfg, on_state=states) as cam:
        first = cam.latest(None, timeout=5.0)
        assert first is not None
        face_folder.rename(away)
        assert states.wait_for("reconnecting")
        assert wait_until(lambda: cam.stats().reconnect_attempts >= 2)
        assert cam.stats().state == "reconnecting"
        assert "no such folder" in (cam.stats().last_error or "")
        away.rename(face_folder)
        assert states.wait_for("streaming", count=2)
        before = cam.stats().frames
        later = cam.latest(before, timeout=5.0)
        assert later is not None and later.seq > first.seq  # seq continues across the reconnect
        assert cam.stats().reconnects == 1
    assert cam.stats().state == "closed"


def test_looping_file_removed_is_lost_at_the_loop_point_and_comes_back(tmp_path: Path) -> None:
    gif = tmp_path / "clip.gif"
    shutil.copyfile(shared_data(GIF), gif)
    states = StateLog()
    cfg = CameraConfig(
        kind="file", location=str(gif), pacing="fast", loop=True, reconnect_initial_s=0.02, reconnect_max_s=0.1
    )
    with Camera(cfg, on_state=states) as cam:
        assert cam.latest(None, timeout=5.0) is not None
        hidden = gif.rename(tmp_path / "hidden.gif")
        assert states.wait_for("reconnecting")
        assert "no such video file" in (cam.stats().last_error or "")
        hidden.rename(gif)
        assert states.wait_for("streaming", count=2)
        assert cam.stats().reconnects == 1


def test_missing_source_keeps_retrying_and_reports_why(tmp_path: Path) -> None:
    states = StateLog()
    cfg = CameraConfig(kind="file", location=str(tmp_path / "nope.mp4"), reconnect_initial_s=0.01, reconnect_max_s=0.02)
    with Camera(cfg, on_state=states) as cam:
        assert cam.latest(None, timeout=0.05) is None
        assert wait_until(lambda: cam.stats().reconnect_attempts >= 3)
    stats = cam.stats()
    assert stats.state == "closed"
    assert stats.frames == 0
    assert "nope.mp4" in (stats.last_error or "")
    assert "streaming" not in [s for s, _ in states.states]


@pytest.mark.parametrize(
    ("kind", "location", "needle"),
    [
        ("v4l2", "/dev/video9", "could not open v4l2"),
        ("gstreamer", "videotestsrc ! videoconvert ! appsink", "GStreamer"),
    ],
)
def test_unavailable_devices_are_reported_not_raised(kind: str, location: str, needle: str) -> None:
    """No /dev/video* here and the PyPI OpenCV has no GStreamer: the camera says so and keeps trying."""
    if kind == "gstreamer" and "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    cfg = CameraConfig(kind=kind, location=location, reconnect_initial_s=0.01, reconnect_max_s=0.02)  # type: ignore[arg-type]
    with Camera(cfg) as cam:
        assert wait_until(lambda: cam.stats().reconnect_attempts >= 1)
        assert needle in (cam.stats().last_error or "")


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "rtsp", "location": "rtsp://admin:secret@10.0.0.5/stream"},
        {"kind": "rtsp", "location": "http://10.0.0.5/stream"},
        {"kind": "file", "location": "a.mp4", "credential": "cam_password"},
        {"kind": "gstreamer", "location": "videotestsrc ! fakesink"},
        {"kind": "v4l2", "location": "video0"},
        {"kind": "file", "location": "a.mp4", "width": 640},
        {"kind": "file", "location": "a.mp4", "reconnect_initial_s": 5, "reconnect_max_s": 1},
        {"kind": "file", "location": "a.mp4", "surprise": 1},
        {"kind": "file", "location": "a.mp4", "fourcc": "MJPEG"},
    ],
)
def test_config_rejects_mistakes(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CameraConfig.model_validate(fields)


def test_config_accepts_sources() -> None:
    CameraConfig()
    CameraConfig(kind="v4l2", location="/dev/video0", width=1280, height=720, fps=30, fourcc="MJPG")
    CameraConfig(kind="rtsp", location="rtsp://10.0.0.5:554/stream1", credential="lane_camera")
    CameraConfig(kind="gstreamer", location=jetson_csi_pipeline(0, 1280, 720, 30))
    with pytest.raises(ValueError, match="credential"):
        Camera(CameraConfig(kind="rtsp", location="rtsp://10.0.0.5/s", credential="lane_camera"))
