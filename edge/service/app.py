"""Build the daemon's components from settings, in start order."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from egate.edge.service.daemon import Component, Health, StartError
from egate.edge.settings import Settings


class StateDirectory:
    """The writable state folder (systemd StateDirectory=egate): must exist and take an fsynced write."""

    name = "state"

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StartError(
                f"state directory {self.path} cannot be created ({exc.strerror}): set state.state_dir to a "
                "writable folder, or run under systemd with StateDirectory=egate"
            ) from None
        if not os.access(self.path, os.W_OK):
            raise StartError(f"state directory {self.path} is not writable by uid {os.getuid()}: fix its owner")

    def health(self) -> Health:
        try:
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".health-") as probe:
                probe.write(b"ok")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            return Health(False, f"state directory not writable: {exc.strerror}")
        return Health(True, "writable")

    def close(self) -> None:
        return None


def build_components(settings: Settings) -> list[Component]:
    from egate.edge.lane.assembly import Lane  # heavy imports (OpenCV, onnxruntime) only when the daemon really runs

    return [StateDirectory(settings.state.state_dir), *Lane(settings).components()]
