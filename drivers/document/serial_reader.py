"""Serial document readers: MRZ lines (OCR readers) and BCBP text (barcode scanners) over a pyserial URL.

Gate readers send each MRZ line as ASCII ending in CR, LF or CR LF (some wrap a read in STX/ETX), and a
scanned boarding pass as one line. The driver frames lines, groups MRZ lines into a document (TD1 3x30,
TD2/MRV-B 2x36, TD3/MRV-A 2x44), and resynchronises after garbage: an unexpected line drops what was
pending and starts over. Nothing escapes the reader thread: port errors, garbage and partial documents
become `ReaderError` results, and the port is reopened until `close()`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import date

import serial
import structlog

from egate.drivers.document.bcbp import parse_bcbp
from egate.drivers.document.models import ReaderError, ReaderResult
from egate.drivers.document.mrz import MRZ_ALPHABET, parse_mrz

log = structlog.get_logger(__name__)

_LINE_END = re.compile(rb"[\r\n\x02\x03]")  # STX/ETX framing treated as line boundaries
# Bytes taken from the port per read: a flood is handled in bounded steps, never one huge buffer.
_MAX_READ = 4096
_MRZ_LINES_FOR_WIDTH = {30: 3, 36: 2, 44: 2}
_BCBP_MIN = 60


class SerialDocumentReader:
    """Reads a serial MRZ/BCBP reader in its own thread and calls `on_result` for every result.

    `on_result` runs on the reader thread; it must not block for long (post to the lane's queue).
    """

    def __init__(
        self,
        url: str,
        on_result: Callable[[ReaderResult], None],
        *,
        baudrate: int = 9600,
        line_gap_s: float = 0.5,
        poll_s: float = 0.05,
        max_line: int = 1024,
        reconnect_s: float = 2.0,
        today: Callable[[], date] | None = None,
        bcbp_verifier: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.url = url
        self._on_result = on_result
        self._baudrate = baudrate
        self._line_gap_s = line_gap_s
        self._poll_s = poll_s
        self._max_line = max_line
        self._reconnect_s = reconnect_s
        self._today = today or date.today
        self._verifier = bcbp_verifier
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: serial.SerialBase | None = None
        self._buffer = bytearray()
        self._buffer_since = 0.0
        self._mrz_lines: list[str] = []
        self._mrz_since = 0.0
        self._discarding = False
        self.connected = threading.Event()
        # Why the port is not open now (the last open or read failure); None while it is open.
        self.port_error: str | None = None

    # --- lifetime ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"doc-reader:{self.url}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            self._thread = None
        self._close_port()

    def __enter__(self) -> SerialDocumentReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- thread --------------------------------------------------------------------------------------

    def _emit(self, result: ReaderResult) -> None:
        try:
            self._on_result(result)
        except Exception as exc:  # the lane's callback must not kill the reader
            log.error("reader_callback_failed", url=self.url, error=repr(exc))

    def _error(self, message: str) -> None:
        log.warning("reader_error", url=self.url, message=message)
        self._emit(ReaderError(source=self.url, message=message))

    def _close_port(self) -> None:
        port, self._port = self._port, None
        self.connected.clear()
        if port is not None:
            try:
                port.close()
            except Exception as exc:
                log.debug("reader_close_failed", url=self.url, error=repr(exc))

    def _open(self) -> bool:
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self._baudrate, timeout=self._poll_s)
        except Exception as exc:
            self.port_error = f"open failed: {exc}"
            self._error(f"cannot open serial reader {self.url!r}: {exc}; check the cable and [reader] serial_url")
            return False
        log.info("reader_opened", url=self.url)
        self.port_error = None
        self.connected.set()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._port is None and not self._open():
                self._stop.wait(self._reconnect_s)
                continue
            try:
                assert self._port is not None
                waiting = int(getattr(self._port, "in_waiting", 0) or 0)
                chunk = self._port.read(min(max(1, waiting), _MAX_READ))
            except Exception as exc:
                self._close_port()
                self.port_error = f"read failed: {exc}"
                self._error(f"serial reader {self.url!r} failed: {exc}; reopening in {self._reconnect_s:.0f} s")
                self._stop.wait(self._reconnect_s)
                continue
            try:
                self._feed(chunk, time.monotonic())
            except Exception as exc:  # pragma: no cover - framing bug: keep the thread alive, resync
                self._buffer.clear()
                self._mrz_lines.clear()
                self._error(f"internal framing error {exc!r}; input dropped")
        self._close_port()

    # --- framing -------------------------------------------------------------------------------------

    def _feed(self, chunk: bytes, now: float) -> None:
        # One pass over the new bytes (a regex scan, linear in the input): lines are cut at every line end,
        # the unterminated rest is kept only up to `max_line` bytes.
        if chunk:
            data = bytes(self._buffer) + chunk if self._buffer else bytes(chunk)
            if not self._buffer:
                self._buffer_since = now
            self._buffer.clear()
            pos = 0
            for end in _LINE_END.finditer(data):
                line, pos = data[pos : end.start()], end.end()
                self._buffer_since = now
                if self._discarding:
                    # After an overlong run, everything up to the next line end is dropped: that is where
                    # the reader's next record starts (resynchronisation).
                    self._discarding = False
                    continue
                if len(line) > self._max_line:
                    self._resync(f"{len(line)} bytes without a line end: garbage dropped")
                elif line.strip():
                    self._line(line, now)
            rest = data[pos:]
            if self._discarding:
                rest = b""
            elif len(rest) > self._max_line:
                self._discarding = True
                self._error(f"{len(rest)} bytes without a line end: garbage dropped, waiting for the next line")
                rest = b""
            self._buffer.extend(rest)
        # Timeouts: an unterminated line or an incomplete MRZ that stopped arriving.
        if self._buffer and now - self._buffer_since > self._line_gap_s:
            line = bytes(self._buffer)
            self._buffer.clear()
            if line.strip():
                self._line(line, now)
        if self._mrz_lines and now - self._mrz_since > self._line_gap_s:
            got = len(self._mrz_lines)
            need = _MRZ_LINES_FOR_WIDTH[len(self._mrz_lines[0])]
            self._mrz_lines.clear()
            self._error(f"partial MRZ: {got} of {need} lines arrived before the {self._line_gap_s:.1f} s timeout; "
                        "present the document again")  # fmt: skip

    def _line(self, raw: bytes, now: float) -> None:
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            self._resync(f"{len(raw)} bytes of non-ASCII data dropped")
            return
        if len(text) >= _BCBP_MIN and text[0] == "M" and text[1:2].isdigit():
            self._resync_mrz_only()
            self._emit(parse_bcbp(text, verifier=self._verifier))
            return
        compact = text.replace(" ", "")
        if len(compact) in _MRZ_LINES_FOR_WIDTH and set(compact) <= MRZ_ALPHABET:
            if self._mrz_lines and len(self._mrz_lines[0]) != len(compact):
                self._resync_mrz_only(reason="MRZ line of a different length arrived")
            if not self._mrz_lines:
                self._mrz_since = now
            self._mrz_lines.append(compact)
            self._mrz_since = now
            if len(self._mrz_lines) == _MRZ_LINES_FOR_WIDTH[len(compact)]:
                lines, self._mrz_lines = self._mrz_lines, []
                result = parse_mrz("\n".join(lines), today=self._today())
                log.info("reader_mrz", url=self.url, valid=result.valid,
                         number=result.document.masked_number if result.document else None)  # fmt: skip
                self._emit(result)
            return
        self._resync(f"unrecognised line of {len(text)} characters dropped (neither MRZ nor BCBP)")

    def _resync_mrz_only(self, reason: str = "") -> None:
        if self._mrz_lines:
            n = len(self._mrz_lines)
            self._mrz_lines.clear()
            self._error(f"partial MRZ ({n} line(s)) dropped: {reason or 'other data arrived'}")

    def _resync(self, message: str) -> None:
        self._resync_mrz_only(reason="garbage arrived")
        self._error(message)
