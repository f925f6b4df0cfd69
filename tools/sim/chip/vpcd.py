"""Plug a virtual card into vsmartcard's vpcd (the PC/SC reader driver pcscd loads from
/etc/reader.conf.d/vpcd): connect to its TCP port, answer its length-prefixed messages.

vpcd's protocol: every message is a 2-byte big-endian length and a payload. A 1-byte payload is a
control code (0 power off, 1 power on, 2 reset, 4 send the ATR); anything longer is a command APDU,
answered with the response APDU. Closing the socket is the card leaving the field.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Protocol

VPCD_PORT = 35963  # the first virtual reader ("Virtual PCD 00 00")
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4


class Card(Protocol):
    def atr(self) -> bytes: ...

    def reset(self) -> None: ...

    def process(self, apdu: bytes) -> bytes: ...


class CardRemoved(Exception):
    """Raised from a card's hook to take it out of the field mid-command."""


class FallSilent(Exception):
    """Raised from a card's hook to stop answering. The answer is held back until `remove()` and sent
    just before the card leaves: the reader's deadline is what the test exercises, and vpcd, which
    stops noticing new cards after one vanished in the middle of a command, stays usable."""


class VpcdCard:
    """Runs `card` against vpcd on a background thread until `remove()`."""

    def __init__(self, card: Card, port: int = VPCD_PORT, host: str = "127.0.0.1") -> None:
        self.card = card
        self._sock = socket.create_connection((host, port), timeout=5.0)
        self._sock.settimeout(None)
        self._stop = threading.Event()
        self.silent = threading.Event()
        self._held: bytes | None = None
        self._message = threading.Event()
        self._send_lock = threading.Lock()
        self.apdus = 0
        self._thread = threading.Thread(target=self._run, name="vpcd-card", daemon=True)
        self._thread.start()

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            data += chunk
        return data

    def _send(self, payload: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(struct.pack("!H", len(payload)) + payload)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                (size,) = struct.unpack("!H", self._recv_exact(2))
                msg = self._recv_exact(size) if size else b""
                self._message.set()
                if size == 1:
                    if msg[0] in (CTRL_ON, CTRL_RESET, CTRL_OFF):
                        self.card.reset()
                    elif msg[0] == CTRL_ATR:
                        self._send(self.card.atr())
                    continue
                if self.silent.is_set():
                    continue
                self.apdus += 1
                try:
                    response = self.card.process(msg)
                except CardRemoved:
                    self._close_socket()
                    return
                except FallSilent:
                    self.card.before_command = None  # type: ignore[attr-defined]
                    self._held = self.card.process(msg)
                    self.silent.set()
                    continue
                self._send(response)
        except (OSError, ConnectionError, struct.error):
            return

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def remove(self) -> None:
        """Take the card out of the reader and stop the thread."""
        if self._held is not None:
            held, self._held = self._held, None
            self._message.clear()
            with contextlib.suppress(OSError):
                self._send(held)
            # pcscd's next message (the power-off after the reader's disconnect) shows vpcd took the answer.
            self._message.wait(timeout=5.0)
        self._stop.set()
        self._close_socket()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> VpcdCard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
