"""What ops and technicians see of a running lane: device summary, retained status, health, events.

Plain functions of a `Lane` (edge/lane/assembly.py owns the parts); nothing here changes the lane.
"""

from __future__ import annotations

import hashlib
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING

from egate.edge.lane.replies import DeviceSummary
from egate.edge.session.records import LaneEvent, LaneStatus
from egate.edge.uplink.messages import DeviceState, EventPayload, HealthPayload, LatencyPercentiles, StatusPayload

if TYPE_CHECKING:
    from egate.edge.lane.view import RunningLane
    from egate.edge.settings import Settings
    from egate.edge.uplink.link import LinkError


def software_version() -> str:
    try:
        return package_version("egate")
    except PackageNotFoundError:
        return "0+unknown"


def config_fingerprint(settings: Settings) -> str:
    """Short hash of the effective config, for status and outcome records."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:12]


def device_summary(lane: RunningLane) -> dict[str, DeviceSummary]:
    """Each device's ok flag and a one-line detail (control `status`, retained MQTT status)."""
    out = {name: DeviceSummary(ok=ok, detail=why or "ok") for name, (ok, why) in lane.device_health.items()}
    if lane.camera is not None:
        st = lane.camera.stats()
        camera = out.get("camera") or DeviceSummary(ok=st.state == "streaming", detail=st.state)
        if st.state == "streaming":
            camera = camera.model_copy(update={"detail": f"{st.state}, {st.fps} fps"})
        out["camera"] = camera
    if lane.gate is not None:
        # Live, not the last poll: status must never show the lane out for a gate fault while the
        # gate row still says ok.
        link = lane.gate.link_state
        auth_failed = lane.gate.status().link_auth_failed
        out["gate"] = DeviceSummary(
            ok=link == "up" and not auth_failed,
            detail="the controller refuses our key" if auth_failed else f"turnstile link {link}",
        )
    if lane.worker is not None:
        detail = f"{lane.worker.fps()} fps processed, last {lane.worker.last_inference_ms} ms"
        backend = lane.engine.backend_status() if lane.engine is not None else None
        if backend is not None and backend["fallback_reason"]:
            # Still in service (the CPU serves), but a technician must see that the GPU is not used.
            detail += f"; running on CPU ({backend['running']}): {backend['fallback_reason']}"
        out["engine"] = DeviceSummary(ok=lane.worker.alive and not lane.worker.stuck(), detail=detail)
    if lane.link is not None:
        out["mqtt"] = _link_summary(lane.link.connected, lane.link.last_error)
    return out


def _link_summary(connected: bool, err: LinkError | None) -> DeviceSummary:
    """The link's row: its error's category as the code and its message as the detail (never a repr)."""
    if connected:
        return DeviceSummary(ok=True, detail="connected")
    if err is None:
        return DeviceSummary(ok=False, detail="connecting to the broker (no attempt has failed yet)")
    return DeviceSummary(ok=False, detail=err.message, code=err.category)


def status_payload(lane: RunningLane) -> StatusPayload:
    st = lane.status()
    g = lane.gallery.current if lane.gallery is not None else None
    devices = {
        name: DeviceState(state="ok" if d.ok else "fault", detail=d.detail[:500], code=d.code)
        for name, d in device_summary(lane).items()
    }
    return StatusPayload(
        state="online",
        site=lane.settings.gate.site_id,
        gate=lane.settings.gate.gate_id,
        mode=_reported_mode(lane, st),
        software_version=software_version(),
        config_version=config_fingerprint(lane.settings),
        gallery_version=None if g is None else str(g.version),
        model_versions={"face": lane.engine.model_id} if lane.engine is not None else {},
        devices=devices,
        lane=st.lane_id if st is not None else None,
        flights=list(st.flights) if st is not None else [],
        maintenance_by=list(st.maintenance_owners) if st is not None else [],
    )


def _reported_mode(lane: RunningLane, st: LaneStatus | None) -> str:
    """The lane mode while in service; otherwise why it is not serving (maintenance or a fault)."""
    if st is None:
        return lane.settings.gate.mode
    if st.in_service:
        return st.mode.value
    if st.maintenance:
        return "maintenance"
    return "out_of_service"


def health_payload(lane: RunningLane) -> HealthPayload:
    stats = lane.outbox.stats() if lane.outbox is not None else None
    latency = {}
    if lane.worker is not None:
        latency = {k: LatencyPercentiles(**v) for k, v in lane.worker.stage_percentiles().items()}
    return HealthPayload(
        gate=lane.settings.gate.gate_id,
        uptime_s=round(time.monotonic() - lane.started_mono, 1),
        fps=lane.worker.fps() if lane.worker is not None else None,
        latency=latency,
        outbox_depth=stats.depth if stats else None,
        outbox_oldest_age_s=stats.oldest_age_s if stats else None,
        temperatures_c=read_temperatures(),
    )


def event_payload(event: LaneEvent) -> EventPayload | None:
    """Lane events ops must hear about, as outbox events (state changes stay in the log)."""
    if event.kind == "alarm":
        kind = event.detail.get("kind", "")
        return EventPayload(
            type="tailgate" if kind == "tailgate" else "forced_door",
            severity="alarm",
            message=f"{kind} at the gate: entry locked until cleared",
            details={"txn_id": event.txn_id or "", "state": event.state.value},
        )
    if event.kind == "emergency":
        on = event.detail.get("on") == "true"
        return EventPayload(
            type="emergency",
            severity="critical" if on else "info",
            message="emergency input active: all leaves released" if on else "emergency input cleared: entry locked",
            details={"on": on},
        )
    if event.kind == "out_of_service":
        return EventPayload(
            type="device_fault", severity="warning", message="lane out of service", details=dict(event.detail)
        )
    if event.kind == "in_service":
        return EventPayload(type="device_recovered", severity="info", message="lane back in service")
    if event.kind == "mode_changed":
        return EventPayload(
            type="mode_changed", severity="info", message="lane mode changed", details=dict(event.detail)
        )
    return None


def read_temperatures() -> dict[str, float]:
    """Thermal zones from sysfs (Jetson: CPU, GPU, SoC), where readable."""
    out: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip()
            out[name[:32]] = round(int((zone / "temp").read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return out
