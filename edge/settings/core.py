"""Config sections owned by the daemon itself: identity, logging, state, control socket."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from egate.edge.ids import ID_PATTERN


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: str = Field("demo-site", pattern=ID_PATTERN, description="Site (airport/terminal) id used in MQTT topics.")
    gate_id: str = Field("gate-01", pattern=ID_PATTERN, description="This gate's id, unique within the site.")
    mode: Literal["exit", "entry", "boarding"] = Field(
        "exit",
        description="Lane mode at start: exit (1:N flight gallery), entry (1:1 document holder), "
        "boarding (boarding pass -> passenger -> 1:1). A signed ops command can change it.",
    )


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="json for journald, console for people; auto picks console on a terminal."
    )


LEGACY_PRIVACY_KEYS = ("store_face_images", "store_templates", "log_full_document_numbers")


def drop_legacy_privacy(section: object) -> None:
    """`[privacy]` of older configs: its switches asked for face images, templates or full document numbers
    on disk or in logs, which this gate never does (egate.drivers.document.redact is the one rule). A section that
    leaves them all off is dropped; one that turns any on is refused, so nobody believes they are kept."""
    if not isinstance(section, dict):
        raise ValueError("[privacy] must be a table")
    unknown = sorted(set(section) - set(LEGACY_PRIVACY_KEYS))
    if unknown:
        raise ValueError(f"[privacy] has no setting {', '.join(unknown)}")
    enabled = [key for key in LEGACY_PRIVACY_KEYS if section.get(key)]
    if enabled:
        raise ValueError(
            f"privacy.{enabled[0]} is no longer supported: the gate never writes face images or templates and "
            "never logs full document numbers; remove the [privacy] section"
        )


class StateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(
        Path("/var/lib/egate"),
        description="Writable state (models, gallery, trust, outbox); systemd StateDirectory=egate.",
    )
    model_dir: Path | None = Field(
        None, description="Model cache; default <state_dir>/models (filled by `egate models build`)."
    )

    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.state_dir / "models"


class ControlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    socket_path: Path = Field(
        Path("/run/egate/control.sock"),
        description="UNIX socket of the local control API used by `egate diag`.",
    )
    socket_group: str | None = Field(
        "egate-tech",
        description="Group allowed to use the control socket (mode 0660); none keeps the owner only.",
    )
    request_deadline_s: float = Field(
        10.0,
        ge=0.5,
        le=300.0,
        description="A request line must be complete this long after the connection opened or the last answer "
        "(absolute: trickled bytes do not extend it).",
    )
    connection_deadline_s: float = Field(
        120.0, ge=1.0, le=3600.0, description="No control connection lives longer than this, whatever it sends."
    )


class HealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check_interval_s: float = Field(
        2.0, ge=0.1, le=60, description="How often components are health-checked (drives systemd WATCHDOG=1)."
    )
    stop_timeout_s: float = Field(
        4.0, ge=0.5, le=4.5, description="Budget for a clean stop; systemd kills after 5 s, so stay below."
    )
