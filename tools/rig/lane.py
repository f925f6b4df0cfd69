"""A complete local lane in a work folder: the real daemon (`egate run`) with every part around it.

`LaneRig` starts, in order:

1. a local mosquitto on a free loopback port (`egate.tools.rig.local_broker.Mosquitto`);
2. the OSDP turnstile simulator (`egate.tools.sim.osdp_gate.TurnstileSimulator`) on a PTY, secure channel
   with a random SCBK, reachable through a stable symlink (`<work>/turnstile.tty`);
3. the credentials folder (`turnstile.scbk`, `gallery.key`, `subject-id.key`);
4. an ops signing key (`egate ops keys new`) installed into the gate's trust store
   (`egate ops keys install --trust-dir <state>/trust`) and a signed gallery bundle built with
   `egate ops gallery build` from enrolment photos cut out of the demo clip (the photos live only in
   the work folder);
5. the daemon config (TOML) and `egate run` as a subprocess (JSON logs to `<work>/daemon.log`,
   stderr, where libosdp writes, to `<work>/daemon.stderr`);
6. an MQTT collector (a persistent-session paho client, so nothing is lost over broker restarts)
   that keeps every outcome, event, status, health and ack the gate publishes.

It waits through the control socket until the lane is in service (camera streaming an empty scene,
engine loaded, turnstile link up), pushes the gallery with `egate ops push`, waits for the `applied`
ack, and then plays the lane source (`play()`): frames derived from the demo clips, written as
images into a scene folder the camera reads through a symlink (`camera_path`). Removing that
symlink is a lost camera; putting it back restores it.

Everything waits on conditions with deadlines; nothing sleeps blindly.

    with LaneRig(tmp_path / "rig", plan=["female", 30]) as rig:
        [record] = rig.wait_outcomes(1, timeout=20)

The demo media are Intel's IoT DevKit preview clips (CC-BY-4.0, tools/demo/media/ATTRIBUTION.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from egate.tools.config.toml_writer import to_toml
from egate.tools.paths import DEMO_CONFIG, DEMO_MEDIA, checkout_root
from egate.tools.rig.local_service import terminate_with_parent
from egate.tools.rig.mqtt_recorder import MqttRecorder, Received

if TYPE_CHECKING:  # numpy and OpenCV load inside the functions: `egate --help` stays fast
    import numpy as np

ENROLMENT_CLIP = "head-pose-face-detection-female-and-male.gif"
EGATE = [sys.executable, "-m", "egate.tools.cli"]

# The lane camera the scenes simulate: 640x480 at the clips' own 12.5 fps.
FRAME_SIZE = (640, 480)
CLIP_FPS = 12.5
# Idle frame kept in every scene folder under a name that sorts last (see `_SceneFolder`).
IDLE_NAME = "zz-idle.jpg"
JPEG_QUALITY = 95

# The demo lane's identity is config/demo.toml's (the docs name it): one place, no second pair of ids.
_DEMO_GATE = tomllib.loads(DEMO_CONFIG.read_text())["gate"]
SITE = str(_DEMO_GATE["site_id"])
GATE = str(_DEMO_GATE["gate_id"])
STOP_BUDGET_S = 5.0  # systemd's TimeoutStopSec for egate.service: the daemon must be gone by then


class RigError(RuntimeError):
    """The rig could not bring a part up; the message carries the daemon's last log lines."""


# ------------------------------------------------------------------------------------------------
# Demo media: enrolment photos and lane scenes derived from the GIFs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One traveller's appearance in front of the lane camera, cut from a demo GIF.

    `crop` is (centre x, centre y, width) in the GIF's pixels: the lane camera is framed on the lane,
    closer than the preview clip (4:3, scaled to FRAME_SIZE); None shows the whole GIF letterboxed
    (the person stands far away). `frames` is the [start, stop) range of GIF frames used.
    """

    file: str
    crop: tuple[float, float, float] | None
    frames: tuple[int, int] | None
    label: str
    expect: str  # what the lane should decide, for the demo's table


CLIPS: dict[str, Clip] = {
    # The same woman as the left person of the enrolment clip; looks at the camera in frames 9, 18, 19.
    "female": Clip("head-pose-face-detection-female.gif", (222, 112, 240), None, "traveller 1 (enrolled)", "ACCEPT"),
    # The same man as the right person of the enrolment clip; frontal throughout, so ~1 s is plenty.
    "male": Clip("head-pose-face-detection-male.gif", (247, 103, 240), (0, 15), "traveller 2 (enrolled)", "ACCEPT"),
    # The woman with glasses on the right of the walking clip: not enrolled. Walks in (blurred), pauses.
    "stranger": Clip("face-demographics-walking-and-pause.gif", (370, 132, 200), (0, 25), "stranger", "REFER"),
    # Two people of the walking clip side by side at the gate.
    "group": Clip("face-demographics-walking-and-pause.gif", (295, 117, 260), None, "two at once", "REFER"),
    # The expected man, standing far back: his face never passes the size gate.
    "far": Clip("head-pose-face-detection-male.gif", None, (0, 40), "too far away", "REFER"),
}

# A plan is a sequence of clip names and gap lengths (int: frames of an empty lane).
PlanItem = str | int
DEMO_PLAN: tuple[PlanItem, ...] = (12, "female", 30, "male", 30, "stranger", 30, "group", 30)


@functools.lru_cache(maxsize=8)
def read_clip(name: str) -> tuple[np.ndarray, ...]:
    """Every frame of a demo GIF (BGR)."""
    import cv2

    path = DEMO_MEDIA / name
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise RigError(f"demo clip {path} gave no frames: is tools/demo/media complete?")
    return tuple(frames)


def _frame_of(image: np.ndarray, crop: tuple[float, float, float] | None) -> np.ndarray:
    import cv2
    import numpy as np

    out_w, out_h = FRAME_SIZE
    height, width = image.shape[:2]
    if crop is None:  # letterbox the whole picture
        scale = min(out_w / width, out_h / height)
        resized = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.full((out_h, out_w, 3), 96, np.uint8)
        y0 = (out_h - resized.shape[0]) // 2
        x0 = (out_w - resized.shape[1]) // 2
        canvas[y0 : y0 + resized.shape[0], x0 : x0 + resized.shape[1]] = resized
        return canvas
    cx, cy, w = crop
    h = w * out_h / out_w
    x0 = round(min(max(cx - w / 2, 0), width - w))
    y0 = round(min(max(cy - h / 2, 0), height - h))
    cut = image[y0 : y0 + round(h), x0 : x0 + round(w)]
    return cv2.resize(cut, FRAME_SIZE, interpolation=cv2.INTER_CUBIC)


def clip_frames(name: str) -> list[np.ndarray]:
    clip = CLIPS[name]
    frames = read_clip(clip.file)
    start, stop = clip.frames or (0, len(frames))
    return [_frame_of(f, clip.crop) for f in frames[start:stop]]


def empty_frame() -> np.ndarray:
    """An empty lane: a plain wall with a little shading (no face, nothing for the detector)."""
    import numpy as np

    out_w, out_h = FRAME_SIZE
    ramp = np.linspace(120, 92, out_h, dtype=np.float32)[:, None]
    grey = np.repeat(ramp, out_w, axis=1).astype(np.uint8)
    return np.dstack([grey, grey, grey])


@dataclass(frozen=True)
class Span:
    """Where one traveller appears in a scene: frames [first, last] (0-based, inclusive)."""

    name: str
    label: str
    expect: str
    first: int
    last: int


@dataclass(frozen=True)
class Scene:
    folder: Path
    frames: int  # frames of the plan (without the idle tail)
    spans: tuple[Span, ...]
    fps: float = CLIP_FPS

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    @property
    def travellers(self) -> int:
        return len(self.spans)

    def span_at(self, offset_s: float, *, loop: bool = False) -> Span | None:
        """The traveller on camera `offset_s` after the scene started (sessions start on a traveller's
        first frames, so a little slack after the span's end is allowed)."""
        frame = offset_s * self.fps
        if loop and self.frames:
            frame %= self.frames
        for span in self.spans:
            if span.first - 3 <= frame <= span.last + 3:
                return span
        return None


def write_scene(folder: Path, plan: Iterable[PlanItem], *, tail_frames: int = 0) -> Scene:
    """Write `plan` as numbered JPEGs (`f-000000.jpg`...), `tail_frames` empty frames after it and the
    idle frame `IDLE_NAME`. Empty frames are hard links of one file, so a long tail costs nothing."""
    import cv2

    folder.mkdir(parents=True, exist_ok=False)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    blank = folder / IDLE_NAME
    cv2.imwrite(str(blank), empty_frame(), params)
    index = 0
    spans: list[Span] = []

    def gap(n: int) -> None:
        nonlocal index
        for _ in range(n):
            os.link(blank, folder / f"f-{index:06d}.jpg")
            index += 1

    for item in plan:
        if isinstance(item, int):
            if item < 0:
                raise ValueError(f"a gap must be >= 0 frames, got {item}")
            gap(item)
            continue
        if item not in CLIPS:
            raise ValueError(f"unknown clip {item!r}: use one of {', '.join(CLIPS)} or a gap length")
        first = index
        for image in clip_frames(item):
            cv2.imwrite(str(folder / f"f-{index:06d}.jpg"), image, params)
            index += 1
        spans.append(Span(item, CLIPS[item].label, CLIPS[item].expect, first, index - 1))
    plan_frames = index
    gap(tail_frames)
    return Scene(folder, plan_frames, tuple(spans))


def write_enrolment_photos(
    folder: Path, *, every: int = 3, subject_ids: tuple[str, str] = ("subject-0001", "subject-0002")
) -> dict[str, int]:
    """Enrolment photos for `egate ops gallery build --photos`: one sub-folder per subject.

    The enrolment clip shows both expected travellers side by side (the woman left, the man right,
    never crossing the middle): each frame is split at the middle and each half is one subject's photo.
    Subject ids are opaque (as ops would send: never names)."""
    import cv2

    frames = read_clip(ENROLMENT_CLIP)
    counts: dict[str, int] = {}
    for subject, side in ((subject_ids[0], 0), (subject_ids[1], 1)):
        target = folder / subject
        target.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames[::every]):
            half = frame.shape[1] // 2
            photo = frame[:, :half] if side == 0 else frame[:, half:]
            cv2.imwrite(str(target / f"{i:03d}.png"), photo)
        counts[subject] = len(frames[::every])
    return counts


# ------------------------------------------------------------------------------------------------
# Ops material: signing key and signed gallery (built once, reusable by many rigs)
# ------------------------------------------------------------------------------------------------


def run_egate(args: Sequence[str], *, timeout: float = 300.0, env: Mapping[str, str] | None = None) -> str:
    """Run an `egate` command; its stdout, or RigError with its stderr."""
    proc = subprocess.run(
        [*EGATE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=checkout_root(),
        env={**os.environ, **(env or {})},
        check=False,
    )
    if proc.returncode != 0:
        raise RigError(
            f"egate {' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}"
        )
    return proc.stdout


@dataclass(frozen=True)
class OpsMaterial:
    key: Path  # private PEM
    public: Path  # .pub.json for `egate ops keys install`
    key_id: str
    gallery: Path  # signed gallery bundle
    subjects: int
    templates: int


def prepare_ops(
    folder: Path,
    *,
    model_dir: Path | None = None,
    scope: str = "*",
    subject_ids: tuple[str, str] = ("subject-0001", "subject-0002"),
    subject_flights: Mapping[str, str] | None = None,
) -> OpsMaterial:
    """Make an ops key and a signed gallery of the two expected travellers (photos stay in `folder`).

    `subject_ids`: the woman's and the man's gallery ids (entry/boarding tests derive them from a document
    or boarding pass with egate.edge.lane.adapters.HashedSubjectLookup). `subject_flights`: subject id -> the
    flight it is enrolled for (untagged when absent)."""
    from egate.engines.models import default_model_dir

    folder.mkdir(parents=True, exist_ok=True)
    keys = json.loads(
        run_egate(["ops", "keys", "new", "--out", str(folder / "keys"), "--comment", "lane rig", "--json"])
    )
    photos = folder / "enrolment-photos"
    write_enrolment_photos(photos, subject_ids=subject_ids)
    out = folder / "gallery.egb"
    built = json.loads(
        run_egate(
            [
                "ops", "gallery", "build",
                "--photos", str(photos),
                "--out", str(out),
                "--signing-key", keys["private_key"],
                "--scope", scope,
                "--expires", "24h",
                "--model-dir", str(model_dir or default_model_dir()),
                "--ids-as-given",  # the tests derive the ids themselves (egate.edge.lane.adapters.HashedSubjectLookup)
                *[arg for sid, fl in (subject_flights or {}).items() for arg in ("--subject-flight", f"{sid}={fl}")],
                "--json",
            ]
        )
    )  # fmt: skip
    return OpsMaterial(
        key=Path(keys["private_key"]),
        public=Path(keys["public_key"]),
        key_id=keys["key_id"],
        gallery=out,
        subjects=int(built["subjects"]),
        templates=int(built["templates"]),
    )


# ------------------------------------------------------------------------------------------------
# MQTT collector: what central ops would see
# ------------------------------------------------------------------------------------------------


class MqttCollector(MqttRecorder):
    """Subscribes to everything one gate publishes, with a persistent session (fixed client id,
    session expiry) so messages published while the collector is away are queued by the broker.
    Delivery is at least once: outcomes and events are kept once per envelope id."""

    def __init__(self, host: str, port: int, site: str, gate: str, *, prefix: str = "egate/v1") -> None:
        self.site, self.gate, self.prefix = site, gate, prefix
        self._root = f"{prefix}/{site}/{gate}/"
        self._seen_ids: set[str] = set()
        self.duplicates = 0
        super().__init__(
            host,
            port,
            self._root + "#",
            client_id=f"lane-rig-{uuid.uuid4().hex[:10]}",
            session_expiry_s=3600,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        )

    def keep(self, message: Received) -> bool:
        payload = message.payload
        if message.topic[len(self._root) :] in ("outcome", "event") and isinstance(payload, dict):
            envelope_id = str(payload.get("id"))
            if envelope_id in self._seen_ids:
                self.duplicates += 1
                return False
            self._seen_ids.add(envelope_id)
        return True

    # ---- views ----------------------------------------------------------------------------------

    def of(self, topic: str) -> list[Received]:
        """Messages on `<prefix>/<site>/<gate>/<topic>`."""
        with self._cond:
            return [m for m in self.messages if m.topic == self._root + topic]

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [m.payload for m in self.of("outcome")]

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every outcome record (the envelope's payload), in arrival order: decision and passage records."""
        return [m.payload["payload"] for m in self.of("outcome")]

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        """Finished sessions, in arrival order: a referral's decision record, an ACCEPT's passage record
        (it repeats the decision and adds the turnstile's result). An ACCEPT still passing is not here."""
        return [r for r in self.records if r.get("record") == "passage" or r.get("decision") != "accept"]

    @property
    def events(self) -> list[dict[str, Any]]:
        """EventPayloads, in arrival order."""
        return [m.payload["payload"] for m in self.of("event")]

    def wait_outcomes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        return self.wait_for(
            lambda: self.outcomes if len(self.outcomes) >= n else None, timeout, f"{n} outcome(s) over MQTT"
        )

    def wait_event(self, kind: str, timeout: float, **details: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for ev in self.events:
                if ev.get("type") == kind and all(ev.get("details", {}).get(k) == v for k, v in details.items()):
                    return ev
            return None

        return self.wait_for(find, timeout, f"event {kind} {details or ''} over MQTT")


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------
# The rig
# ------------------------------------------------------------------------------------------------


@dataclass
class RigTimes:
    """Seconds each start-up step took (the tests and the bench report them)."""

    steps: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, began: float) -> None:
        self.steps[name] = round(time.monotonic() - began, 3)


class LaneRig:
    """A whole local lane around the real daemon; see the module docstring.

    Parameters worth knowing:
      plan        the lane source played once the gallery is applied (None: play nothing yet, call `play`).
      loop        replay the plan forever (the demo); otherwise the plan plays once, then an empty lane.
      pacing      camera pacing: realtime (the clips' 12.5 fps, like a live camera) or lockstep (benchmarks).
      time_scale  the turnstile simulator's walking speed (1.0 = 2-4 s passages).
      ops         reuse an ops key + signed gallery (`prepare_ops`) instead of building one per rig.
      push_gallery  push the gallery after start-up (False: the lane has no gallery).
      config      overrides deep-merged into the daemon config (e.g. {"lane": {"refer_hold_s": 3}}).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        plan: Sequence[PlanItem] | None = DEMO_PLAN,
        loop: bool = False,
        pacing: str = "realtime",
        time_scale: float = 0.5,
        ops: OpsMaterial | None = None,
        push_gallery: bool = True,
        config: Mapping[str, Any] | None = None,
        site: str = SITE,
        gate: str = GATE,
        tail_s: float = 900.0,
        start_timeout_s: float = 90.0,
        sim_seed: int | None = 7,
        subject_key: bytes | None = None,
        display: bool = False,
        dies_with_rig: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        # The demo asks the kernel to stop the daemon, the display server and the broker when the rig's
        # process dies however it dies (SIGKILL, a closed terminal): a demo must never leave them behind.
        # (The turnstile simulator ends by itself when its socket to the rig closes.)
        self.dies_with_rig = dies_with_rig
        self.plan = list(plan) if plan is not None else None
        self.loop = loop
        self.pacing = pacing
        self.time_scale = time_scale
        self.ops = ops
        self.push_gallery_at_start = push_gallery
        self.overrides = dict(config or {})
        self.site, self.gate = site, gate
        self.tail_s = tail_s
        self.start_timeout_s = start_timeout_s
        self.sim_seed = sim_seed
        self.subject_key = subject_key if subject_key is not None else secrets.token_bytes(32)
        # The traveller's screen: the daemon writes its feed and `egate display serve` serves the page.
        self.display = display
        self.display_proc: subprocess.Popen[bytes] | None = None
        self.display_url: str | None = None
        self.times = RigTimes()
        # parts
        self.broker: Any = None
        self.sim: Any = None
        self.mqtt: MqttCollector | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.control: Any = None
        self.scene: Scene | None = None
        self.played_at: float | None = None  # monotonic
        self.played_wall: float | None = None  # time.time(), to place outcome records on the scene
        self.daemon_exit_code: int | None = None
        self.daemon_stop_s: float | None = None
        self._scenes = 0
        self._loop_scene = False
        self._short_dir: Path | None = None
        self._log_fh: Any = None
        self._err_fh: Any = None
        # paths
        self.state_dir = self.workdir / "state"
        self.creds_dir = self.workdir / "credentials"
        self.scenes_dir = self.workdir / "scenes"
        self.camera_path = self.workdir / "camera"  # symlink to the scene the camera plays
        self.config_path = self.workdir / "egate.toml"
        self.log_path = self.workdir / "daemon.log"
        self.stderr_path = self.workdir / "daemon.stderr"
        self.tty_path = self.workdir / "turnstile.tty"
        self.socket_path = self.workdir / "control.sock"

    # ---- lifetime ---------------------------------------------------------------------------------

    def __enter__(self) -> LaneRig:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        from egate.edge.service.control_socket import ControlClient
        from egate.tools.rig.local_broker import Mosquitto
        from egate.tools.sim.osdp_gate import TurnstileSimulator

        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path)) > 100:  # sun_path is 107 bytes: use a short folder of our own
            self._short_dir = Path(tempfile.mkdtemp(prefix="egate-rig-"))
            self.socket_path = self._short_dir / "control.sock"
        began = time.monotonic()
        self.broker = Mosquitto(self.workdir / "broker", dies_with_parent=self.dies_with_rig)
        self.broker.start()
        self.times.mark("broker", began)

        began = time.monotonic()
        scbk = secrets.token_bytes(16)
        self.sim = TurnstileSimulator(
            scbk=scbk, time_scale=self.time_scale, link_path=self.tty_path, seed=self.sim_seed
        )
        self.sim.start()
        self.times.mark("turnstile_sim", began)

        self.creds_dir.mkdir(mode=0o700, exist_ok=True)
        self._write_secret("turnstile.scbk", scbk.hex().encode())
        self._write_secret("gallery.key", secrets.token_bytes(32).hex().encode())
        self._write_secret("subject-id.key", self.subject_key)

        began = time.monotonic()
        if self.ops is None:
            self.ops = prepare_ops(self.workdir / "ops", scope=f"{self.site}:{self.gate}")
        self.times.mark("ops_material", began)
        began = time.monotonic()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_egate(["ops", "keys", "install", str(self.ops.public), "--trust-dir", str(self.state_dir / "trust")])
        self.times.mark("trust_install", began)

        # The camera starts on an empty lane; the plan is played once the gallery is in.
        self._link_scene(self._new_scene([]))
        self.config_path.write_text(to_toml(self.config()))

        self.mqtt = MqttCollector(self.broker.host, self.broker.port, self.site, self.gate)
        self.mqtt.start()

        began = time.monotonic()
        self._start_daemon()
        if self.display:
            self.start_display()
        self.control = ControlClient(self.socket_path, timeout_s=10.0)
        self.wait_status(lambda s: s["in_service"], self.start_timeout_s, "the lane in service")
        self.times.mark("daemon_in_service", began)

        if self.push_gallery_at_start:
            began = time.monotonic()
            self.push_gallery()
            self.times.mark("gallery_push", began)
        if self.plan is not None:
            self.play(self.plan, loop=self.loop)

    def close(self) -> None:
        self.stop_display()
        self.stop_daemon()
        if self.mqtt is not None:
            self.mqtt.close()
        if self.sim is not None:
            self.sim.close()
        if self.broker is not None:
            self.broker.stop()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)

    def _write_secret(self, name: str, data: bytes) -> None:
        path = self.creds_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    # ---- config -------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        from egate.engines.models import default_model_dir

        base: dict[str, Any] = {
            "schema_version": 1,
            "gate": {"site_id": self.site, "gate_id": self.gate, "mode": "exit"},
            "logging": {"level": "info", "format": "json"},
            "state": {"state_dir": str(self.state_dir), "model_dir": str(default_model_dir())},
            "control": {"socket_path": str(self.socket_path), "socket_group": ""},
            "health": {"check_interval_s": 1.0},
            "turnstile": {
                "url": str(self.tty_path),
                "secure_channel": True,
                "passage_timeout_s": 8.0,
                "reconnect_initial_s": 0.2,
                "reconnect_max_s": 1.0,
            },
            "link": {
                "host": self.broker.host,
                "port": self.broker.port,
                "tls": False,
                "health_interval_s": 1.0,
                "keepalive_s": 5,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 1.0,
            },
            "camera": {
                "kind": "folder",
                "location": str(self.camera_path),
                "pacing": self.pacing,
                "loop": True,
                "fps": CLIP_FPS,
                "reconnect_initial_s": 0.2,
                "reconnect_max_s": 1.0,
            },
        }
        if self.display:
            base["display"] = {
                "enabled": True,
                "feed_socket": str(self.socket_path.with_name("display.sock")),
                "feed_group": "",
                "port": 0,
            }
        # config/demo.toml holds the demo lane's policy (timings, pacing); the rig adds the paths and ports.
        demo = tomllib.loads(DEMO_CONFIG.read_text())
        return deep_merge(deep_merge(demo, base), self.overrides)

    # ---- daemon -------------------------------------------------------------------------------------

    def _start_daemon(self) -> None:
        env = {
            **os.environ,
            "CREDENTIALS_DIRECTORY": str(self.creds_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 - held for the daemon's lifetime
        self._err_fh = open(self.stderr_path, "ab")  # noqa: SIM115
        self.daemon = subprocess.Popen(
            [*EGATE, "run", "--config", str(self.config_path)],
            stdout=self._log_fh,
            stderr=self._err_fh,
            stdin=subprocess.DEVNULL,
            cwd=checkout_root(),
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches the rig, which stops the daemon in order.
            start_new_session=True,
            preexec_fn=terminate_with_parent if self.dies_with_rig else None,
        )

    def restart_daemon(self) -> None:
        """Stop (SIGTERM) and start the daemon again on the same state, devices and broker."""
        self.stop_daemon()
        self._start_daemon()
        self.wait_status(lambda s: s["in_service"], self.start_timeout_s, "the lane back in service")

    def stop_daemon(self) -> int | None:
        """SIGTERM, as systemd does; the daemon must exit within STOP_BUDGET_S (else it is killed and
        `daemon_stop_s` is None). Returns its exit code."""
        proc = self.daemon
        if proc is None:
            return self.daemon_exit_code
        if proc.poll() is None:
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_BUDGET_S)
                self.daemon_stop_s = round(time.monotonic() - began, 3)
            except subprocess.TimeoutExpired:
                self.daemon_stop_s = None
                proc.kill()
                proc.wait()
        self._daemon_gone(proc)
        return self.daemon_exit_code

    def start_display(self, timeout: float = 30.0) -> str:
        """Start `egate display serve` on a free loopback port (the same one again after a stop, so an open
        page reconnects by itself); its URL once it listens."""
        from urllib.parse import urlsplit

        port = urlsplit(self.display_url).port if self.display_url else 0
        log = open(self.workdir / "display.log", "ab")  # noqa: SIM115 - the child holds it
        self.display_proc = subprocess.Popen(
            [*EGATE, "display", "serve", "--config", str(self.config_path), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=checkout_root(),
            start_new_session=True,
            preexec_fn=terminate_with_parent if self.dies_with_rig else None,
        )
        log.close()
        assert self.display_proc.stdout is not None
        found: list[str] = []

        def read_url() -> None:
            assert self.display_proc is not None and self.display_proc.stdout is not None
            for line in self.display_proc.stdout:
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line)["display_url"])
                    return

        reader = threading.Thread(target=read_url, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found and self.display_proc.poll() is not None:
            raise RigError(f"egate display serve exited: {(self.workdir / 'display.log').read_text()[-2000:]}")
        if not found:
            self.stop_display()
            raise RigError(
                f"egate display serve did not start within {timeout:.0f} s: see {self.workdir / 'display.log'}"
            )
        self.display_url = found[0]
        return self.display_url

    def stop_display(self, *, kill: bool = False) -> None:
        """Stop the display process (SIGKILL with `kill`: a crash)."""
        proc = self.display_proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(STOP_BUDGET_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.display_proc = None

    def _daemon_gone(self, proc: subprocess.Popen[bytes]) -> None:
        """The daemon process has exited: keep its exit code, close its log files."""
        self.daemon_exit_code = proc.returncode
        self.daemon = None
        for fh in (self._log_fh, self._err_fh):
            if fh is not None:
                fh.close()
        self._log_fh = self._err_fh = None

    def kill_daemon(self) -> None:
        """SIGKILL, as a watchdog or a power cut would: no clean stop, nothing flushed beyond what was
        committed. `start_daemon()` brings it back on the same state."""
        proc = self.daemon
        if proc is None:
            return
        proc.kill()
        proc.wait()
        self._daemon_gone(proc)

    def start_daemon(self, *, wait_in_service: bool = True) -> None:
        """Start the daemon again (after `kill_daemon` / `stop_daemon`) on the same state and devices."""
        self._start_daemon()
        if wait_in_service:
            self.wait_status(lambda s: s["in_service"], self.start_timeout_s, "the lane back in service")

    def gate_openings(self) -> list[float]:
        """Monotonic times (this process's clock) at which the simulated controller received an entry
        release for one passage: the openings that really happened, whatever the daemon recorded."""
        from egate.tools.sim.osdp_gate import OUT_TEMPORARY_ON

        entry = self.sim.io.entry_release_output
        return [c.at for c in list(self.sim.history) if c.output_no == entry and c.control_code == OUT_TEMPORARY_ON]

    @property
    def daemon_running(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def log_records(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines so far (non-JSON lines are skipped)."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def log_events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.log_records() if r.get("event") == name]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) + "\n--- stderr ---\n" + "\n".join(err.splitlines()[-15:])

    # ---- control socket -------------------------------------------------------------------------------

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.control is not None, "the rig is not started"
        return self.control.call(cmd, **args)

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float, what: str, poll_s: float = 0.05
    ) -> dict[str, Any]:
        """Poll `status` until `predicate(status)` holds; RigError (with the daemon log) at the deadline
        or when the daemon exits."""
        from egate.edge.service.control_socket import ControlError, DaemonNotRunning

        deadline = time.monotonic() + timeout
        last: dict[str, Any] | str = "no answer yet"
        while True:
            if self.daemon is not None and self.daemon.poll() is not None:
                raise RigError(
                    f"the daemon exited with {self.daemon.returncode} while waiting for {what}:\n{self.log_tail()}"
                )
            try:
                status = self.status()
                last = status
                if predicate(status):
                    return status
            except (DaemonNotRunning, ControlError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RigError(
                    f"timed out after {timeout:.1f} s waiting for {what}; last status: {last}\n{self.log_tail()}"
                )
            time.sleep(poll_s)

    def wait_state(self, state: str, timeout: float) -> dict[str, Any]:
        return self.wait_status(lambda s: s["state"] == state, timeout, f"lane state {state}")

    # ---- gallery --------------------------------------------------------------------------------------

    def push_gallery(self, bundle: Path | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """`egate ops push` the gallery and wait for the gate's `applied` ack (RigError if rejected)."""
        assert self.ops is not None and self.broker is not None
        path = bundle or self.ops.gallery
        args = [
            "ops", "push", str(path),
            "--gate", self.gate, "--site", self.site,
            "--host", self.broker.host, "--port", str(self.broker.port),
            "--timeout", str(timeout), "--json",
        ]  # fmt: skip
        proc = subprocess.run(
            [*EGATE, *args], capture_output=True, text=True, timeout=timeout + 30, cwd=checkout_root(), check=False
        )
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RigError(f"egate ops push gave no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}") from None
        if not result.get("ok"):
            raise RigError(f"gallery push not applied: {result}\n{self.log_tail()}")
        return result

    # ---- camera scenes ----------------------------------------------------------------------------------

    def _new_scene(self, plan: Sequence[PlanItem], tail_frames: int = 0) -> Scene:
        self._scenes += 1
        return write_scene(self.scenes_dir / f"scene-{self._scenes:03d}", plan, tail_frames=tail_frames)

    def _link_scene(self, scene: Scene) -> None:
        """Point the camera at `scene` atomically. The open source finishes its listing on the new
        folder: every scene holds the idle frame under the same name, so the switch never reads a
        missing file (the camera plays the new scene from its start at its next loop)."""
        tmp = self.camera_path.with_name(self.camera_path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(scene.folder, target_is_directory=True)
        tmp.replace(self.camera_path)
        self.scene = scene

    def play(self, plan: Sequence[PlanItem], *, loop: bool = False) -> Scene:
        """Play `plan` on the lane camera. Once: then an empty lane for `tail_s`; loop: forever."""
        return self.show(self.prepare_scene(plan, loop=loop), loop=loop)

    def prepare_scene(self, plan: Sequence[PlanItem], *, loop: bool = False) -> Scene:
        """Write the frames of `plan` (and, unless `loop`, an empty tail) without showing them yet."""
        return self._new_scene(plan, tail_frames=0 if loop else int(self.tail_s * CLIP_FPS))

    def show(self, scene: Scene, *, loop: bool = False) -> Scene:
        """Switch the camera to `scene`: it starts within a frame or two (at the idle scene's next loop)."""
        self._link_scene(scene)
        self.played_at = time.monotonic()
        self.played_wall = time.time()
        self._loop_scene = loop
        return scene

    def traveller_of(self, record: Mapping[str, Any]) -> Span | None:
        """Which planned traveller an outcome record belongs to (by its session's start time)."""
        from datetime import datetime

        if self.scene is None or self.played_wall is None:
            return None
        started = datetime.fromisoformat(str(record["started_at"]).replace("Z", "+00:00")).timestamp()
        return self.scene.span_at(started - self.played_wall, loop=self._loop_scene)

    def remove_camera_source(self) -> None:
        """Take the camera's source away (the folder it reads disappears): the camera is lost."""
        self.camera_path.unlink()

    def restore_camera_source(self) -> None:
        assert self.scene is not None
        self._link_scene(self.scene)

    # ---- outcomes ---------------------------------------------------------------------------------------

    @property
    def outcomes(self) -> list[dict[str, Any]]:
        assert self.mqtt is not None
        return self.mqtt.outcomes

    @property
    def events(self) -> list[dict[str, Any]]:
        assert self.mqtt is not None
        return self.mqtt.events

    def wait_outcomes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """The first `n` outcome records published over MQTT (raises TimeoutError with the log)."""
        assert self.mqtt is not None
        try:
            return self.mqtt.wait_outcomes(n, timeout)[:n]
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; got {self._outcome_summary()}\n{self.log_tail()}") from None

    def wait_event(self, kind: str, timeout: float, **details: Any) -> dict[str, Any]:
        assert self.mqtt is not None
        try:
            return self.mqtt.wait_event(kind, timeout, **details)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; events so far: {self.events}\n{self.log_tail()}") from None

    def _outcome_summary(self) -> list[str]:
        return [f"{o['decision']} {o['reasons']}" for o in self.outcomes]

    def camera_stats(self) -> dict[str, Any]:
        """The daemon's camera counters (`camera.snapshot`'s `camera` part)."""
        return dict(self.call("camera.snapshot")["camera"])

    def wait_scene_done(self, timeout: float) -> None:
        """Wait until the camera has shown the whole plan (realtime pacing: by the clock), the lane is
        idle again and every outcome the daemon recorded has arrived over MQTT."""
        assert self.scene is not None and self.played_at is not None and self.mqtt is not None
        end = self.played_at + self.scene.duration_s
        self.wait_status(
            lambda s: time.monotonic() >= end and s["state"] == "idle", timeout, "the scene played out, lane idle", 0.1
        )
        recorded = len(self.call("outcomes", n=100)["outcomes"])
        self.wait_outcomes(recorded, timeout=10.0)
