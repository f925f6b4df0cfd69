"""A serial document reader simulator on a PTY: sends MRZ lines and BCBP text, optionally with garbage.

Used by the tests, the demo and `egate diag reader --serial`: point the driver at `.port_path`.
Run standalone to feed a lane by hand:

    python -m egate.tools.sim.reader --mrz 'P<UTO...' --mrz 'L898...' --bcbp 'M1DESMARAIS/LUC ...' --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import threading
import time
import tty
from collections.abc import Sequence


class ReaderSimulator:
    """Owns a PTY pair: the driver opens `port_path` (the slave end); we write into the master end."""

    def __init__(self, line_end: bytes = b"\r\n") -> None:
        self._master, self._slave = pty.openpty()
        # Raw mode: no echo and no CR/LF translation, like a real UART.
        tty.setraw(self._slave)
        self.port_path = os.ttyname(self._slave)
        self.line_end = line_end
        self._lock = threading.Lock()
        self._closed = False

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("simulator is closed")
            view = memoryview(data)
            while view:
                n = os.write(self._master, view)
                view = view[n:]

    def send_mrz(self, lines: Sequence[str], *, line_gap_s: float = 0.0, line_end: bytes | None = None) -> None:
        """Send MRZ lines as a reader does: one line at a time, each with its line end."""
        end = self.line_end if line_end is None else line_end
        for i, line in enumerate(lines):
            if i and line_gap_s:
                time.sleep(line_gap_s)  # a real reader's pacing, not test synchronisation
            self.send_raw(line.encode("ascii") + end)

    def send_bcbp(self, text: str, *, line_end: bytes | None = None) -> None:
        self.send_raw(text.encode("latin-1") + (self.line_end if line_end is None else line_end))

    def send_garbage(self, data: bytes) -> None:
        self.send_raw(data)

    def read_available(self) -> bytes:
        """Bytes the driver wrote back (readers normally stay silent); non-blocking."""
        import select

        out = b""
        while select.select([self._master], [], [], 0)[0]:
            chunk = os.read(self._master, 4096)
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self._master, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> ReaderSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serial MRZ/BCBP reader simulator on a PTY")
    parser.add_argument("--mrz", action="append", default=[], help="an MRZ line (repeat for each line)")
    parser.add_argument("--bcbp", action="append", default=[], help="a BCBP text to send")
    parser.add_argument("--garbage", default="", help="bytes (latin-1) to send before each read")
    parser.add_argument("--repeat", type=int, default=1, help="how many times to send everything")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between repeats")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for a driver before sending")
    args = parser.parse_args(argv)
    with ReaderSimulator() as sim:
        print(sim.port_path, flush=True)
        time.sleep(args.wait)
        for _ in range(args.repeat):
            if args.garbage:
                sim.send_garbage(args.garbage.encode("latin-1"))
            if args.mrz:
                sim.send_mrz(args.mrz)
            for text in args.bcbp:
                sim.send_bcbp(text)
            time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
