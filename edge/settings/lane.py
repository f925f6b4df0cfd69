"""`[lane]` config section (with `[lane.policy]`): how a traveller session runs and how it decides.

Owned by the lane work (`egate.edge.session.machine`, `egate.edge.session.policy`); `egate.edge.settings` composes it into the daemon's config.
Matching thresholds are not here: every comparison carries the threshold the gallery / engine applied,
so the outcome record shows exactly what was used.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from egate.drivers.compat import StrEnum
from egate.edge.ids import ID_PATTERN


class Mode(StrEnum):
    """What a traveller is compared against."""

    EXIT = "exit"  # 1:N against the flight / exit gallery
    ENTRY = "entry"  # 1:1 against the holder of the document read at the gate
    BOARDING = "boarding"  # IATA BCBP -> the passenger's gallery subject -> 1:1


class PolicyConfig(BaseModel):
    """Inputs to `egate.edge.session.policy.decide` that are policy, not measurement."""

    model_config = ConfigDict(extra="forbid")

    min_quality: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Lowest face-quality score (0..1, from the engine) a frame may have to be matched; "
        "below it the session refers with LOW_QUALITY.",
    )
    ambiguity_margin: float = Field(
        0.03,
        ge=0.0,
        le=1.0,
        description="In 1:N, when a different subject scores within this margin of the best passing "
        "subject (in score units), the match is ambiguous and the traveller is referred.",
    )
    check_document_in_exit: bool = Field(
        True,
        description="In exit mode a document is optional; when one was read anyway, refer when it is "
        "invalid or expired (true) or ignore it (false).",
    )
    chip: Literal["off", "when_present", "required"] = Field(
        "off",
        description="Entry mode and the ePassport chip: off (not used), when_present (a chip that answers "
        "must pass access control, DG1 = page MRZ and Passive Authentication, and the live face is also "
        "compared with DG2; a document without a chip may use its page portrait) or required (no chip: refer).",
    )
    chip_expected_issuers: list[str] = Field(
        default_factory=list,
        max_length=300,
        description="Issuing states (ICAO codes, e.g. D, FRA) whose passports all carry a chip: with "
        "chip = when_present, a missing or unreadable chip from these issuers is referred (CHIP_MISSING).",
    )


class LaneConfig(BaseModel):
    """The traveller session state machine (`egate.edge.session.machine.SessionController`)."""

    model_config = ConfigDict(extra="forbid")

    gate_id: str = Field(
        "gate-01",
        min_length=1,
        max_length=64,
        pattern=ID_PATTERN,
        exclude=True,
        description="This lane's id, written into every outcome record (the daemon sets it from gate.gate_id).",
    )
    mode: Mode = Field(
        Mode.EXIT,
        exclude=True,
        description="Start-up mode: exit (1:N), entry (1:1 document) or boarding (the daemon sets it from gate.mode).",
    )
    capture_frames: int = Field(
        3,
        ge=1,
        le=50,
        description="CAPTURING ends as soon as this many single-face frames at or above "
        "policy.min_quality were seen; the best of them by quality is matched.",
    )
    capture_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=60.0,
        description="CAPTURING ends after this long even without enough good frames; the best frame seen "
        "so far (if any) is matched and the policy decides (often LOW_QUALITY or CAPTURE_TIMEOUT).",
    )
    chip_timeout_s: float = Field(
        8.0,
        gt=0.0,
        le=60.0,
        description="Entry mode with lane.policy.chip on: how long after the document was read the session "
        "waits for the chip step (card, access control, DG1, DG2, EF.SOD, Passive Authentication) while it "
        "keeps capturing faces; past it the traveller is referred (CHIP_UNREADABLE, chip reason chip_timeout).",
    )
    trigger_min_quality: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="In exit mode a face at or above this quality starts a session (a face approaching).",
    )
    search_k: int = Field(3, ge=2, le=50, description="Candidates asked of the 1:N search (>= 2 to see ambiguity).")
    record_candidate_ids: bool = Field(
        False,
        description="Outcome records name the gallery subject id of every compared candidate. Off (privacy by "
        "default): only the matched subject's id is named; the other comparisons keep their scores.",
    )
    passage_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=120.0,
        description="Time given to the turnstile for one passage after ACCEPT (sent with open_for_passage).",
    )
    passage_report_grace_s: float = Field(
        3.0,
        ge=0.0,
        le=60.0,
        description="If the turnstile reports neither passage_completed nor passage_timed_out this long "
        "after passage_timeout_s, the session locks the gate itself and ends.",
    )
    refer_hold_s: float = Field(
        4.0,
        ge=0.0,
        le=120.0,
        description="REFER shows 'see an officer' this long before the lane is IDLE again.",
    )
    alarm_clear_s: float = Field(
        15.0,
        ge=0.0,
        le=3600.0,
        description="ALARM (tailgate, door forced) clears by itself after this long; 0 = only an "
        "officer's clear_alarm command clears it.",
    )
    guidance_repeat_s: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="The same guidance (e.g. one person at a time) is emitted at most once per this period.",
    )
    required_devices: list[str] = Field(
        default_factory=lambda: ["camera", "engine", "gate"],
        description="Devices that must report healthy (DeviceHealth ok) for the lane to be in service. "
        "Until a device has reported, it counts as not healthy (safe start).",
    )
    document_reader_device: str = Field(
        "document_reader",
        min_length=1,
        description="Device name of the document / boarding-pass reader; required in entry and boarding mode.",
    )
    lane_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Lane tag of this gate in the gallery: a subject tagged for other lanes only is not "
        "eligible here (untagged subjects are). Unset: the gate id.",
    )
    boarding_flights: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Flights departing through this gate now, as carrier + number without padding (e.g. "
        "'LH400'). Boarding mode: a boarding pass for another flight is referred. Exit mode: only gallery "
        "subjects tagged with one of these flights (or with no flight) are searched. Empty: any flight. "
        "The signed ops command set_flights replaces the list at run time.",
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Decision policy.")

    @model_validator(mode="after")
    def _devices_unique(self) -> Self:
        if len(set(self.required_devices)) != len(self.required_devices):
            raise ValueError(f"lane.required_devices lists a device twice: {self.required_devices}; list each once")
        return self
