"""Unix sockets the daemon listens on (the control socket, the display feed): made atomically, stale ones replaced.

A socket is bound and given its mode under a temporary name, then renamed into place, so a client never
reaches a half-made socket and a failed start leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
from pathlib import Path


class SocketGroupDenied(PermissionError):
    """The socket could not be given to its group: the daemon's user is not a member."""


def group_id(name: str | None) -> int | None:
    """The gid of group `name` for a socket's 0660 mode; None (no group: owner-only 0600) when `name` is None.

    Raises KeyError when the group does not exist: each caller names the setting that chose it.
    """
    return None if name is None else grp.getgrnam(name).gr_gid


def is_live(path: Path) -> bool:
    """Whether a process listens on `path` (a socket left by a killed daemon answers nothing)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fsencode(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def listen_unix(path: Path, gid: int | None, backlog: int) -> socket.socket:
    """A listening socket at `path`: mode 0660 and group `gid` when given, else owner-only 0600."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fsencode(temp))
        os.chmod(temp, 0o660 if gid is not None else 0o600)
        if gid is not None:
            try:
                os.chown(temp, -1, gid)
            except PermissionError as exc:
                raise SocketGroupDenied(exc.errno, exc.strerror) from None
        listener.listen(backlog)
        os.rename(temp, path)
    except BaseException:
        listener.close()
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return listener
