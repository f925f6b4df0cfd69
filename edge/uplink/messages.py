"""Versioned payloads of every MQTT topic (docs/mqtt.md). JSON on the wire, one pydantic model per topic.

Each model carries `v` (payload version). Readers must reject a `v` they do not know rather than guess;
new optional fields may be added within a version, anything else bumps `v`.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Base64Bytes, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from egate.drivers.clock import utc_now
from egate.edge.ids import ID_PATTERN

BUNDLE_KIND_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


def _cut_to(limit: int) -> BeforeValidator:
    """Cut a reason text to fit its field: an ack must always build, whatever its reason quotes."""

    def cut(value: object) -> object:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 3] + "..."
        return value

    return BeforeValidator(cut)


AckText = Annotated[str, _cut_to(1000), Field(max_length=1000)]


class _Message(BaseModel):
    # Extra fields are ignored (not forbidden) so a newer peer adding optional fields within a version
    # does not break an older reader; `v` guards incompatible changes.
    model_config = ConfigDict(extra="ignore", frozen=True)


# ---------------------------------------------------------------- status (retained)


class DeviceState(_Message):
    """One device as the health sample reports it (the session's `DeviceHealth` event is the lane-internal fact)."""

    state: Literal["ok", "degraded", "fault", "unknown"] = Field("unknown", description="Device state.")
    detail: str = Field("", max_length=500, description="Why, for a technician (no personal data).")
    code: str | None = Field(
        None,
        max_length=64,
        description="Stable reason code where the device has one (the link's error category: unreachable, "
        "bad_credentials, not_authorised, tls_failure, refused, protocol, lost, ...); null otherwise.",
    )


class StatusPayload(_Message):
    """`.../status`, retained: `online` after each connect, `offline` (last will), `stopped` (clean exit)."""

    v: Literal[1] = 1
    state: Literal["online", "offline", "stopped"] = Field(..., description="Link availability of the gate.")
    site: str = Field(..., pattern=ID_PATTERN)
    gate: str = Field(..., pattern=ID_PATTERN)
    ts: datetime = Field(default_factory=utc_now, description="When this status was produced (timezone.utc).")
    mode: str | None = Field(None, max_length=32, description="Lane mode: exit, entry, boarding, closed, ...")
    software_version: str | None = Field(None, max_length=64)
    config_version: str | None = Field(None, max_length=128, description="Hash or version of the active config.")
    gallery_version: str | None = Field(None, max_length=128, description="Version of the active gallery bundle.")
    model_versions: dict[str, str] = Field(default_factory=dict, description="Model name -> version or hash.")
    devices: dict[str, DeviceState] = Field(default_factory=dict, description="camera, reader, turnstile, ...")
    lane: str | None = Field(None, max_length=64, description="Lane tag the gate matches gallery subjects for.")
    flights: list[str] = Field(
        default_factory=list, max_length=64, description="Flights eligible at the lane now; empty = any flight."
    )
    maintenance_by: list[str] = Field(
        default_factory=list, description="Who holds the lane in maintenance (technician, ops); empty if nobody."
    )


# ---------------------------------------------------------------- outbox: outcome and event


class EventPayload(_Message):
    """Payload of an outbox item of kind `event` (topic `.../event`)."""

    v: Literal[1] = 1
    type: Literal[
        "tailgate",
        "forced_door",
        "emergency",
        "device_fault",
        "device_recovered",
        "outbox_nearly_full",
        "outbox_full",
        "outbox_dropped",
        "mode_changed",
        "other",
    ] = Field(..., description="What happened.")
    severity: Literal["info", "warning", "alarm", "critical"] = Field("warning")
    message: str = Field("", max_length=1000, description="Human readable, no personal data.")
    details: dict[str, Any] = Field(default_factory=dict, description="Type specific numbers and ids.")


class OutboxEnvelope(_Message):
    """What `.../outcome` and `.../event` carry (QoS 1, at least once): dedupe on `id`, order on `seq`."""

    v: Literal[1] = 1
    id: str = Field(..., description="UUIDv7 of this message (time ordered); the dedupe key for ops.")
    seq: int = Field(..., ge=1, description="Per-gate sequence number, gap free unless `outbox_dropped` says so.")
    gate: str = Field(..., pattern=ID_PATTERN)
    kind: Literal["outcome", "event"]
    ts: datetime = Field(..., description="When the gate committed it to its outbox (timezone.utc).")
    payload: dict[str, Any] = Field(..., description="Outcome record (transaction log) or EventPayload.")


# ---------------------------------------------------------------- health (periodic, QoS 0)


class LatencyPercentiles(_Message):
    p50_ms: float | None = Field(None, ge=0)
    p95_ms: float | None = Field(None, ge=0)
    p99_ms: float | None = Field(None, ge=0)


class HealthPayload(_Message):
    """`.../health`: periodic metrics; not queued (a stale sample is worthless), QoS 0."""

    v: Literal[1] = 1
    gate: str = Field(..., pattern=ID_PATTERN)
    ts: datetime = Field(default_factory=utc_now)
    uptime_s: float | None = Field(None, ge=0)
    fps: float | None = Field(None, ge=0, description="Camera frames processed per second.")
    latency: dict[str, LatencyPercentiles] = Field(
        default_factory=dict, description="Stage name (detect, embed, decide, ...) -> percentiles."
    )
    outbox_depth: int | None = Field(None, ge=0)
    outbox_oldest_age_s: float | None = Field(None, ge=0)
    temperatures_c: dict[str, float] = Field(default_factory=dict, description="Sensor -> degrees C, where readable.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Further numeric metrics.")


# ---------------------------------------------------------------- bundles (downlink chunks, uplink ack)


class BundleChunk(_Message):
    """`.../bundle/<kind>`: one chunk of a bundle; every chunk repeats the header so any one can start it."""

    v: Literal[1] = 1
    transfer_id: str = Field(..., pattern=ID_PATTERN, description="Chosen by the sender, unique.")
    kind: str = Field(..., pattern=BUNDLE_KIND_PATTERN, description="gallery, config, model, ... (not 'ack').")
    index: int = Field(..., ge=0)
    count: int = Field(..., ge=1, le=1_000_000)
    chunk_bytes: int = Field(..., ge=1, description="Size of every chunk but the last.")
    total_bytes: int = Field(..., ge=1)
    sha256: str = Field(..., pattern=SHA256_PATTERN, description="SHA-256 of the whole bundle, lower-case hex.")
    data: Base64Bytes = Field(..., description="This chunk's bytes, base64 (JSON has no bytes).")

    @classmethod
    def make(
        cls,
        *,
        transfer_id: str,
        kind: str,
        index: int,
        count: int,
        chunk_bytes: int,
        total_bytes: int,
        sha256: str,
        data: bytes,
    ) -> BundleChunk:
        """Build from raw bytes (the `data` field itself validates base64 text, as it arrives on the wire)."""
        return cls(
            transfer_id=transfer_id,
            kind=kind,
            index=index,
            count=count,
            chunk_bytes=chunk_bytes,
            total_bytes=total_bytes,
            sha256=sha256,
            data=base64.b64encode(data),  # type: ignore[arg-type]
        )

    @model_validator(mode="after")
    def _geometry(self) -> BundleChunk:
        if self.kind == "ack":
            raise ValueError("bundle kind 'ack' is reserved for the uplink topic bundle/ack")
        if self.index >= self.count:
            raise ValueError(f"chunk index {self.index} out of range for count {self.count}")
        expected_count = -(-self.total_bytes // self.chunk_bytes)
        if expected_count != self.count:
            raise ValueError(
                f"count {self.count} does not match total_bytes {self.total_bytes} / chunk_bytes {self.chunk_bytes}"
            )
        last = self.total_bytes - self.chunk_bytes * (self.count - 1)
        want = last if self.index == self.count - 1 else self.chunk_bytes
        if len(self.data) != want:
            raise ValueError(f"chunk {self.index} carries {len(self.data)} bytes, expected {want}")
        return self


class BundleAck(_Message):
    """`.../bundle/ack`: `receiving` (with missing chunk ranges, to resume), then `applied` or `rejected`."""

    v: Literal[1] = 1
    transfer_id: str = Field("", max_length=64)
    kind: str = Field("", max_length=32)
    gate: str = Field("", max_length=64)
    status: Literal["receiving", "applied", "rejected"]
    code: str | None = Field(None, max_length=64, description="Rejection code (the bundle verifier's codes).")
    message: AckText = ""
    received: int = Field(0, ge=0, description="Chunks held by the gate.")
    count: int = Field(0, ge=0, description="Chunks in the transfer.")
    missing: list[tuple[int, int]] = Field(
        default_factory=list, description="Chunk index ranges [first, last] still needed (inclusive)."
    )
    ts: datetime = Field(default_factory=utc_now)

    @classmethod
    def applied(cls, message: str = "") -> BundleAck:
        return cls(status="applied", message=message)

    @classmethod
    def rejected(cls, code: str, message: str) -> BundleAck:
        return cls(status="rejected", code=code, message=message)


# ---------------------------------------------------------------- commands (downlink signed, uplink ack)
# `.../cmd` carries a signed bundle of kind `command` (egate.edge.trust.bundles envelope, binary, not JSON); its
# payload is `egate.edge.trust.bundles.CommandPayload`. Only the ack is defined here.


class CmdAck(_Message):
    """`.../cmd/ack`: `done` or `rejected` (with the verifier's code)."""

    v: Literal[1] = 1
    cmd_id: str = Field("", max_length=64, description="Id of the command; empty if it could not be read.")
    gate: str = Field("", max_length=64)
    status: Literal["done", "rejected"]
    code: str | None = Field(None, max_length=64)
    message: AckText = ""
    ts: datetime = Field(default_factory=utc_now)

    @classmethod
    def done(cls, cmd_id: str, message: str = "") -> CmdAck:
        return cls(cmd_id=cmd_id, status="done", message=message)

    @classmethod
    def rejected(cls, cmd_id: str, code: str, message: str) -> CmdAck:
        return cls(cmd_id=cmd_id, status="rejected", code=code, message=message)


# ---------------------------------------------------------------- schema export

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    "status": StatusPayload,
    "outcome": OutboxEnvelope,
    "event": OutboxEnvelope,
    "event.payload": EventPayload,
    "health": HealthPayload,
    "bundle/<kind>": BundleChunk,
    "bundle/ack": BundleAck,
    "cmd/ack": CmdAck,
}


def message_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every payload, keyed by topic suffix (like `egate config schema` for the config).

    `cmd.payload` is the signed command inside the `.../cmd` bundle envelope (owned by egate.edge.trust.bundles).
    """
    schemas = {topic: model.model_json_schema() for topic, model in TOPIC_MODELS.items()}
    try:
        from egate.edge.trust.bundles import CommandPayload
    except ImportError:  # the bundle module is optional for the link; the contract still exports
        return schemas
    schemas["cmd.payload"] = CommandPayload.model_json_schema()
    return schemas


def to_wire(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()
