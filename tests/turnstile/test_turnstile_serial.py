"""The libosdp channel over pyserial: never raises, reopens the port when it comes back."""

from __future__ import annotations

import os
import pty
import tty
from pathlib import Path

from egate.drivers.turnstile.serial_channel import SerialChannel


def make_pty(link: Path) -> tuple[int, int]:
    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    return master, slave


def test_channel_survives_the_port_vanishing_and_reopens(tmp_path: Path) -> None:
    link = tmp_path / "gate"
    master, slave = make_pty(link)
    channel = SerialChannel(str(link), 115200, reopen_interval_s=0.0)
    try:
        assert channel.write(b"\x53\x00") == 2
        assert os.read(master, 16) == b"\x53\x00"
        os.write(master, b"\x53\x80")
        data = b""
        while len(data) < 2:
            data += channel.read(16)
        assert data == b"\x53\x80" and channel.rx_bytes == 2
        # cable pulled: both ends close and the path disappears
        os.close(master)
        os.close(slave)
        link.unlink()
        assert channel.read(16) == b""
        assert channel.write(b"\x53") == 0
        channel.flush()
        assert not channel.is_open
        assert channel.last_error  # noted for status(), not raised
        # cable back, at the same path
        master, slave = make_pty(link)
        assert channel.write(b"\x53\x01") == 2
        assert channel.is_open and channel.opens == 2
        assert os.read(master, 16) == b"\x53\x01"
    finally:
        channel.close()
        os.close(master)
        os.close(slave)


def test_second_opener_is_refused_clearly(tmp_path: Path) -> None:
    link = tmp_path / "gate"
    master, slave = make_pty(link)
    first = SerialChannel(str(link), 115200)
    second = SerialChannel(str(link), 115200)
    try:
        assert first.write(b"x") == 1
        assert second.write(b"y") == 0  # the port is locked by the first owner
        assert str(link) in second.last_error or "lock" in second.last_error.lower()
    finally:
        first.close()
        second.close()
        os.close(master)
        os.close(slave)


def test_closed_channel_stays_closed(tmp_path: Path) -> None:
    link = tmp_path / "gate"
    master, slave = make_pty(link)
    channel = SerialChannel(str(link), 115200, reopen_interval_s=0.0)
    channel.close()
    try:
        assert channel.write(b"x") == 0
        assert channel.read(4) == b""
        assert not channel.is_open
    finally:
        os.close(master)
        os.close(slave)
