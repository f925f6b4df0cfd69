"""Device access for `egate diag` when the daemon is not running: the tool opens the devices itself.

With the daemon running these are never used (one owner per device, docs/architecture.md): the same
answers come from its control API. The gate's answers are the control API's reply models
(egate.edge.lane.replies), so the tool renders both the same way.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from egate.edge.service.control_socket import ControlRefused

if TYPE_CHECKING:
    from egate.edge.lane.replies import GateCycleReply, GateLockReply, GateOpenReply, GateStatusReply
    from egate.edge.settings import Settings


def local_snapshot(settings: Settings, *, frames: int = 5) -> dict[str, Any]:
    """Open the camera, take the newest of a few frames, draw faces and quality (engine when available)."""
    from egate.drivers.camera import Camera
    from egate.edge.lane.snapshot import make_snapshot
    from egate.tools.diag.selftest import camera_config

    config = camera_config(settings)
    if config is None:
        raise ControlRefused("this config has no [camera] section", "add [camera] (see config/default.toml)")
    from egate.tools.diag.selftest_checks import camera_missing_hint, first_frame

    with Camera(config, name="diag-snapshot") as camera:
        frame = first_frame(camera, config, 5.0)
        for _ in range(frames - 1):
            newer = camera.latest(after_seq=frame.seq if frame else None, timeout=0.5)
            if newer is None:
                break
            frame = newer
        stats = camera.stats().model_dump()
    if frame is None:
        raise ControlRefused(
            f"camera {config.kind} {config.location!r} gave no frame in 5 s ({stats.get('last_error') or stats['state']})",
            camera_missing_hint(config),
        )
    faces: list[Any] = []
    problems: list[list[str]] = []
    engine_note = ""
    try:
        from egate.engines.pipeline import FaceEngine

        with FaceEngine.from_config(settings.engine, settings.state.resolved_model_dir()) as engine:
            faces = engine.analyze(frame.image)
            problems = [settings.engine.quality.acceptable(f.quality) for f in faces]
    except Exception as exc:  # a snapshot is still useful without faces drawn
        engine_note = f"faces not drawn: engine unavailable ({exc})"
    result = make_snapshot(frame.image, faces, camera_stats=stats, problems=problems).model_dump()
    if engine_note:
        result["note"] = engine_note
    return result


class LocalGate:
    """The gate controller opened directly (OSDP CP), for `egate diag gate ...` without a daemon."""

    def __init__(self, settings: Settings, *, timeout_s: float = 5.0) -> None:
        from egate.drivers.turnstile.base import GateEvent
        from egate.drivers.turnstile.registry import GateSetupError, build_gate
        from egate.edge.service.secrets import read_credential

        self.events: list[GateEvent] = []
        self._changed = threading.Condition()
        self.config = settings.turnstile
        self.timeout_s = timeout_s

        def on_event(event: GateEvent) -> None:
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()

        try:
            self.controller = build_gate(settings.turnstile, read_credential, on_event)
        except GateSetupError as exc:
            raise ControlRefused(str(exc), f"{exc.hint}, and export CREDENTIALS_DIRECTORY") from None

    def __enter__(self) -> LocalGate:
        from egate.edge.lane.device_checks import turnstile_check
        from egate.tools.diag.selftest_checks import start_and_wait_for_link

        status = start_and_wait_for_link(self.controller, self.timeout_s)
        if status.link_state != "up":
            self.controller.close()
            check = turnstile_check(status)
            raise ControlRefused(
                f"gate controller did not come online in {self.timeout_s:.0f} s: {check.detail}",
                check.hint or "run egate diag selftest for the turnstile check and its fix",
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.close()

    def status(self) -> GateStatusReply:
        from egate.edge.lane.replies import GateStatusReply

        return GateStatusReply(self.controller.status())

    def open(self, timeout_s: float) -> GateOpenReply:
        from egate.edge.lane.replies import GateOpenReply

        decision_id = f"diag-{uuid.uuid4().hex[:12]}"
        ok = self.controller.open_for_passage(decision_id, timeout_s)
        return GateOpenReply(ok=ok, decision_id=decision_id, status=self.controller.status())

    def lock(self) -> GateLockReply:
        from egate.edge.lane.replies import GateLockReply

        return GateLockReply(ok=self.controller.lock(), status=self.controller.status())

    def cycle(self, timeout_s: float) -> GateCycleReply:
        """Open for one passage, wait for the gate to report the passage (or its timeout), then lock."""
        from egate.edge.lane.replies import GateCycleReply

        opened = self.open(timeout_s)
        decision_id = opened.decision_id
        outcome = None
        if opened.ok:
            deadline = time.monotonic() + timeout_s * 2 + 2.0
            with self._changed:
                while outcome is None and time.monotonic() < deadline:
                    outcome = next(
                        (
                            e.kind
                            for e in self.events
                            if e.decision_id == decision_id
                            and e.kind in ("passage_completed", "passage_timed_out", "link_lost", "emergency_on")
                        ),
                        None,
                    )
                    if outcome is None:
                        self._changed.wait(max(0.01, min(0.2, deadline - time.monotonic())))
        locked = self.controller.lock()
        return GateCycleReply(
            ok=bool(opened.ok and locked),
            decision_id=decision_id,
            opened=opened.ok,
            passage=outcome or "no_report",
            locked=locked,
            status=self.controller.status(),
        )
