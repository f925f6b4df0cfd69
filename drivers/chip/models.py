"""What the chip reader hands to its caller: a typed result with one failure code, no personal data
in its repr (DG1 and the face stay out of logs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from egate.drivers.chip.lds import FaceImage
from egate.drivers.chip.pa import PaFailure, PaResult
from egate.drivers.compat import StrEnum


class ChipFailure(StrEnum):
    """Why a chip read did not give an authenticated document; referral reason codes."""

    NO_READER = "chip_no_reader"
    NO_CARD = "chip_no_card"
    UNREADABLE = "chip_unreadable"  # removed mid-read, stopped answering, transmission error
    NOT_EMRTD = "chip_not_emrtd"  # no eMRTD application
    ACCESS_DENIED = "chip_access_denied"  # BAC/PACE refused the MRZ-derived key
    MALFORMED = "chip_malformed"  # a file or answer that does not parse
    PA_FAILED = "chip_pa_failed"  # Passive Authentication failed; `pa_failure` says why
    AA_FAILED = "chip_aa_failed"  # Active Authentication did not verify: possibly a cloned chip
    CA_FAILED = "chip_ca_failed"  # Chip Authentication did not complete: possibly a cloned chip


@dataclass(frozen=True)
class StepTiming:
    """One step of a read: how long, how many APDUs and bytes (for `egate bench chip`)."""

    step: str
    seconds: float
    apdus: int
    bytes_out: int
    bytes_in: int


@dataclass(frozen=True)
class ChipResult:
    """Outcome of one chip read. `authentic` is True only when access control, every file read and
    Passive Authentication succeeded."""

    failure: ChipFailure | None
    detail: str = ""
    access_protocol: str | None = None  # "PACE-ECDH-GM-AES-128", "BAC", ...
    pa_failure: PaFailure | None = None
    pa: PaResult | None = None
    data_groups: tuple[int, ...] = ()
    mrz: str | None = field(default=None, repr=False)
    face: FaceImage | None = field(default=None, repr=False)
    chip_authentication: str = "not_offered"  # "not_offered" | "not_done" | "done" | "failed"
    active_authentication: str = "not_offered"  # "not_offered" | "not_done" (CA done instead) | "done" | "failed"
    extended_length: bool = False
    timings: tuple[StepTiming, ...] = ()

    @property
    def authentic(self) -> bool:
        return self.failure is None and self.pa is not None

    @property
    def reason(self) -> str | None:
        """The most specific reason code (PA sub-reason when PA failed)."""
        if self.pa_failure is not None:
            return self.pa_failure.value
        return self.failure.value if self.failure is not None else None
