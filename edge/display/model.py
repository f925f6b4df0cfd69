"""What the daemon tells the display (one JSON object per line on the feed socket), versioned.

Nothing personal: the lane's state, mode and guidance kind, the language of the document just read
(never the nationality or anything else from it), device health and the reason codes of recent
referrals. No image, no name, no document number, no subject id.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FEED_VERSION: Literal[1] = 1


class LaneView(BaseModel):
    """The lane as the traveller's screen sees it; `seq` grows with every change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0, description="Change counter since the daemon started.")
    at: float = Field(description="Wall-clock time (Unix seconds) of the lane event that made this view.")
    state: str = Field(description="egate.edge.session.states.LaneState value.")
    mode: str = Field(description="Lane mode: exit, entry or boarding.")
    guidance: str | None = Field(None, description="egate.edge.session.states.Guidance value last emitted.")
    maintenance: bool = Field(False, description="Out of service on purpose (closed), not for a fault.")
    alarm: str | None = Field(None, description="tailgate or door_forced while in ALARM.")
    language: str | None = Field(None, description="Language of the document read for this traveller, if any.")


class DeviceView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    detail: str = Field("", max_length=300)


class ReferralView(BaseModel):
    """One recent referral: when and why (reason codes only)."""

    model_config = ConfigDict(extra="forbid")

    at: str = Field(description="ISO time the session ended.")
    mode: str
    reasons: list[str]


class SupervisorView(BaseModel):
    """What the officer's read-only page shows, refreshed with every heartbeat."""

    model_config = ConfigDict(extra="forbid")

    gate_id: str
    in_service: bool
    out_of_service_reasons: list[str] = Field(default_factory=list)
    devices: dict[str, DeviceView] = Field(default_factory=dict)
    referrals: list[ReferralView] = Field(default_factory=list)
    outcomes_total: int = 0
    accepted_total: int = 0


class LaneMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = FEED_VERSION
    type: Literal["lane"] = "lane"
    lane: LaneView


class HeartbeatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = FEED_VERSION
    type: Literal["heartbeat"] = "heartbeat"
    at: float
    supervisor: SupervisorView


FeedMessage = Annotated[LaneMessage | HeartbeatMessage, Field(discriminator="type")]
