"""The running lane's replies on the control socket: one versioned pydantic model per command.

These are the `result` of a successful control response (docs/control-api.md); the server serialises
them with `model_dump(mode="json")` and `egate diag` parses them with the same models. `REPLY_MODELS`
names every command the daemon registers (the server's own `ping` included) and `reply_schemas()`
exports their JSON Schema next to the MQTT payloads' (`egate schemas write`).

Each model carries `v` (reply version) and forbids unknown fields, so the daemon cannot put a field on
the wire that the contract does not name. A reader of an older egate may meet a field added within a
version: `parse_reply` ignores unknown fields and checks everything it knows. Anything incompatible
bumps `v`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from egate.drivers.turnstile.base import GateStatus
from egate.edge.lane.snapshot import Snapshot
from egate.edge.service.control_socket import ControlError, PingReply, SelftestDeviceResult
from egate.edge.session.records import LaneStatus, OutcomeRecord
from egate.edge.session.states import Guidance
from egate.edge.uplink.messages import LatencyPercentiles

REPLY_VERSION: Literal[1] = 1

ReplyT = TypeVar("ReplyT", bound=BaseModel)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(REPLY_VERSION, description="Reply version.")


def parse_reply(model: type[ReplyT], result: dict[str, Any]) -> ReplyT:
    """A control result read with its reply model; fields a newer daemon added within `v` are ignored.

    Raises ControlError (what `egate diag` reports with its hint) when the result does not fit."""
    try:
        return model.model_validate(result, extra="ignore")
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "result"
        raise ControlError(
            f"the daemon's answer does not match {model.__name__} v{REPLY_VERSION} ({where}: {first['msg']})",
            "use the egate diag installed with the daemon (same egate version)",
        ) from None


# ---------------------------------------------------------------- status


class DeviceSummary(BaseModel):
    """One device's health as the lane sees it (control `status`, retained MQTT status, officer's view)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: bool
    detail: str = Field(description="One line for a technician: what is wrong and, where known, the fix.")
    code: str | None = Field(
        None,
        max_length=64,
        description="Stable reason code where the device has one (the MQTT link's error category: "
        "unreachable, bad_credentials, not_authorised, tls_failure, refused, protocol, lost, ...).",
    )


class StatusVersions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    software: str | None = Field(description="egate version.")
    model: str | None = Field(description="Face model id; null while no engine is loaded.")
    config: str | None = Field(description="Hash of the effective config.")
    gallery: str | None = Field(description="Version of the active gallery; null without one.")


class GallerySummary(BaseModel):
    """The gallery loaded in the daemon (it holds the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    subjects: int = Field(ge=0)
    templates: int = Field(ge=0)
    expires_at: datetime


class NoGallery(BaseModel):
    """No gallery loaded (none pushed yet, or the last one expired and was purged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: None = None


class StatusReply(LaneStatus):
    """`status`: the lane's state (`LaneStatus` fields) plus devices, versions and the gallery."""

    v: Literal[1] = Field(REPLY_VERSION, description="Reply version.")
    guidance: Guidance | None = Field(description="What the traveller is told now; null before the first session.")
    devices: dict[str, DeviceSummary] = Field(description="Device name -> health.")
    versions: StatusVersions
    gallery: GallerySummary | NoGallery


class OutcomesReply(_Reply):
    """`outcomes`: the most recent outcome records, newest first."""

    outcomes: list[OutcomeRecord]


class MaintenanceReply(_Reply):
    """`maintenance`: the technician's own hold; `off` leaves an ops closure in place."""

    maintenance: bool = Field(description="The lane is held out of service (by anyone).")
    owners: list[str] = Field(description="Who holds it: technician, ops.")
    state: str = Field(description="Lane state name, upper case (OUT_OF_SERVICE, IDLE, ...).")


class AlarmClearReply(_Reply):
    """`alarm.clear`: the lane's state once the acknowledgement was handled."""

    state: str = Field(description="Lane state name, upper case.")
    alarm: str | None = Field(description="The alarm still active, if any.")


# ---------------------------------------------------------------- gate


class GateStatusReply(RootModel[GateStatus]):
    """`gate.status`: the gate driver's typed status (any driver: link, security, gate state, inputs)."""


class GateOpenReply(_Reply):
    """`gate.open` (maintenance only): one passage allowed."""

    ok: bool = Field(description="The controller acknowledged the open command.")
    decision_id: str = Field(description="Id sent with the open command (diag-<uuid7>).")
    status: GateStatus = Field(description="The controller's status after the command.")


class GateLockReply(_Reply):
    """`gate.lock` (maintenance only)."""

    ok: bool = Field(description="The controller acknowledged the lock command.")
    status: GateStatus = Field(description="The controller's status after the command.")


class GateCycleReply(_Reply):
    """`gate.cycle` (maintenance only): open, wait for the passage report, lock."""

    ok: bool = Field(description="Opened, passage completed and locked.")
    decision_id: str
    opened: bool
    passage: str = Field(
        description="The gate's report for this decision (passage_completed, passage_timed_out, ...), "
        "no_report when none came in time, not_opened when the open was refused."
    )
    locked: bool
    status: GateStatus = Field(description="The controller's status after the lock.")


# ---------------------------------------------------------------- devices


class ReaderLastReply(_Reply):
    """`reader.last`: the allowlisted view of the last reader result (no personal data)."""

    result: dict[str, Any] | None = Field(
        description="egate.drivers.document.redact.public_view of the last result; null before the first."
    )
    at: datetime | None = Field(description="When it was read.")
    connected: bool = Field(description="The serial reader's port is open.")


class LinkErrorView(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str = Field(description="Stable code: unreachable, bad_credentials, not_authorised, tls_failure, ...")
    message: str = Field(description="What is wrong and what to check.")
    at: datetime = Field(description="When it happened.")


class OutboxView(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: int = Field(ge=0, description="Records waiting for the broker's acknowledgement.")
    bytes: int = Field(ge=0)
    oldest_age_s: float | None = Field(description="Age of the oldest waiting record; null when empty.")
    fill_ratio: float = Field(ge=0, description="Share of the outbox bound in use.")


class MqttStatusReply(_Reply):
    """`mqtt.status`: the daemon's MQTT link. The counters are null when the link is disabled (no link runs)."""

    enabled: bool = Field(description="link.enabled in the config.")
    connected: bool
    protocol: str | None = Field(None, description="MQTT version in use: 5 or 3.1.1.")
    connect_attempts: int | None = None
    connects: int | None = None
    published: int | None = None
    acked: int | None = None
    inflight: int | None = None
    outbox_depth: int | None = None
    work_queued: int | None = None
    downlink_refused: int | None = None
    parked: int | None = Field(None, description="Outbox records the broker keeps refusing, held back.")
    last_error: LinkErrorView | None = Field(description="Why the link is down; null while connected.")
    outbox: OutboxView | None = Field(description="The outbox; null when the lane has none.")


class EnginesStatusReply(_Reply):
    """`engines.status`: the face engine and its inference worker, as measured."""

    backend: str = Field(description="Configured backend (engine.backend).")
    running_backend: str | None = Field(description="Backend running the models now.")
    fallback_reason: str | None = Field(description="Why the configured backend is not the running one.")
    model_id: str | None
    threshold: float | None
    worker_alive: bool
    last_inference_ms: float | None
    fps: float = Field(ge=0, description="Frames processed per second (last 5 s).")
    stages: dict[str, LatencyPercentiles] = Field(description="Engine stage -> latency percentiles.")
    errors: int = Field(ge=0, description="Inference failures since start.")
    last_error: str | None = Field(description="The last inference failure (type and message).")


# ---------------------------------------------------------------- the registry

REPLY_MODELS: dict[str, type[BaseModel]] = {
    "ping": PingReply,
    "status": StatusReply,
    "outcomes": OutcomesReply,
    "maintenance": MaintenanceReply,
    "alarm.clear": AlarmClearReply,
    "gate.status": GateStatusReply,
    "gate.open": GateOpenReply,
    "gate.lock": GateLockReply,
    "gate.cycle": GateCycleReply,
    "camera.snapshot": Snapshot,
    "reader.last": ReaderLastReply,
    "mqtt.status": MqttStatusReply,
    "engines.status": EnginesStatusReply,
    "selftest.device": SelftestDeviceResult,
}


def reply_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every command's result, keyed by command name (like `message_schemas()` for MQTT)."""
    return {cmd: model.model_json_schema() for cmd, model in REPLY_MODELS.items()}
