"""A libosdp `Channel` over a pyserial port opened from a URL, that never raises.

libosdp calls `read`/`write`/`flush` from inside its refresh; an exception there kills the refresh
thread without a word (docs/turnstile.md), so every error is caught here: the port is closed and reopened
later (an unplugged USB adapter comes back at the same path), and `write` returns 0 so libosdp
takes the peripheral offline at once instead of waiting ~8 s for replies that cannot come.
"""

from __future__ import annotations

import threading
import time
from typing import cast

import serial
import structlog
from osdp import Channel

log = structlog.get_logger(__name__)


class SerialChannel(Channel):
    """Owns the serial port. Thread-safe enough for libosdp's single refresh thread plus readers of
    the counters; `close()` is final."""

    def __init__(self, url: str, baud: int, reopen_interval_s: float = 0.5) -> None:
        super().__init__()
        self._url = url
        self._baud = baud
        self._reopen_interval_s = reopen_interval_s
        self._port: serial.Serial | None = None
        self._next_open_at = 0.0
        self._closed = False
        self._lock = threading.Lock()
        self.last_rx_at = 0.0  # time.monotonic() of the last byte received
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.opens = 0
        self.errors = 0
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def _ensure_open(self) -> serial.Serial | None:
        if self._port is not None or self._closed:
            return self._port
        now = time.monotonic()
        if now < self._next_open_at:
            return None
        self._next_open_at = now + self._reopen_interval_s
        try:
            # timeout=0: libosdp polls; a blocking read would hang every libosdp call.
            # exclusive: a second opener (a diag tool while the daemon runs) gets a clear error.
            port = cast(
                "serial.Serial",
                serial.serial_for_url(self._url, baudrate=self._baud, timeout=0, write_timeout=0, exclusive=True),
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._note_error("serial_open_failed", exc)
            return None
        with self._lock:
            if self._closed:
                port.close()
                return None
            self._port = port
        self.opens += 1
        log.info("turnstile_serial_opened", url=self._url, baud=self._baud, opens=self.opens)
        return port

    def _note_error(self, event: str, exc: BaseException) -> None:
        self.errors += 1
        message = f"{type(exc).__name__}: {exc}"
        if message != self.last_error:  # one line per new error, not one per poll
            log.warning(event, url=self._url, error=message)
        self.last_error = message

    def _drop(self, event: str, exc: BaseException) -> None:
        self._note_error(event, exc)
        with self._lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as close_exc:  # the port is already broken
                log.debug("turnstile_serial_close_failed", error=str(close_exc))
        self._next_open_at = time.monotonic() + self._reopen_interval_s

    def read(self, max_bytes: int) -> bytes:
        try:
            port = self._ensure_open()
            if port is None:
                return b""
            data = bytes(port.read(max_bytes))
        except Exception as exc:  # must never raise into libosdp
            self._drop("serial_read_failed", exc)
            return b""
        if data:
            self.rx_bytes += len(data)
            self.last_rx_at = time.monotonic()
            self.last_error = ""
        return data

    def write(self, buf: bytes) -> int:
        try:
            port = self._ensure_open()
            if port is None:
                return 0
            written = port.write(buf)
        except Exception as exc:  # must never raise into libosdp
            self._drop("serial_write_failed", exc)
            return 0
        count = int(written or 0)
        self.tx_bytes += count
        return count

    def flush(self) -> None:
        # libosdp flushes to drop a half-received frame: drop our input buffer.
        try:
            if self._port is not None:
                self._port.reset_input_buffer()
        except Exception as exc:  # must never raise into libosdp
            self._drop("serial_flush_failed", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # closing a broken port
                log.debug("turnstile_serial_close_failed", error=str(exc))
