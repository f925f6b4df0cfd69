"""PC/SC access through pyscard: find a reader, wait for a card, transmit APDUs.

pcscd (with the CCID driver, or vsmartcard's vpcd in tests) must be running; every PC/SC failure
becomes `ChipIOError` with a hint a technician can act on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from egate.drivers.chip.apdu import ChipIOError

PCSC_HINT = "is pcscd running (pcscd -f -a, or systemctl start pcscd) and the reader plugged in?"


@dataclass(frozen=True)
class ReaderInfo:
    name: str
    card_present: bool
    atr: bytes


def list_readers() -> list[str]:
    from smartcard.Exceptions import ListReadersException
    from smartcard.pcsc.PCSCExceptions import EstablishContextException
    from smartcard.System import readers

    try:
        return [str(r) for r in readers()]
    except (ListReadersException, EstablishContextException) as exc:
        raise ChipIOError(f"PC/SC unavailable ({exc}): {PCSC_HINT}") from None


def _pick_reader(name_contains: str) -> Any:
    from smartcard.System import readers

    try:
        found = [r for r in readers() if name_contains.lower() in str(r).lower()]
    except Exception as exc:  # pyscard raises several unrelated classes for a missing service
        raise ChipIOError(f"PC/SC unavailable ({exc}): {PCSC_HINT}") from None
    if not found:
        raise ChipIOError(f"no PC/SC reader matching {name_contains!r}: {PCSC_HINT}")
    return found[0]


class PcscTransport:
    """A connected card. `open()` waits up to `timeout_s` for a card in the first matching reader."""

    def __init__(self, connection: Any, reader: str, apdu_timeout_s: float = 5.0) -> None:
        self._connection = connection
        self.reader = reader
        self.atr = bytes(connection.getATR())
        self.apdu_timeout_s = apdu_timeout_s
        self._broken = False

    @classmethod
    def open(cls, reader_contains: str = "", timeout_s: float = 0.0, apdu_timeout_s: float = 5.0) -> PcscTransport:
        from smartcard.CardRequest import CardRequest
        from smartcard.Exceptions import CardConnectionException, CardRequestTimeoutException, NoCardException

        reader = _pick_reader(reader_contains)
        try:
            if timeout_s > 0:
                CardRequest(timeout=timeout_s, readers=[reader]).waitforcard()
            connection = reader.createConnection()
            connection.connect()
        except CardRequestTimeoutException:
            raise ChipIOError(f"no card on {reader} within {timeout_s:.1f} s") from None
        except (NoCardException, CardConnectionException) as exc:
            raise ChipIOError(f"no card on {reader} ({exc})") from None
        return cls(connection, str(reader), apdu_timeout_s)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        """One APDU with a deadline: a chip that falls silent must not hold the lane. SCardTransmit
        cannot be interrupted, so it runs on a helper thread that is abandoned (and the transport
        marked broken) when the deadline passes; the reader's own timeouts end it later."""
        if self._broken:
            raise ChipIOError("an earlier command never finished: reconnect the card")
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["value"] = self._transmit(apdu)
            except BaseException as exc:  # handed over to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="pcsc-transmit", daemon=True).start()
        if not done.wait(self.apdu_timeout_s):
            self._broken = True
            raise ChipIOError(f"chip did not answer within {self.apdu_timeout_s:.1f} s")
        if "error" in box:
            raise box["error"]
        result: tuple[bytes, int] = box["value"]
        return result

    def _transmit(self, apdu: bytes) -> tuple[bytes, int]:
        from smartcard.Exceptions import CardConnectionException

        try:
            data, sw1, sw2 = self._connection.transmit(list(apdu))
            response = bytes(data)
            # T=0 readers announce more data with 61xx (ISO 7816-4 §5.1.3); fetch it with GET RESPONSE.
            while sw1 == 0x61:
                more, sw1, sw2 = self._connection.transmit([0x00, 0xC0, 0x00, 0x00, sw2])
                response += bytes(more)
        except CardConnectionException as exc:
            raise ChipIOError(f"card stopped answering ({exc}): was it removed?") from None
        return response, (sw1 << 8) | sw2

    def close(self) -> None:
        if self._broken:
            # pcscd still waits on the silent chip; disconnecting would wait with it. Let a helper
            # thread finish the disconnect once the reader gives up or the card leaves.
            threading.Thread(target=self._disconnect, name="pcsc-close", daemon=True).start()
            return
        self._disconnect()

    def _disconnect(self) -> None:
        # A removed card (or a stopped pcscd) cannot be disconnected cleanly; there is nothing to undo then.
        with contextlib.suppress(Exception):
            self._connection.disconnect()
        with contextlib.suppress(Exception):
            self._connection.release()


def probe(reader_contains: str = "") -> list[ReaderInfo]:
    """Every matching reader with card presence and ATR (for `egate diag chip`)."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.System import readers

    infos: list[ReaderInfo] = []
    for name in list_readers():
        if reader_contains.lower() not in name.lower():
            continue
        reader = next(r for r in readers() if str(r) == name)
        connection = reader.createConnection()
        try:
            connection.connect()
            infos.append(ReaderInfo(name, True, bytes(connection.getATR())))
            connection.disconnect()
        except (NoCardException, CardConnectionException):
            infos.append(ReaderInfo(name, False, b""))
    return infos


def wait_for_card(reader_contains: str, present: bool, timeout_s: float) -> bool:
    """Block (on pcscd's own status-change events) until a card is present or absent; False on timeout."""
    from smartcard import scard

    name = _pick_reader(reader_contains)
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise ChipIOError(f"PC/SC unavailable: {PCSC_HINT}")
    try:
        state = scard.SCARD_STATE_UNAWARE
        deadline = time.monotonic() + timeout_s
        wait_ms = 0
        while True:
            hresult, states = scard.SCardGetStatusChange(context, wait_ms, [(str(name), state)])
            if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
                raise ChipIOError(f"PC/SC status query failed: {scard.SCardGetErrorMessage(hresult)}")
            state = states[0][1] & ~scard.SCARD_STATE_CHANGED
            if bool(state & scard.SCARD_STATE_PRESENT) == present:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait_ms = max(1, int(remaining * 1000))
    finally:
        scard.SCardReleaseContext(context)
