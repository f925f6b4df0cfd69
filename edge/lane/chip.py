"""Entry mode's chip step, from the page MRZ to the policy's facts (ICAO Doc 9303 part 11 inspection):
the MRZ gives the access key, `egate.drivers.chip` reads and authenticates the chip, DG1 is compared with
the page's MRZ, and the DG2 portrait becomes a descriptor for the 1:1 comparison (kind 1:1_chip).

`inspect_chip` is the seam the lane calls on a reader thread when a document is read in entry mode;
its `ChipInspection` holds the policy facts, the DG2 descriptor (memory only) and a record without
personal data (protocol, reason codes, timings) for the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import structlog
from numpy.typing import NDArray

from egate.drivers.chip.access import AccessKey
from egate.drivers.chip.apdu import ChipIOError, Transport
from egate.drivers.chip.models import ChipFailure, ChipResult
from egate.drivers.chip.pa import TrustList
from egate.drivers.chip.reader import ChipReadOptions, read_document
from egate.edge.session.policy import ChipFacts

log = structlog.get_logger(__name__)

Enroll = Callable[[np.ndarray], NDArray[np.float32] | None]


@dataclass(frozen=True)
class ChipInspection:
    facts: ChipFacts
    dg2_descriptor: NDArray[np.float32] | None = field(default=None, repr=False)
    record: dict[str, object] = field(default_factory=dict)


def access_key_from_mrz(lines: Sequence[str]) -> AccessKey | None:
    """Number, birth and expiry from a TD3 (passport) or TD1/TD2 MRZ as printed; None if not an MRZ."""
    text = [ln.strip().upper() for ln in lines if ln.strip()]
    if len(text) == 2 and len(text[1]) in (44, 36):  # TD3, TD2: all in line 2
        l2 = text[1]
        return AccessKey(l2[0:9].rstrip("<"), l2[13:19], l2[21:27])
    if len(text) == 3 and len(text[0]) == 30:  # TD1: number in line 1, dates in line 2
        return AccessKey(text[0][5:14].rstrip("<"), text[1][0:6], text[1][8:14])
    return None


def chip_facts(result: ChipResult, page_mrz: Sequence[str]) -> ChipFacts:
    """The policy's view of a chip read. A reader with no card means no chip (the page decides)."""
    present = result.failure not in (ChipFailure.NO_CARD, ChipFailure.NO_READER)
    dg1_matches = None
    if result.mrz is not None:
        dg1_matches = result.mrz == "".join(ln.strip().upper() for ln in page_mrz)
    return ChipFacts(present=present, failure=result.reason, dg1_matches_page=dg1_matches)


def inspect_chip(
    open_transport: Callable[[], tuple[Transport, bytes]],
    page_mrz: Sequence[str],
    trust: TrustList | None,
    now: datetime,
    enroll: Enroll | None,
    options: ChipReadOptions | None = None,
) -> ChipInspection:
    """Read and judge the chip of the document whose page MRZ is `page_mrz`."""
    key = access_key_from_mrz(page_mrz)
    if key is None:
        return ChipInspection(ChipFacts(present=False), record={"chip": "no_key"})
    try:
        transport, atr = open_transport()
    except ChipIOError as exc:
        log.info("chip_absent", detail=str(exc))
        return ChipInspection(ChipFacts(present=False), record={"chip": "no_card"})
    try:
        result = read_document(transport, key, trust, now, atr=atr, options=options)
    finally:
        transport.close()
    facts = chip_facts(result, page_mrz)
    descriptor = None
    if result.authentic and result.face is not None and enroll is not None:
        descriptor = enroll(result.face.pixels)
    record: dict[str, object] = {
        "chip": "authentic" if result.authentic else "failed",
        "reason": result.reason,
        "access_protocol": result.access_protocol,
        "dg1_matches_page": facts.dg1_matches_page,
        "active_authentication": result.active_authentication,
        "chip_authentication": result.chip_authentication,
        "dg2_face": descriptor is not None,
        "timings_ms": {t.step: round(t.seconds * 1e3, 1) for t in result.timings},
    }
    log.info("chip_inspected", **{k: v for k, v in record.items() if k != "timings_ms"})
    return ChipInspection(facts, descriptor, record)
