"""What a session writes and reports: the outcome record (outbox, MQTT), lane events and the lane's
status. Versioned wire types (docs/mqtt.md); nothing personal beyond the masked document number."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from egate.edge.session.policy import (
    ComparisonKind,
    Reason,
    Verdict,
)
from egate.edge.session.states import LaneState, PassageResult
from egate.edge.settings.lane import Mode

log = structlog.get_logger(__name__)

# 2: write-ahead decisions. An ACCEPT is committed as a `decision` record before the open command and
# its turnstile result follows as a `passage` record with the same txn_id (version 1 wrote one record
# per session, after the passage).
OUTCOME_SCHEMA_VERSION: Literal[2] = 2
# Devices the lane never serves without once they reported a fault, whatever lane.required_devices says:
# the outcome store (no record, no opening) and the gallery (a gallery refused at start).
ALWAYS_REQUIRED_WHEN_REPORTED = ("outbox", "gallery")
LANE_EVENT_SCHEMA_VERSION: Literal[1] = 1


# --------------------------------------------------------------------------------------------------
# States, guidance, gate event kinds
# --------------------------------------------------------------------------------------------------


class VersionInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    software: str = Field("", description="egate version.")
    model: str = Field("", description="Face model id / manifest hash.")
    config: str = Field("", description="Active config version or hash.")
    gallery: str | None = Field(None, description="Active gallery version, when one was used.")


class ComparisonRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ComparisonKind
    subject_id: str | None = Field(None, description="Opaque gallery subject id (no personal data).")
    score: float
    threshold: float
    higher_is_better: bool
    passed: bool


class DocumentSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    number_masked: str = Field(description="Document number masked as first 2 + *** + last 1.")
    issuing_state: str
    expiry: date | None
    checks_ok: bool


class BoardingPassSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flight: str
    flight_date: int | None
    valid: bool


class ChipSummary(BaseModel):
    """What the ePassport chip step did (ICAO 9303-11 inspection), without personal data: no MRZ, no
    image, no document number; the driver's reason code says which check failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result: Literal["authentic", "failed", "absent", "timeout", "no_key"] = Field(
        description="authentic: access control, every file and Passive Authentication passed; failed: see "
        "reason; absent: no card on the reader; timeout: no answer within lane.chip_timeout_s; no_key: the "
        "page MRZ gave no access key."
    )
    reason: str | None = Field(
        None,
        description="egate.drivers.chip reason code: chip_unreadable, chip_access_denied, chip_malformed, "
        "chip_not_emrtd, chip_aa_failed, pa_signature, pa_untrusted_csca, pa_hash_mismatch, pa_ds_expired, "
        "pa_ds_revoked, pa_no_trust_list, pa_malformed, chip_timeout.",
    )
    access_protocol: str | None = Field(None, description="PACE-ECDH-GM-..., BAC, or None when access failed.")
    dg1_matches_page: bool | None = Field(None, description="DG1's MRZ equals the page's (None: DG1 not read).")
    dg2_face: bool = Field(False, description="A face was found in DG2 and compared (kind 1:1_chip).")
    clone_detection: Literal["none", "active_authentication", "chip_authentication"] = Field(
        "none", description="Which clone-detection step ran and passed (9303-11 §6, §7)."
    )
    active_authentication: str = Field("not_offered", description="not_offered | done | failed")
    chip_authentication: str = Field("not_offered", description="not_offered | not_done | done")
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="Each read step (access, dg1, dg2, sod, com, dg14, dg15, pa, aa, ca)."
    )


class OutcomeRecord(BaseModel):
    """The transaction log entry (BSI TR-03121-style); never an image or a template.

    Every session has one `decision` record. An ACCEPT's decision record is committed before the gate is
    told to open; the turnstile's result follows as a `passage` record with the same `txn_id` (ops join
    the two on it). A session without a `passage` record after an ACCEPT means the daemon died during
    the passage: the gate may have opened once, never more.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[2] = OUTCOME_SCHEMA_VERSION
    record: Literal["decision", "passage"] = Field(
        "decision", description="decision: the verdict (before any opening); passage: the turnstile's result."
    )
    txn_id: str = Field(description="UUIDv7 of the session; also the decision id sent to the turnstile.")
    gate_id: str
    mode: Mode
    started_at: datetime
    ended_at: datetime
    decision: Verdict
    reasons: list[Reason]
    subject_id: str | None = Field(None, description="Matched opaque gallery subject id on ACCEPT.")
    comparisons: list[ComparisonRecord] = Field(default_factory=list)
    quality: float | None = Field(None, description="Quality score (0..1) of the chosen (matched) frame.")
    quality_issues: list[str] = Field(
        default_factory=list, description="The engine's quality-gate failures on the chosen frame."
    )
    quality_detail: dict[str, float] = Field(
        default_factory=dict, description="Quality measurements of the chosen frame (pose, size, sharpness...)."
    )
    frames_seen: int = 0
    single_face_frames: int = 0
    multi_face_frames: int = 0
    document: DocumentSummary | None = None
    boarding_pass: BoardingPassSummary | None = None
    chip: ChipSummary | None = Field(None, description="The ePassport chip step (entry mode, chip policy on).")
    passage: PassageResult | None = Field(
        None, description="What the turnstile reported after ACCEPT (passage records only)."
    )
    versions: VersionInfo
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="capture, engine_<stage> (chosen frame), chip_wait (session start to the chip step's "
        "end), match, decide, frame_to_open, passage, total.",
    )


class LaneEvent(BaseModel):
    """A state change or notable happening, for the status topic and the log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = LANE_EVENT_SCHEMA_VERSION
    kind: Literal[
        "state_changed",
        "session_started",
        "decision",
        "alarm",
        "emergency",
        "out_of_service",
        "in_service",
        "mode_changed",
        "flights_changed",
        "gate_event_ignored",
    ]
    gate_id: str
    state: LaneState
    mode: Mode
    txn_id: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


class LaneStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gate_id: str
    state: LaneState
    mode: Mode
    txn_id: str | None
    in_service: bool
    maintenance: bool = Field(False, description="Out of service on purpose (technician or ops command).")
    maintenance_owners: list[str] = Field(
        default_factory=list, description="Who holds the lane in maintenance: technician and/or ops."
    )
    out_of_service_reasons: list[str] = Field(
        default_factory=list, description="Why the lane is out of service, e.g. 'camera: no frames for 3 s'."
    )
    alarm: str | None = None
    lane_id: str | None = Field(None, description="Lane tag this gate matches (gallery subjects tagged for it).")
    flights: list[str] = Field(default_factory=list, description="Flights eligible now; empty = any flight.")


# Where a face may sit in the frame before the traveller is asked to move: its centre within this
# distance of the middle (fraction of the frame width), its width at most this fraction of the frame.
