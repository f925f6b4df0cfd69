"""Serial document reader against the PTY simulator: framing, timeouts, garbage resync, port faults."""

from __future__ import annotations

import os
from datetime import date

import pytest

from egate.drivers.document import BcbpResult, MrzResult, ReaderError, SerialDocumentReader
from egate.tools.sim.reader import ReaderSimulator
from tests.support.reader_fixtures import BCBP_ONE_LEG, UTOPIA_TD2, UTOPIA_TD3, ResultQueue

TD1 = ["IDCHEA1234567<6<<<<<<<<<<<<<<<", "7510256M2009018CHE<<<<<<<<<<<8", "SMITH<<JOHN<ALBERT<<<<<<<<<<<<"]


@pytest.fixture
def rig():
    sim = ReaderSimulator()
    results = ResultQueue()
    reader = SerialDocumentReader(sim.port_path, results, line_gap_s=0.3, reconnect_s=0.2,
                                  today=lambda: date(2010, 1, 1))  # fmt: skip
    reader.start()
    assert reader.connected.wait(5.0), "reader did not open the PTY"
    yield sim, reader, results
    reader.close()
    sim.close()


def test_td3_lines_make_one_document(rig) -> None:
    sim, _reader, results = rig
    sim.send_mrz(UTOPIA_TD3)
    r = results.get()
    assert isinstance(r, MrzResult) and r.valid and r.lines == UTOPIA_TD3


@pytest.mark.parametrize("line_end", [b"\r", b"\n", b"\r\n"])
def test_line_endings(rig, line_end: bytes) -> None:
    sim, _reader, results = rig
    sim.send_mrz(TD1, line_end=line_end)
    r = results.get()
    assert isinstance(r, MrzResult) and r.format == "TD1" and r.valid, r


def test_stx_etx_framing_and_split_writes(rig) -> None:
    sim, _reader, results = rig
    payload = b"\x02" + "\r".join(UTOPIA_TD2).encode() + b"\x03"
    for i in range(0, len(payload), 7):  # arrives in pieces, as over a slow UART
        sim.send_raw(payload[i : i + 7])
    r = results.get()
    assert isinstance(r, MrzResult) and r.format == "TD2" and r.valid


def test_bcbp_line(rig) -> None:
    sim, _reader, results = rig
    sim.send_bcbp(BCBP_ONE_LEG)
    r = results.get()
    assert isinstance(r, BcbpResult) and r.valid and r.boarding_pass.legs[0].seat == "001A"  # type: ignore[union-attr]


def test_garbage_then_resync(rig) -> None:
    sim, _reader, results = rig
    sim.send_garbage(b"\xff\xfe\x00garbage\r\n")
    sim.send_garbage(b"HELLO WORLD\r\n")
    sim.send_mrz(UTOPIA_TD3)
    got = [results.get(), results.get(), results.get()]
    assert [type(g) for g in got] == [ReaderError, ReaderError, MrzResult]
    assert "non-ASCII" in got[0].message  # type: ignore[union-attr]
    assert "unrecognised" in got[1].message  # type: ignore[union-attr]
    assert got[2].valid  # type: ignore[union-attr]


def test_partial_mrz_times_out_then_next_document_reads(rig) -> None:
    sim, _reader, results = rig
    sim.send_mrz(UTOPIA_TD3[:1])
    err = results.get()
    assert isinstance(err, ReaderError) and "partial MRZ: 1 of 2" in err.message
    sim.send_mrz(UTOPIA_TD3)
    assert isinstance(results.get(), MrzResult)


def test_line_of_other_length_drops_the_pending_one(rig) -> None:
    sim, _reader, results = rig
    sim.send_mrz([UTOPIA_TD3[0]])
    sim.send_mrz(UTOPIA_TD2)
    first, second = results.get(), results.get()
    assert isinstance(first, ReaderError) and "different length" in first.message
    assert isinstance(second, MrzResult) and second.format == "TD2"


def test_unterminated_line_is_taken_after_the_gap(rig) -> None:
    sim, _reader, results = rig
    sim.send_raw(BCBP_ONE_LEG.encode())  # no line end: a scanner in "no suffix" mode
    r = results.get()
    assert isinstance(r, BcbpResult) and r.valid


def test_overlong_garbage_without_line_end(rig) -> None:
    sim, _reader, results = rig
    sim.send_garbage(b"A" * 3000 + b"B" * 3000 + b"\r\n")
    sim.send_mrz(UTOPIA_TD3)
    r = results.get()
    assert isinstance(r, ReaderError) and "without a line end" in r.message
    doc = results.get()
    assert isinstance(doc, MrzResult) and doc.valid
    assert results.drain() == []


def test_callback_exception_does_not_kill_the_reader() -> None:
    calls = ResultQueue()

    def explode(result: object) -> None:
        calls(result)
        raise RuntimeError("lane bug")

    with ReaderSimulator() as sim:
        reader = SerialDocumentReader(sim.port_path, explode, line_gap_s=0.3, today=lambda: date(2010, 1, 1))
        with reader:
            assert reader.connected.wait(5.0)
            sim.send_mrz(UTOPIA_TD3)
            assert isinstance(calls.get(), MrzResult)
            sim.send_bcbp(BCBP_ONE_LEG)
            assert isinstance(calls.get(), BcbpResult)


def test_missing_port_reports_error_and_retries(tmp_path) -> None:
    results = ResultQueue()
    missing = str(tmp_path / "ttyNOPE")
    reader = SerialDocumentReader(missing, results, reconnect_s=0.1)
    with reader:
        first, second = results.get(), results.get()
    assert isinstance(first, ReaderError) and "cannot open" in first.message and missing in first.message
    assert isinstance(second, ReaderError)  # it kept trying
    assert reader._thread is None


def test_close_is_prompt_and_idempotent() -> None:
    with ReaderSimulator() as sim:
        reader = SerialDocumentReader(sim.port_path, ResultQueue())
        reader.start()
        assert reader.connected.wait(5.0)
        reader.close()
        reader.close()
        assert not reader.connected.is_set()


def test_simulator_pty_is_raw() -> None:
    with ReaderSimulator() as sim:
        assert os.path.exists(sim.port_path)
        import serial

        port = serial.serial_for_url(sim.port_path, timeout=2.0)
        try:
            sim.send_mrz(["AB<"], line_end=b"\r")
            assert port.read(4) == b"AB<\r"  # no CR->LF translation, no echo
        finally:
            port.close()


def test_document_reader_facade_uses_config() -> None:
    from egate.drivers.document import DocumentReader, ReaderConfig

    with ReaderSimulator() as sim:
        results = ResultQueue()
        config = ReaderConfig(serial_url=sim.port_path, line_gap_s=0.3)
        with DocumentReader(config, results, today=lambda: date(2010, 1, 1)) as reader:
            # pyserial flushes the input buffer on open: send only once the port is open.
            assert reader.wait_serial_connected(5.0)
            sim.send_mrz(UTOPIA_TD3)
            r = results.get()
    assert isinstance(r, MrzResult) and r.valid


def test_config_rejects_signature_check_without_key_and_equal_retry() -> None:
    from pydantic import ValidationError

    from egate.drivers.document import DocumentReader, ReaderConfig

    with pytest.raises(ValueError, match=r"bcbp_issuer_key\.pem"):
        DocumentReader(ReaderConfig(verify_bcbp_signature=True), ResultQueue())
    with pytest.raises(ValidationError, match="ocr_retry_char_height_px"):
        ReaderConfig(ocr_char_height_px=40, ocr_retry_char_height_px=40)
    with pytest.raises(ValidationError):
        ReaderConfig(unknown_field=1)  # type: ignore[call-arg]
