"""Paths a config names, checked on this machine: what `egate config check` adds to the schema rules.

Devices (serial ports, V4L2 cameras) may appear later (a controller plugged in after the check), so a
missing one is a warning. Files the lane reads and never creates (a recorded clip, an image folder)
must exist: a missing one is an error. Folders the daemon or systemd creates are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from egate.drivers.camera import CameraConfig
    from egate.edge.settings import Settings

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class PathIssue:
    severity: Severity
    key: str
    message: str


def _local_path(url: str) -> Path | None:
    """The file-system path of a pyserial URL or device, or None for network/loop URLs."""
    if "://" in url:
        return None
    return Path(url)


def _device_issue(key: str, url: str | None, what: str) -> list[PathIssue]:
    path = _local_path(url) if url else None
    if path is None or path.exists():
        return []
    return [
        PathIssue(
            "warning",
            key,
            f"{path} does not exist (yet): the {what} must be connected before the lane can serve; "
            "check the cable and `ls -l /dev/serial/by-id/`",
        )
    ]


def _camera_issues(key: str, camera: CameraConfig) -> list[PathIssue]:
    location = camera.location
    if camera.kind in ("file", "folder"):
        path = Path(location)
        if not path.exists():
            return [PathIssue("error", f"{key}.location", f"{camera.kind} {path} does not exist: fix the path")]
        if camera.kind == "folder" and not path.is_dir():
            return [PathIssue("error", f"{key}.location", f"{path} is not a folder (camera.kind = 'folder')")]
        if camera.kind == "file" and not path.is_file():
            return [PathIssue("error", f"{key}.location", f"{path} is not a file (camera.kind = 'file')")]
        return []
    if camera.kind == "v4l2":
        device = Path(location) if not location.isdigit() else Path(f"/dev/video{location}")
        if not device.exists():
            return [
                PathIssue(
                    "warning",
                    f"{key}.location",
                    f"{device} does not exist (yet): connect the camera (`ls /dev/video*`)",
                )
            ]
    return []


def path_issues(settings: Settings) -> list[PathIssue]:
    """Every path the config names that is missing on this machine, errors first."""
    issues: list[PathIssue] = []
    issues += _camera_issues("camera", settings.camera)
    if settings.reader.page_camera is not None:
        issues += _camera_issues("reader.page_camera", settings.reader.page_camera)
    issues += _device_issue("turnstile.url", settings.turnstile.url, "gate controller")
    issues += _device_issue("reader.serial_url", settings.reader.serial_url, "document reader")
    model_dir = settings.state.resolved_model_dir()
    if not (model_dir / "manifest.json").exists():
        issues.append(
            PathIssue(
                "warning",
                "state.model_dir",
                f"no model cache at {model_dir} yet: build it with egate models build --model-dir {model_dir}",
            )
        )
    return sorted(issues, key=lambda issue: issue.severity != "error")
