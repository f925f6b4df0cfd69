"""The lane's chip step (edge/lane/chip.py ChipStep): which documents start a chip read, and that every
started read ends in exactly one ChipRead, whatever happens on the reader. The virtual card is reached
directly here (tests/test_chip_lane_rig.py goes through pcscd and the daemon)."""

from __future__ import annotations

import queue
import threading
from datetime import date, datetime, timezone

from egate.drivers.chip.config import ChipReaderConfig
from egate.drivers.chip.pa import TrustList
from egate.edge.lane.chip import ChipStep, ReaderMissing
from egate.edge.session.events import ChipRead, DocumentRead, Event, Tick
from egate.edge.settings.lane import Mode
from egate.tools.sim.chip.card import DirectTransport, PassportCard
from egate.tools.sim.chip.passport import build_passport, make_pki, synthetic_face

PKI = make_pki(datetime.now(timezone.utc))
FACE, SIZE = synthetic_face(3_000)
CHIP = build_passport(PKI, FACE, SIZE)
CONFIG = ChipReaderConfig(reader="Virtual PCD 00 00")


def doc(lines: tuple[str, ...] = CHIP.mrz) -> DocumentRead:
    return DocumentRead("L898902C", "UTO", date(2035, 4, 15), True, mrz_lines=lines)


def step(mode: Mode = Mode.ENTRY, *, opener=None, policy_on: bool = True):  # type: ignore[no-untyped-def]
    posted: queue.Queue[Event] = queue.Queue()

    def direct():  # type: ignore[no-untyped-def]
        card = PassportCard(dict(CHIP.files), CHIP.key.mrz_information())
        return DirectTransport(card), card.atr()

    s = ChipStep(
        CONFIG,
        policy_on=policy_on,
        mode=lambda: mode,
        trust=lambda: TrustList((PKI.csca,)),
        enroll=None,
        post=posted.put,
        open_transport=opener or direct,
    )
    return s, posted


def test_an_entry_document_starts_one_read_and_gets_its_result() -> None:
    s, posted = step()
    s.start()
    try:
        routed = s.route(doc())
        assert isinstance(routed, DocumentRead) and routed.chip_read_id
        result = posted.get(timeout=30)
        assert isinstance(result, ChipRead) and result.read_id == routed.chip_read_id
        assert result.facts.present and result.facts.failure is None and result.facts.dg1_matches_page
        assert result.summary is not None and result.summary.result == "authentic"
        assert posted.empty()
    finally:
        assert s.close(timeout=10)


def test_other_modes_other_events_and_policy_off_start_nothing() -> None:
    for mode, policy_on in ((Mode.EXIT, True), (Mode.BOARDING, True), (Mode.ENTRY, False)):
        s, posted = step(mode, policy_on=policy_on)
        assert s.route(doc()).chip_read_id is None  # type: ignore[union-attr]
        assert posted.empty()
    s, _ = step()
    assert isinstance(s.route(Tick()), Tick)
    assert s.route(doc(lines=())).chip_read_id is None  # type: ignore[union-attr]  # no MRZ: no key


def test_a_missing_reader_and_a_full_queue_still_answer_every_read() -> None:
    def no_reader():  # type: ignore[no-untyped-def]
        raise ReaderMissing("no PC/SC reader matching 'Virtual PCD 00 00'")

    s, posted = step(opener=no_reader)
    s.start()
    try:
        read_id = s.route(doc()).chip_read_id  # type: ignore[union-attr]
        result = posted.get(timeout=30)
        assert isinstance(result, ChipRead) and result.read_id == read_id
        assert result.facts.present and result.facts.failure == "chip_no_reader"
    finally:
        s.close()

    release, reading = threading.Event(), threading.Event()

    def stuck():  # type: ignore[no-untyped-def]
        reading.set()
        release.wait(30)
        raise ReaderMissing("released")

    s, posted = step(opener=stuck)
    s.start()
    try:
        ids = [s.route(doc()).chip_read_id]  # type: ignore[union-attr]
        assert reading.wait(10)
        ids += [s.route(doc()).chip_read_id for _ in range(ChipStep.MAX_WAITING + 1)]  # type: ignore[union-attr]
        # One is being read, MAX_WAITING wait; the last is refused at once.
        busy = posted.get(timeout=10)
        assert isinstance(busy, ChipRead) and busy.read_id == ids[-1] and busy.facts.failure == "chip_busy"
        release.set()
        answered = {posted.get(timeout=30).read_id for _ in range(1 + ChipStep.MAX_WAITING)}  # type: ignore[union-attr]
        assert answered == set(ids[:-1])
    finally:
        release.set()
        s.close(timeout=10)
