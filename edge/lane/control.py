"""The running lane's answers on the control socket (docs/control-api.md): what `egate diag` asks.

Nothing personal leaves through here: outcome records carry opaque subject ids and masked document
numbers only (the tool strips even those), reader results are masked, and the only image is the
snapshot a technician asks for explicitly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import uuid6
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from egate.drivers.document.redact import public_view
from egate.edge.lane.device_checks import camera_check, device_result, mqtt_check, reader_check, turnstile_check
from egate.edge.lane.replies import (
    AlarmClearReply,
    EnginesStatusReply,
    GallerySummary,
    GateCycleReply,
    GateLockReply,
    GateOpenReply,
    GateStatusReply,
    LinkErrorView,
    MaintenanceReply,
    MqttStatusReply,
    NoGallery,
    OutboxView,
    OutcomesReply,
    ReaderLastReply,
    StatusReply,
    StatusVersions,
)
from egate.edge.lane.snapshot import Snapshot, make_snapshot
from egate.edge.service.control_socket import ControlRefused, ControlServer, DeviceCheck, SelftestDeviceResult
from egate.edge.service.daemon import Health
from egate.edge.session.events import ClearAlarm, Maintenance
from egate.edge.session.records import LaneStatus
from egate.edge.session.states import LaneState
from egate.edge.uplink.messages import LatencyPercentiles

if TYPE_CHECKING:
    from egate.edge.lane.view import RunningLane

MAINTENANCE_HINT = "enter maintenance mode: egate diag maintenance on / signed ops command set_mode maintenance"
MAX_GATE_TIMEOUT_S = 12.0


ArgsT = TypeVar("ArgsT", bound="_Args")


class _Args(BaseModel):
    # Strict: `{"on": "false"}` is refused, never read as true; unknown arguments are refused too.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoArgs(_Args):
    pass


class MaintenanceArgs(_Args):
    on: bool = Field(description="true: take the lane out of service; false: back in service.")


class OutcomesArgs(_Args):
    n: int = Field(10, ge=1, le=100, description="How many recent outcome records.")


class GateTimeoutArgs(_Args):
    timeout_s: float = Field(5.0, gt=0, le=MAX_GATE_TIMEOUT_S, description="How long the gate stays open.")


def strict_args(model: type[ArgsT], args: dict[str, Any], cmd: str) -> ArgsT:
    """`args` checked against the command's model, or ControlRefused naming the first bad argument."""
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "args"
        fields = ", ".join(
            f"{name}: {f.annotation.__name__ if f.annotation else '?'}" for name, f in model.model_fields.items()
        )
        raise ControlRefused(f"{cmd}: argument {where}: {first['msg']}", f"{cmd} takes {{{fields}}}") from None


class LaneControl:
    """Registers the lane's handlers on a `ControlServer` and runs it as a daemon component."""

    name = "control"

    def __init__(self, lane: RunningLane) -> None:
        self.lane = lane
        cfg = lane.settings.control
        self.server = ControlServer(
            cfg.socket_path,
            cfg.socket_group,
            request_deadline_s=cfg.request_deadline_s,
            connection_deadline_s=cfg.connection_deadline_s,
            handlers={
                "status": self.status,
                "outcomes": self.outcomes,
                "maintenance": self.maintenance,
                "alarm.clear": self.clear_alarm,
                "gate.status": self.gate_status,
                "gate.open": self.gate_open,
                "gate.lock": self.gate_lock,
                "gate.cycle": self.gate_cycle,
                "camera.snapshot": self.snapshot,
                "reader.last": self.reader_last,
                "mqtt.status": self.mqtt_status,
                "engines.status": self.engines_status,
                "selftest.device": self.selftest_device,
            },
        )

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()

    def health(self) -> Health:
        return self.server.health()

    # ---- lane ------------------------------------------------------------------------------------

    def status(self, _args: dict[str, Any]) -> StatusReply:
        lane = self.lane
        st = lane.status()
        g = lane.gallery.current if lane.gallery is not None else None
        versions = lane.status_payload()
        return StatusReply(
            **st.model_dump(),
            guidance=lane.guidance,
            devices=lane.device_summary(),
            versions=StatusVersions(
                software=versions.software_version,
                model=lane.engine.model_id if lane.engine else None,
                config=versions.config_version,
                gallery=versions.gallery_version,
            ),
            gallery=(
                NoGallery()
                if g is None
                else GallerySummary(
                    version=g.version, subjects=g.subject_count, templates=g.template_count, expires_at=g.expires_at
                )
            ),
        )

    def outcomes(self, args: dict[str, Any]) -> OutcomesReply:
        n = strict_args(OutcomesArgs, args, "outcomes").n
        return OutcomesReply(outcomes=list(self.lane.recent_outcomes)[:n])

    def maintenance(self, args: dict[str, Any]) -> MaintenanceReply:
        on = strict_args(MaintenanceArgs, args, "maintenance").on
        self.lane.post(Maintenance(on, reason="technician (egate diag)", owner="technician"))
        st = self._wait_status(lambda s: ("technician" in s.maintenance_owners) == on)
        # `off` ends the technician's maintenance only: an ops closure (set_mode closed) stays.
        return MaintenanceReply(maintenance=st.maintenance, owners=st.maintenance_owners, state=st.state.value.upper())

    def clear_alarm(self, _args: dict[str, Any]) -> AlarmClearReply:
        self.lane.post(ClearAlarm())
        st = self._wait_status(lambda s: s.state is not LaneState.ALARM)
        return AlarmClearReply(state=st.state.value.upper(), alarm=st.alarm)

    def _wait_status(self, done: Callable[[LaneStatus], bool], timeout: float = 3.0) -> LaneStatus:
        """The lane's status once `done(status)` holds (the loop handles events on its own thread)."""
        loop = self.lane.loop
        deadline = time.monotonic() + timeout
        st = self.lane.status()
        while not done(st) and time.monotonic() < deadline and loop is not None:
            loop.wait_handled(loop.handled + 1, timeout=0.1)
            st = self.lane.status()
        return st

    # ---- gate -----------------------------------------------------------------------------------

    def _gate(self, action: str) -> Any:
        gate = self.lane.gate
        if gate is None:
            raise ControlRefused("no turnstile controller", "check [turnstile] in the config")
        if action != "status":
            st = self.lane.status()
            if not st.maintenance:
                raise ControlRefused(f"gate.{action} refused: the lane is not in maintenance mode", MAINTENANCE_HINT)
        return gate

    def gate_status(self, _args: dict[str, Any]) -> GateStatusReply:
        return GateStatusReply(self._gate("status").status())

    def gate_open(self, args: dict[str, Any]) -> GateOpenReply:
        timeout = strict_args(GateTimeoutArgs, args, "gate.open").timeout_s
        gate = self._gate("open")
        decision_id = f"diag-{uuid6.uuid7()}"
        ok = gate.open_for_passage(decision_id, timeout)
        return GateOpenReply(ok=ok, decision_id=decision_id, status=gate.status())

    def gate_lock(self, _args: dict[str, Any]) -> GateLockReply:
        gate = self._gate("lock")
        return GateLockReply(ok=gate.lock(), status=gate.status())

    def gate_cycle(self, args: dict[str, Any]) -> GateCycleReply:
        timeout = strict_args(GateTimeoutArgs, args, "gate.cycle").timeout_s
        gate = self._gate("cycle")
        decision_id = f"diag-{uuid6.uuid7()}"
        done, seen = self.lane.wait_gate_event(decision_id)
        try:
            opened = gate.open_for_passage(decision_id, timeout)
            passage = "not_opened"
            if opened:
                passage = seen[0].kind if done.wait(timeout + 3.0) and seen else "no_report"
            locked = gate.lock()
        finally:
            self.lane.drop_gate_waiter(decision_id)
        return GateCycleReply(
            ok=opened and passage == "passage_completed" and locked,
            decision_id=decision_id,
            opened=opened,
            passage=passage,
            locked=locked,
            status=gate.status(),
        )

    # ---- devices --------------------------------------------------------------------------------

    def snapshot(self, _args: dict[str, Any]) -> Snapshot:
        lane = self.lane
        last = lane.worker.last_frame() if lane.worker is not None else None
        if last is None or lane.camera is None:
            raise ControlRefused("no camera frame processed yet", "check the camera: egate diag selftest (camera row)")
        thresholds = lane.settings.engine.quality
        return make_snapshot(
            last.image,
            last.observations,
            camera_stats=lane.camera.stats().model_dump(),
            problems=[thresholds.acceptable(o.quality) for o in last.observations],
        )

    def reader_last(self, _args: dict[str, Any]) -> ReaderLastReply:
        lane = self.lane
        connected = lane.reader.serial_connected if lane.reader is not None else False
        if lane.reader_last is None:
            return ReaderLastReply(result=None, at=None, connected=connected)
        result, at = lane.reader_last
        data = public_view(result)  # the allowlisted view: no name, birth date, raw text or repair values
        return ReaderLastReply(result=data, at=at, connected=connected)

    def mqtt_status(self, _args: dict[str, Any]) -> MqttStatusReply:
        lane = self.lane
        fields: dict[str, Any] = {}
        last_error = None
        if lane.link is not None:
            fields = dataclasses.asdict(lane.link.stats())
            err = lane.link.last_error
            if err is not None:
                last_error = LinkErrorView(
                    category=err.category, message=err.message, at=datetime.fromtimestamp(err.at, timezone.utc)
                )
        outbox = None
        if lane.outbox is not None:
            st = lane.outbox.stats()
            outbox = OutboxView(depth=st.depth, bytes=st.bytes, oldest_age_s=st.oldest_age_s, fill_ratio=st.fill_ratio)
            fields["outbox_depth"] = st.depth
        fields.setdefault("connected", False)
        return MqttStatusReply(enabled=lane.settings.link.enabled, last_error=last_error, outbox=outbox, **fields)

    def engines_status(self, _args: dict[str, Any]) -> EnginesStatusReply:
        lane = self.lane
        worker = lane.worker
        backend = lane.engine.backend_status() if lane.engine else {}
        return EnginesStatusReply(
            backend=lane.settings.engine.backend,
            running_backend=backend.get("running"),
            fallback_reason=backend.get("fallback_reason"),
            model_id=lane.engine.model_id if lane.engine else None,
            threshold=lane.engine.threshold if lane.engine else None,
            worker_alive=bool(worker and worker.alive),
            last_inference_ms=worker.last_inference_ms if worker else None,
            fps=worker.fps() if worker else 0.0,
            stages={
                stage: LatencyPercentiles(**values)
                for stage, values in (worker.stage_percentiles() if worker else {}).items()
            },
            errors=worker.errors if worker else 0,
            last_error=worker.last_error if worker else None,
        )

    def selftest_device(self, _args: dict[str, Any]) -> SelftestDeviceResult:
        lane = self.lane
        cfg = lane.settings
        last = lane.worker.last_frame() if lane.worker is not None else None
        mean_level = float(last.image.mean()) if last is not None else None
        err = lane.link.last_error if lane.link is not None else None
        extra = []
        if lane.page_camera is not None:
            # The page camera only has to stream (a document window changes once per traveller): no fps rule.
            st = lane.page_camera.stats()
            ok = st.state == "streaming"
            extra.append(
                DeviceCheck(
                    name="page_camera",
                    verdict="PASS" if ok else "FAIL",
                    detail=f"{st.kind} {st.state}, {st.width}x{st.height}"
                    + ("" if ok else f" ({st.last_error or st.state})"),
                    hint=""
                    if ok
                    else "check reader.page_camera (the document reader's image output); the daemon "
                    "reopens it by itself",
                )
            )
        return device_result(
            camera_check(
                lane.camera.stats().model_dump() if lane.camera else {"state": "closed"},
                expected_fps=cfg.camera.fps,
                mean_level=mean_level,
            ),
            reader_check(
                cfg.reader.serial_url,
                connected=lane.reader.serial_connected if lane.reader else False,
                last_error=lane.reader.serial_error if lane.reader else None,
            ),
            turnstile_check(lane.gate.status() if lane.gate else None),
            mqtt_check(
                enabled=cfg.link.enabled,
                connected=bool(lane.link and lane.link.connected),
                host=cfg.link.host,
                port=cfg.link.port,
                tls=cfg.link.tls,
                error_category=err.category if err else None,
                error_message=err.message if err else None,
            ),
            *extra,
        )
