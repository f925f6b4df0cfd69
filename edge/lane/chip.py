"""Entry mode's chip step, from the page MRZ to the policy's facts (ICAO Doc 9303 part 11 inspection):
the MRZ gives the access key, `egate.drivers.chip` reads and authenticates the chip, DG1 is compared with
the page's MRZ, and the DG2 portrait becomes a descriptor for the 1:1 comparison (kind 1:1_chip).

`ChipStep` is the lane's wiring: every event the lane posts passes `route()`; a `DocumentRead` in entry
mode with the chip policy on gets a `chip_read_id` and starts a read on the chip thread (never on the
session's thread), which posts one `ChipRead` with that id when the read ends, whatever the outcome.
`inspect_chip` is one read; its `ChipInspection` holds the policy facts, the DG2 descriptor (memory
only) and a summary without personal data (protocol, reason code, timings) for the outcome record.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import structlog
from numpy.typing import NDArray

from egate.drivers.chip.access import AccessKey
from egate.drivers.chip.apdu import ChipIOError, Transport
from egate.drivers.chip.config import ChipReaderConfig
from egate.drivers.chip.lds import FaceImage
from egate.drivers.chip.models import ChipFailure, ChipResult
from egate.drivers.chip.pa import TrustList
from egate.drivers.chip.reader import ChipReadOptions, read_document
from egate.edge.session.events import ChipRead, DocumentRead, Event
from egate.edge.session.policy import ChipFacts
from egate.edge.session.records import ChipSummary
from egate.edge.settings.lane import Mode

if TYPE_CHECKING:
    from egate.edge.settings import Settings

log = structlog.get_logger(__name__)

Enroll = Callable[[np.ndarray], NDArray[np.float32] | None]


@dataclass(frozen=True)
class ChipInspection:
    facts: ChipFacts
    dg2_descriptor: NDArray[np.float32] | None = field(default=None, repr=False)
    record: dict[str, object] = field(default_factory=dict)
    summary: ChipSummary | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


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
        return ChipInspection(ChipFacts(present=False), record={"chip": "no_key"}, summary=ChipSummary(result="no_key"))
    try:
        transport, atr = open_transport()
    except ChipIOError as exc:
        log.info("chip_absent", detail=str(exc))
        return ChipInspection(
            ChipFacts(present=False), record={"chip": "no_card"}, summary=ChipSummary(result="absent")
        )
    # The face is turned into a descriptor on a helper thread as soon as DG2 decodes, while the chip
    # thread goes on reading EF.SOD and running Passive Authentication; it is used only if PA passes.
    enrolled: dict[str, NDArray[np.float32] | None] = {}
    helper: list[threading.Thread] = []

    def on_face(face: FaceImage) -> None:
        if enroll is None:
            return

        def work() -> None:
            try:
                enrolled["descriptor"] = enroll(face.pixels)
            except Exception as exc:  # a portrait the engine cannot handle: not compared -> the policy refers
                log.warning("chip_dg2_enroll_failed", error_type=type(exc).__name__)

        helper.append(threading.Thread(target=work, name="chip-dg2-enroll", daemon=True))
        helper[0].start()

    try:
        result = read_document(transport, key, trust, now, atr=atr, options=options, on_face=on_face)
    finally:
        transport.close()
    for thread in helper:
        thread.join()
    facts = chip_facts(result, page_mrz)
    descriptor = enrolled.get("descriptor") if result.authentic else None
    timings = {t.step: round(t.seconds * 1e3, 1) for t in result.timings}
    record: dict[str, object] = {
        "chip": "authentic" if result.authentic else "failed",
        "reason": result.reason,
        "access_protocol": result.access_protocol,
        "dg1_matches_page": facts.dg1_matches_page,
        "active_authentication": result.active_authentication,
        "chip_authentication": result.chip_authentication,
        "dg2_face": descriptor is not None,
        "timings_ms": timings,
    }
    summary = ChipSummary(
        result="authentic" if result.authentic else "failed",
        reason=result.reason,
        access_protocol=result.access_protocol,
        dg1_matches_page=facts.dg1_matches_page,
        dg2_face=descriptor is not None,
        clone_detection=_clone_detection(result),
        active_authentication=result.active_authentication,
        chip_authentication=result.chip_authentication,
        timings_ms=timings,
    )
    log.info("chip_inspected", **{k: v for k, v in record.items() if k != "timings_ms"})
    return ChipInspection(facts, descriptor, record, summary, timings)


def _clone_detection(result: ChipResult) -> Literal["none", "active_authentication", "chip_authentication"]:
    if result.chip_authentication == "done":
        return "chip_authentication"
    if result.active_authentication == "done":
        return "active_authentication"
    return "none"


class ReaderMissing(RuntimeError):
    """The configured PC/SC reader (or pcscd) is not there: a device fault, never "no chip"."""


@dataclass(frozen=True)
class _Job:
    read_id: str
    mrz_lines: tuple[str, ...] = field(repr=False)


class ChipStep:
    """Reads the chip of each document read in entry mode on its own thread and posts `ChipRead`.

    `mode` tells the lane's current mode (the session's status snapshot); `trust` the active CSCA trust
    list; `enroll` makes a descriptor of the DG2 portrait (its own engine instance, so it never waits on
    the lane camera's); `post` hands events to the session loop. One chip is read at a time; a few
    documents may wait (a traveller who swaps passports), beyond that the read is refused at once with
    `chip_busy`, so no session ever waits for a read that will not come.
    """

    MAX_WAITING = 2

    def __init__(
        self,
        config: ChipReaderConfig,
        *,
        policy_on: bool,
        mode: Callable[[], Mode],
        trust: Callable[[], TrustList | None],
        enroll: Enroll | None,
        post: Callable[[Event], None],
        open_transport: Callable[[], tuple[Transport, bytes]] | None = None,
    ) -> None:
        self._cfg = config
        self._enabled = policy_on and config.reader is not None
        self._mode = mode
        self._trust = trust
        self._enroll = enroll
        self._post = post
        self._open = open_transport or self._open_pcsc
        self._options = ChipReadOptions(extended_length=config.extended_length)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=self.MAX_WAITING)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.reads = 0

    @property
    def enabled(self) -> bool:
        return self._enabled

    def start(self) -> None:
        if self._enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lane-chip", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 1.0) -> bool:
        """Stop the chip thread; False when a read was still running at the deadline (the thread is a
        daemon and ends with the read: the daemon's stop budget never waits for a silent chip)."""
        thread = self._thread
        if thread is None:
            return True
        self._thread = None
        self._stopping.set()
        with contextlib.suppress(queue.Full):  # full: the thread sees _stopping after its current job
            self._jobs.put_nowait(None)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("chip_step_still_reading_at_stop", timeout_s=timeout)
            return False
        return True

    def route(self, event: Event) -> Event:
        """Called for every event the lane posts (any thread): a document read in entry mode starts a chip
        read and is tagged with its id, so the session knows to wait for it."""
        if not (self._enabled and isinstance(event, DocumentRead) and event.mrz_lines):
            return event
        if self._mode() is not Mode.ENTRY:
            return event
        job = _Job(uuid.uuid4().hex, tuple(event.mrz_lines))
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            log.warning("chip_step_busy", waiting=self.MAX_WAITING)
            self._post_failure(job.read_id, "chip_busy")
        return replace(event, chip_read_id=job.read_id)

    def _post_failure(self, read_id: str, reason: str) -> None:
        self._post(
            ChipRead(
                read_id, ChipFacts(present=True, failure=reason), None, ChipSummary(result="failed", reason=reason)
            )
        )

    def check_reader(self) -> None:
        """ReaderMissing when pcscd or the configured reader is not there."""
        from egate.drivers.chip.pcsc import list_readers

        assert self._cfg.reader is not None
        try:
            names = list_readers()
        except ChipIOError as exc:
            raise ReaderMissing(str(exc)) from None
        if not any(self._cfg.reader.lower() in name.lower() for name in names):
            raise ReaderMissing(f"no PC/SC reader matching {self._cfg.reader!r} (readers: {names})")

    def _open_pcsc(self) -> tuple[Transport, bytes]:
        from egate.drivers.chip.pcsc import PcscTransport

        assert self._cfg.reader is not None
        self.check_reader()
        transport = PcscTransport.open(
            self._cfg.reader, timeout_s=self._cfg.card_wait_s, apdu_timeout_s=self._cfg.apdu_timeout_s
        )
        return transport, transport.atr

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return
            try:
                self._read(job)
            except ReaderMissing as exc:
                log.error("chip_reader_missing", error=str(exc), fix="check the reader and pcscd: egate diag chip")
                self._post_failure(job.read_id, ChipFailure.NO_READER.value)
            except Exception as exc:  # the session must always get an answer: a failed read refers
                log.exception("chip_step_failed", error_type=type(exc).__name__)
                self._post_failure(job.read_id, ChipFailure.UNREADABLE.value)

    def _read(self, job: _Job) -> None:
        inspection = inspect_chip(
            self._open, job.mrz_lines, self._trust(), datetime.now(timezone.utc), self._enroll, self._options
        )
        self.reads += 1
        self._post(ChipRead(job.read_id, inspection.facts, inspection.dg2_descriptor, inspection.summary))


class LaneChipStep(ChipStep):
    """The daemon's chip step: a `ChipStep` with its own face engine for the DG2 portrait (loaded only
    when the chip policy is on and a reader is configured), closed with it."""

    def __init__(
        self,
        settings: Settings,
        model_dir: Path,
        *,
        mode: Callable[[], Mode],
        trust: Callable[[], TrustList | None],
        post: Callable[[Event], None],
    ) -> None:
        from egate.engines.pipeline import FaceEngine

        policy_on = settings.lane.policy.chip != "off"
        self._engine: FaceEngine | None = None
        enroll: Enroll | None = None
        if policy_on and settings.chip.reader is not None:
            engine = FaceEngine.from_config(settings.engine, model_dir)
            self._engine = engine

            def enroll(image: np.ndarray) -> NDArray[np.float32] | None:
                observation = engine.enroll(image)
                return None if observation is None else observation.descriptor

        super().__init__(settings.chip, policy_on=policy_on, mode=mode, trust=trust, enroll=enroll, post=post)

    def start(self) -> None:
        super().start()
        if self.enabled:
            # Not a start error: the reader may come up after the daemon; until then every chip read
            # answers chip_no_reader and the traveller is referred.
            try:
                self.check_reader()
            except ReaderMissing as exc:
                log.error(
                    "chip_reader_missing_at_start", error=str(exc), fix="check the reader and pcscd: egate diag chip"
                )

    def close(self, timeout: float = 1.0) -> bool:
        stopped = super().close(timeout)
        if stopped and self._engine is not None:  # never free the engine under a running enrolment
            self._engine.close()
            self._engine = None
        return stopped
