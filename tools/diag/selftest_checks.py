"""The checks of `egate diag selftest`, one plain function each, so tests and tools call them one by one.

Every check returns a `CheckResult`: PASS, WARN or FAIL, what was measured (`detail`) and, unless PASS,
one line telling the technician what to do next (`hint`). A check never raises: a crash inside a check
is itself a FAIL naming the exception. Device checks open the devices themselves; `egate diag` only
calls them when the daemon is not running (otherwise it asks the daemon, which owns the devices).
Heavy imports (OpenCV, onnxruntime, libosdp, paho) stay inside the checks that need them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import shutil
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from egate.drivers.turnstile.base import GateController, GateStatus
from egate.drivers.turnstile.registry import CredentialReader, GateSetupError, build_gate
from egate.edge.lane.device_checks import (
    HINT_MQTT_PLAIN,
    HINT_READER_PORT,
    MQTT_HINTS,
    camera_problem,
)
from egate.tools.paths import DEMO_MEDIA

if TYPE_CHECKING:
    from pydantic import BaseModel

    from egate.drivers.camera import CameraConfig
    from egate.drivers.document.config import ReaderConfig
    from egate.edge.settings.link import LinkConfig, OutboxConfig
    from egate.edge.uplink.link import LinkCredentials
    from egate.engines.config import EngineConfig
    from egate.engines.pipeline import FaceEngine

CheckVerdict = Literal["PASS", "WARN", "FAIL"]

# Budgets. The engine's golden frame takes ~25 ms on one x86 CPU core (BlazeFace short range 2-4 ms +
# dlib ResNet in onnxruntime 15-21 ms; `egate bench engine` measures it); 10x that still serves the
# lane, beyond it the device is throttled or misconfigured.
ENGINE_BUDGET_MS = 250.0
CAMERA_SAMPLE_S = 2.0
CERT_WARN_DAYS = 30
DISK_FAIL_BYTES = 512 * 1024**2
DISK_WARN_BYTES = 2 * 1024**3
DISK_FAIL_RATIO = 0.03
DISK_WARN_RATIO = 0.10
OUTBOX_WARN_AGE_S = 3600.0
GALLERY_WARN_S = 3600.0
TEMP_WARN_C = 80.0
TEMP_FAIL_C = 95.0
# A clock before this cannot be right (the software is newer): TLS and bundle expiry would misjudge.
CLOCK_FLOOR = datetime(2025, 1, 1, tzinfo=timezone.utc)
GOLDEN_MEDIA = DEMO_MEDIA


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: CheckVerdict
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _pass(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "PASS", detail, "")


def guarded(name: str) -> Callable[[Callable[..., CheckResult]], Callable[..., CheckResult]]:
    """A check that raises becomes a FAIL naming the exception (the self-test always finishes)."""

    def wrap(fn: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> CheckResult:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                return CheckResult(
                    name,
                    "FAIL",
                    f"the check itself failed: {type(exc).__name__}: {exc}",
                    "report this with `egate diag logs --since 10m` attached",
                )

        return inner

    return wrap


# ------------------------------------------------------------------------------------------ config, models


@guarded("config")
def check_config(path: Path) -> CheckResult:
    from egate.edge.settings import ConfigError, load_settings

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        first = exc.issues[0]
        more = f" (+{len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        return CheckResult(
            "config", "FAIL", f"{first}{more}", f"fix the setting above, then run: egate config check {path}"
        )
    return _pass("config", f"{path} valid (gate {settings.gate.site_id}/{settings.gate.gate_id})")


@guarded("models")
def check_models(model_dir: Path) -> CheckResult:
    from egate.engines.models import ModelCacheError, load_manifest

    try:
        manifest = load_manifest(model_dir, verify=True)
    except ModelCacheError as exc:
        return CheckResult(
            "models", "FAIL", str(exc), f"rebuild the model cache: egate models build --model-dir {model_dir}"
        )
    if manifest.model_id is None:
        return CheckResult(
            "models",
            "FAIL",
            f"{model_dir}: the embedder is not converted (model_id empty)",
            f"egate models build --model-dir {model_dir}",
        )
    return _pass("models", f"{len(manifest.files)} files, sizes and sha256 match; model {manifest.model_id}")


# ------------------------------------------------------------------------------------------ engine


def default_golden_media() -> Path | None:
    """The demo clip the self-test runs through the engine (a real face, shipped with the demo)."""
    for name in ("head-pose-face-detection-female.gif", "face-demographics-walking-and-pause.gif"):
        path = GOLDEN_MEDIA / name
        if path.exists():
            return path
    found = sorted(GOLDEN_MEDIA.glob("*.gif")) if GOLDEN_MEDIA.is_dir() else []
    return found[0] if found else None


def read_frames(path: Path, limit: int) -> list[Any]:
    """Up to `limit` BGR frames of a still image, GIF or video (OpenCV decodes GIFs as video)."""
    import cv2

    if path.suffix.lower() not in (".gif", ".mp4", ".avi", ".mkv", ".mov"):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        return [] if image is None else [image]
    capture = cv2.VideoCapture(str(path))
    frames: list[Any] = []
    try:
        while len(frames) < limit:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    return frames


@guarded("engine")
def check_engine(
    config: EngineConfig,
    model_dir: Path,
    golden: Path | None,
    *,
    budget_ms: float = ENGINE_BUDGET_MS,
    engine: FaceEngine | None = None,
) -> CheckResult:
    """Load the engine and time one face frame of `golden` (after a warm-up run)."""
    if golden is None:
        return CheckResult(
            "engine",
            "WARN",
            f"engine not exercised: no golden image (the demo media are not in {GOLDEN_MEDIA})",
            "pass --golden IMAGE with one face (or reinstall egate, which ships the demo media)",
        )
    if not golden.exists():
        return CheckResult(
            "engine",
            "FAIL",
            f"golden image {golden} does not exist",
            "pass --golden with the path of an existing image, GIF or video showing one face",
        )
    from egate.engines.pipeline import FaceEngine

    frames = read_frames(golden, 40)
    if not frames:
        return CheckResult("engine", "WARN", f"golden image {golden} cannot be decoded", "pass --golden IMAGE")
    own = engine is None
    try:
        began = time.perf_counter()
        active = engine or FaceEngine.from_config(config, model_dir)
        load_ms = (time.perf_counter() - began) * 1e3
    except Exception as exc:
        return CheckResult(
            "engine",
            "FAIL",
            f"engine does not load on backend {config.backend}: {exc}",
            f"egate models build --model-dir {model_dir}; see backends with: egate diag engines",
        )
    try:
        for frame in frames[::4]:  # every 4th frame: a few tries find the face quickly
            if active.analyze(frame):
                began = time.perf_counter()
                faces = active.analyze(frame)
                run_ms = (time.perf_counter() - began) * 1e3
                break
        else:
            return CheckResult(
                "engine",
                "FAIL",
                f"no face found in {len(frames[::4])} frames of {golden.name}, which has one",
                f"the models give wrong results: egate models build --model-dir {model_dir}; egate diag engines --device-check",
            )
    finally:
        if own:
            active.close()
    detail = f"{len(faces)} face(s) in {run_ms:.0f} ms on {config.backend}" + (
        f" (load {load_ms:.0f} ms)" if own else ""
    )
    if run_ms > budget_ms:
        return CheckResult(
            "engine",
            "WARN",
            f"{detail}; expected under {budget_ms:.0f} ms",
            "the CPU is busy or throttled: check `top` and temperature; on a Jetson set engine.backend = tensorrt",
        )
    return _pass("engine", detail)


# ------------------------------------------------------------------------------------------ camera


def camera_missing_hint(config: CameraConfig) -> str:
    if config.kind in ("file", "folder"):
        return f"camera.location {config.location!r} must be an existing {config.kind}: fix the path in the config"
    if config.kind == "v4l2":
        return (
            "check the camera's USB/CSI cable and `ls /dev/video*`; set camera.location to the device; "
            "the daemon's user needs the video group"
        )
    if config.kind == "rtsp":
        return "check the camera's network (ping it), its URL in camera.location and the credential camera.credential"
    return "check the pipeline in camera.location with gst-launch-1.0 and the camera's cable"


def first_frame(camera: Any, config: CameraConfig, wait_s: float) -> Any:
    """The first frame of a started camera, or None; gives up early on a recording that cannot open."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        frame = camera.latest(timeout=0.2)
        if frame is not None:
            return frame
        # A missing recording does not appear by waiting; a live device may still be starting.
        if config.kind in ("file", "folder") and camera.stats().reconnect_attempts >= 1:
            return None
    return None


@guarded("camera")
def check_camera(
    config: CameraConfig,
    *,
    engine: FaceEngine | None = None,
    sample_s: float = CAMERA_SAMPLE_S,
    credential: bytes | None = None,
) -> CheckResult:
    """Open the camera, read for `sample_s`: real fps, exposure and (with an engine) a detectable face."""
    import numpy as np

    from egate.drivers.camera import Camera

    where = f"{config.kind} {config.location!r}" if config.kind != "rtsp" else "rtsp camera"
    first_wait = max(3.0, config.open_timeout_s if config.kind == "rtsp" else 3.0)
    with Camera(config, credential=credential, name="diag-camera") as camera:
        first = first_frame(camera, config, first_wait)
        if first is None:
            stats = camera.stats()
            why = stats.last_error or f"state {stats.state}"
            return CheckResult("camera", "FAIL", f"{where}: no frame ({why})", camera_missing_hint(config))
        began = time.monotonic()
        frames = [first]
        seq = first.seq
        while time.monotonic() - began < sample_s:
            frame = camera.latest(after_seq=seq, timeout=max(0.05, sample_s - (time.monotonic() - began)))
            if frame is None:
                break
            seq = frame.seq
            frames.append(frame)
        elapsed = max(1e-6, frames[-1].timestamp - first.timestamp)
        fps = (len(frames) - 1) / elapsed if len(frames) > 1 else 0.0
        stats = camera.stats()
    height, width = first.image.shape[:2]
    grey = [float(np.mean(f.image)) for f in frames[:: max(1, len(frames) // 5)]]
    mean = sum(grey) / len(grey)
    faces_seen = None
    if engine is not None:
        faces_seen = sum(1 for f in frames[:: max(1, len(frames) // 8)] if engine.analyze(f.image))
    detail = f"{where}: {width}x{height}, {fps:.1f} fps measured, mean level {mean:.0f}/255"
    if faces_seen is not None:
        detail += f", face in {faces_seen} of {len(frames[:: max(1, len(frames) // 8)])} sampled frames"
    if stats.state == "ended" and len(frames) < 3:
        return CheckResult("camera", "WARN", f"{detail}; the source ended", "set camera.loop = true for a recording")
    problem = camera_problem(fps, config.fps, mean)
    if problem is not None:
        what, hint = problem
        return CheckResult("camera", "WARN", f"{detail}; {what}", hint)
    if faces_seen == 0:
        return CheckResult(
            "camera",
            "WARN",
            f"{detail}; no face detected",
            "stand in the capture zone facing the camera and run again; check aim and focus",
        )
    return _pass("camera", detail)


# ------------------------------------------------------------------------------------------ reader


@guarded("reader")
def check_reader(config: ReaderConfig, *, listen_s: float = 0.3) -> CheckResult:
    """The serial reader's port opens (readers only talk when a document is presented)."""
    if not config.serial_url:
        return _pass("reader", "no serial reader configured (reader.serial_url unset): documents by image only")
    import serial

    try:
        port = serial.serial_for_url(config.serial_url, baudrate=config.baudrate, timeout=listen_s)
    except Exception as exc:
        return CheckResult(
            "reader",
            "FAIL",
            f"cannot open reader port {config.serial_url}: {exc}",
            HINT_READER_PORT,
        )
    try:
        pending = port.read(4096)
    finally:
        port.close()
    extra = f"; {len(pending)} bytes were waiting" if pending else ""
    return _pass(
        "reader",
        f"{config.serial_url} opens at {config.baudrate} baud{extra}; present a document with `egate diag reader`",
    )


# ------------------------------------------------------------------------------------------ turnstile


def start_and_wait_for_link(controller: GateController, timeout_s: float) -> GateStatus:
    """Start a gate driver and wait until its link is up, or waiting cannot help (key refused, port
    that cannot be opened), or `timeout_s` passed; the final status."""
    controller.start()
    deadline = time.monotonic() + timeout_s
    while True:
        status = controller.status()
        if status.link_state == "up" or status.link_auth_failed:
            return status
        serial = status.serial
        if serial is not None and not serial.open and serial.last_error and serial.opens == 0:
            return status
        if time.monotonic() >= deadline:
            return status
        time.sleep(0.05)  # polling a driver's state: no event to wait on across every driver


@guarded("turnstile")
def check_turnstile(config: BaseModel, read_credential: CredentialReader, *, timeout_s: float = 5.0) -> CheckResult:
    """Connect to the gate controller as the daemon would (its configured driver) and judge the link
    with the daemon's own rule (`turnstile_check`)."""
    from egate.edge.lane.device_checks import turnstile_check

    try:
        controller = build_gate(config, read_credential, lambda event: None)
    except GateSetupError as exc:
        return CheckResult("turnstile", "FAIL", str(exc), exc.hint)
    except ValueError as exc:
        return CheckResult("turnstile", "FAIL", str(exc), "check [turnstile] in the config")
    try:
        status = start_and_wait_for_link(controller, timeout_s)
    finally:
        controller.close()
    check = turnstile_check(status)
    return CheckResult("turnstile", check.verdict, check.detail, check.hint or "")


# ------------------------------------------------------------------------------------------ mqtt


def _cert_days_left(pem: bytes, now: datetime) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    return (cert.not_valid_after_utc - now).total_seconds() / 86400.0


@guarded("mqtt")
def check_mqtt(
    config: LinkConfig,
    credentials: LinkCredentials | None,
    *,
    client_id: str,
    timeout_s: float = 5.0,
    now: datetime | None = None,
    credentials_error: str = "",
) -> CheckResult:
    """Connect to the broker with the link's TLS settings (under `client_id`, NOT the daemon's: a second
    connection with the same id would kick the daemon off, MQTT 3.1.4-2), then report certificate expiry."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from egate.edge.uplink.link import classify_connack, classify_connect_error

    if not config.enabled:
        return CheckResult(
            "mqtt", "WARN", "link disabled (link.enabled = false)", "standalone gate: outcomes stay in the outbox"
        )
    now = now or datetime.now(timezone.utc)
    host, port = config.host, config.port
    protocol = MQTTProtocolVersion.MQTTv311 if config.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        outcome["reason"] = reason
        done.set()

    client.on_connect = on_connect
    days: list[tuple[str, float]] = []
    if credentials_error:
        return CheckResult(
            "mqtt",
            "FAIL",
            credentials_error,
            "install the named credential in the credentials folder (/etc/egate/credentials), or run as root "
            "with CREDENTIALS_DIRECTORY set; with the daemon running, egate diag selftest asks it instead",
        )
    if config.tls:
        if credentials is None or credentials.ca_path is None:
            return CheckResult(
                "mqtt",
                "FAIL",
                f"TLS is on but the CA credential {config.ca_credential!r} is not available",
                "run as root with CREDENTIALS_DIRECTORY set (or via the daemon), or install the credential",
            )
        client.tls_set(
            ca_certs=str(credentials.ca_path),
            certfile=str(credentials.cert_path) if credentials.cert_path else None,
            keyfile=str(credentials.key_path) if credentials.key_path else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        days.append(("CA", _cert_days_left(credentials.ca_path.read_bytes(), now)))
        if credentials.cert_path:
            days.append(("client certificate", _cert_days_left(credentials.cert_path.read_bytes(), now)))
    if credentials is not None and credentials.username:
        client.username_pw_set(credentials.username, (credentials.password or b"").decode() or None)
    began = time.monotonic()
    try:
        client.connect(host, port, keepalive=max(5, min(config.keepalive_s, 60)))
    except (OSError, ssl.SSLError) as exc:
        err = classify_connect_error(exc, host, port)
        return CheckResult("mqtt", "FAIL", err.message, MQTT_HINTS.get(err.category, "").format(port=port))
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return CheckResult(
                "mqtt",
                "FAIL",
                f"{host}:{port} accepted TCP but sent no CONNACK in {timeout_s:.0f} s",
                "check that link.tls matches the broker port (TLS port with tls = true) and the broker's load",
            )
        rtt_ms = (time.monotonic() - began) * 1e3
        reason = outcome["reason"]
        if reason.is_failure:
            err = classify_connack(reason, host, port)
            return CheckResult("mqtt", "FAIL", err.message, MQTT_HINTS.get(err.category, ""))
        sock = client.socket()
        if config.tls and isinstance(sock, ssl.SSLSocket):
            peer = sock.getpeercert()
            if peer and "notAfter" in peer:
                expiry = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(peer["notAfter"])), timezone.utc)
                days.append(("broker certificate", (expiry - now).total_seconds() / 86400.0))
    finally:
        client.disconnect()
        client.loop_stop()
    detail = f"{host}:{port} connected in {rtt_ms:.0f} ms ({'TLS' if config.tls else 'plain'})"
    if days:
        which, left = min(days, key=lambda item: item[1])
        detail += f"; {which} expires in {math.floor(left)} days"
        if left < 0:
            return CheckResult("mqtt", "FAIL", detail, f"the {which} expired: install a renewed one")
        if left < CERT_WARN_DAYS:
            return CheckResult("mqtt", "WARN", detail, f"renew the {which} before it expires")
    elif not config.tls:
        return CheckResult("mqtt", "WARN", detail, HINT_MQTT_PLAIN)
    return _pass("mqtt", detail)


# ------------------------------------------------------------------------------------------ host


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h) on LP64; only the leading fields are read, the rest is padding.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


_TIME_ERROR = 5  # adjtimex(2): clock not synchronised (STA_UNSYNC set)


def kernel_clock_state() -> tuple[int, float] | None:
    """(adjtimex state, max error in ms) read-only (modes = 0), or None where not available."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "adjtimex"):
        return None
    timex = _Timex()
    state = int(libc.adjtimex(ctypes.byref(timex)))
    if state < 0:
        return None
    return state, timex.maxerror / 1000.0


@guarded("clock")
def check_clock(*, now: datetime | None = None, state: tuple[int, float] | None = None) -> CheckResult:
    """The kernel's NTP state (synchronised by chrony / systemd-timesyncd) and a sane date."""
    now = now or datetime.now(timezone.utc)
    if now < CLOCK_FLOOR:
        return CheckResult(
            "clock",
            "FAIL",
            f"system time {now:%Y-%m-%d %H:%M} timezone.utc is in the past",
            "set the time (timedatectl set-time) and enable NTP: bundles and TLS certificates are judged by it",
        )
    state = state if state is not None else kernel_clock_state()
    if state is None:
        return CheckResult("clock", "WARN", "synchronisation state not readable here", "check: timedatectl status")
    code, max_error_ms = state
    if code == _TIME_ERROR:
        return CheckResult(
            "clock",
            "WARN",
            f"not synchronised (kernel reports unsynchronised; max error {max_error_ms:.0f} ms)",
            "enable time sync: timedatectl set-ntp true, and check the NTP server is reachable (chronyc sources)",
        )
    return _pass("clock", f"synchronised, estimated max error {max_error_ms:.0f} ms")


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@guarded("disk")
def check_disk(path: Path) -> CheckResult:
    where = _existing(path)
    usage = shutil.disk_usage(where)
    free_ratio = usage.free / usage.total if usage.total else 0.0
    detail = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB ({free_ratio:.0%}) at {where}"
    hint = (
        f"free space on the file system of {where}: journalctl --vacuum-size=200M, remove old files; "
        "a full disk stops the outbox"
    )
    if usage.free < DISK_FAIL_BYTES or free_ratio < DISK_FAIL_RATIO:
        return CheckResult("disk", "FAIL", detail, hint)
    if usage.free < DISK_WARN_BYTES or free_ratio < DISK_WARN_RATIO:
        return CheckResult("disk", "WARN", detail, hint)
    return _pass("disk", detail)


@dataclass(frozen=True)
class OutboxFacts:
    depth: int
    bytes: int
    oldest_age_s: float | None
    fill_ratio: float


def read_outbox_facts(path: Path, config: OutboxConfig, *, now: float | None = None) -> OutboxFacts:
    """Outbox depth, size and age read from its SQLite file READ-ONLY.

    Adapter: `egate.edge.uplink.outbox.Outbox` has no read-only mode and opening it may queue an alarm event (a
    reopened full outbox raises its alarm again), so diag reads the file itself and never writes into
    the daemon's queue. WAL readers do not block the daemon's writer.
    """
    import sqlite3

    now = time.time() if now is None else now
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        count, size, oldest = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(created_at) FROM messages"
        ).fetchone()
    finally:
        db.close()
    age = max(0.0, now - float(oldest)) if oldest is not None else None
    ratio = max(
        int(count) / config.max_messages,
        int(size) / config.max_bytes,
        (age or 0.0) / config.max_age_s,
    )
    return OutboxFacts(int(count), int(size), age, min(ratio, 1.0))


@guarded("outbox")
def check_outbox(path: Path, config: OutboxConfig) -> CheckResult:
    """Depth and oldest age of the store-and-forward queue (undelivered outcomes and events)."""
    import sqlite3

    free = shutil.disk_usage(_existing(path.parent)).free
    if free < config.min_free_disk_bytes:
        return CheckResult(
            "outbox",
            "FAIL",
            f"{free} bytes free for the outbox at {path.parent}, below outbox.min_free_disk_bytes="
            f"{config.min_free_disk_bytes}: the lane is out of service (no record, no opening)",
            "free disk space on the state directory's file system (journalctl --vacuum-size=200M, old bundles), "
            "or lower outbox.min_free_disk_bytes",
        )
    if not path.exists():
        return _pass("outbox", f"no outbox yet at {path} (nothing queued)")
    try:
        stats = read_outbox_facts(path, config)
    except sqlite3.Error as exc:
        return CheckResult(
            "outbox",
            "FAIL",
            f"outbox {path} unreadable: {exc}",
            "run as root (the state directory is private); if it is corrupt, see the daemon log",
        )
    age = stats.oldest_age_s
    detail = f"{stats.depth} queued ({stats.bytes / 1024:.0f} KiB, {stats.fill_ratio:.0%} full)"
    if age is not None:
        detail += f", oldest {timedelta(seconds=round(age))} old"
    if stats.fill_ratio >= 1.0:
        return CheckResult(
            "outbox",
            "FAIL",
            f"{detail}: full, the lane is out of service (no record, no opening)",
            "restore the MQTT link (egate diag mqtt) so the queue drains, or raise the outbox limits",
        )
    if stats.fill_ratio >= config.alarm_ratio or (age is not None and age > OUTBOX_WARN_AGE_S):
        return CheckResult(
            "outbox",
            "WARN",
            f"{detail}: not draining",
            "outcomes are not delivered: check the link with egate diag mqtt",
        )
    return _pass("outbox", detail)


def gallery_required(mode: str, *, page_reference: bool) -> bool:
    """Whether the lane in `mode` refers every traveller without a gallery.

    Exit compares 1:N against the gallery and boarding looks the passenger up in it; entry compares
    with the gallery subject of the document or, when the reader gives a page image, with its portrait.
    """
    return mode != "entry" or not page_reference


def no_gallery_verdict(mode: str, *, page_reference: bool, where: str) -> CheckResult:
    """The gallery row when there is none: FAIL where the mode cannot serve anyone without it."""
    push = "push a current gallery for this gate from ops: egate ops push GALLERY.egb --gate GATE"
    if gallery_required(mode, page_reference=page_reference):
        return CheckResult(
            "gallery",
            "FAIL",
            f"no gallery {where}: in {mode} mode every traveller is referred (GALLERY_UNAVAILABLE)",
            push,
        )
    return CheckResult(
        "gallery",
        "WARN",
        f"no gallery {where}: entry mode compares with the document page portrait only",
        push,
    )


@guarded("gallery")
def check_gallery(
    gallery_file: Path,
    key: bytes | None,
    *,
    now: datetime | None = None,
    mode: str = "exit",
    page_reference: bool = False,
) -> CheckResult:
    """Version, size and expiry of the gallery on disk. Read only: an expired one is reported, not purged."""
    from egate.edge.gallery.store import GalleryStoreError, parse_gallery_key, read_encrypted
    from egate.edge.trust.bundles import BundleRejected, parse_header, split_envelope

    now = now or datetime.now(timezone.utc)
    if not gallery_file.exists():
        return no_gallery_verdict(mode, page_reference=page_reference, where=f"at {gallery_file}")
    if key is None:
        return CheckResult(
            "gallery",
            "WARN",
            f"gallery present ({gallery_file.stat().st_size} bytes) but the gallery key credential is not available",
            "run as root with CREDENTIALS_DIRECTORY set, or with the daemon running: egate diag status",
        )
    try:
        buffer = read_encrypted(gallery_file, parse_gallery_key(key))
        header = parse_header(split_envelope(memoryview(buffer)).header_bytes)  # type: ignore[arg-type]
    except (GalleryStoreError, BundleRejected, ValueError) as exc:
        return CheckResult(
            "gallery", "FAIL", f"gallery unreadable: {exc}", "purge it and push the gallery again: egate ops push"
        )
    finally:
        if "buffer" in locals():
            buffer.fill(0)  # templates are biometric data: do not leave them in freed memory
    layout = header.gallery
    return gallery_verdict(
        header.version,
        layout.subject_count if layout else None,
        layout.template_count if layout else None,
        header.expires_at,
        now=now,
    )


def gallery_verdict(
    version: int, subjects: int | None, templates: int | None, expires_at: datetime, *, now: datetime
) -> CheckResult:
    """The gallery check's verdict from its facts (shared by the file check and the daemon's status)."""
    size = f"{subjects} subjects, {templates} templates" if subjects is not None else "size unknown"
    left = (expires_at - now).total_seconds()
    detail = f"version {version}, {size}, expires {expires_at.astimezone():%Y-%m-%d %H:%M %Z} (local time)"
    if left <= 0:
        return CheckResult(
            "gallery",
            "FAIL",
            f"{detail}: EXPIRED {timedelta(seconds=round(-left))} ago",
            "push a current gallery from ops (egate ops push); the daemon purges the expired one",
        )
    if left < GALLERY_WARN_S:
        return CheckResult(
            "gallery", "WARN", f"{detail}: expires in {timedelta(seconds=round(left))}", "push the next gallery soon"
        )
    return _pass("gallery", detail)


@guarded("temperature")
def check_temperature(root: Path = Path("/sys/class/thermal")) -> CheckResult:
    """CPU/GPU thermal zones (Jetson: CPU-therm, GPU-therm...), where the kernel exposes them."""
    readings: list[tuple[str, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            millideg = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip() if (zone / "type").exists() else zone.name
        except (OSError, ValueError):
            continue
        readings.append((kind, millideg / 1000.0))
    if not readings:
        return _pass("temperature", f"no thermal zones readable under {root} (not reported on this machine)")
    hottest = max(readings, key=lambda r: r[1])
    detail = ", ".join(f"{name} {temp:.0f} C" for name, temp in readings[:6])
    hint = "check the fan and airflow of the gate's cabinet; the engine slows down when throttled"
    if hottest[1] >= TEMP_FAIL_C:
        return CheckResult("temperature", "FAIL", detail, hint)
    if hottest[1] >= TEMP_WARN_C:
        return CheckResult("temperature", "WARN", detail, hint)
    return _pass("temperature", detail)
