"""Limits that span config sections: a value one section accepts but another part cannot honour.

Each section validates its own ranges; the rules here compare sections with each other and with the
hard limits the drivers publish as constants (one source of truth: the driver's constant, not a copy).
They run when the config is loaded, so `egate config check` refuses a setting with its allowed range
instead of the first traveller finding out at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from egate.drivers.turnstile.config import MAX_PASSAGE_TIMEOUT_S

if TYPE_CHECKING:
    from egate.edge.settings import Settings

# Device names the daemon reports health for (egate.edge.lane.assembly); a required device nobody reports would keep
# the lane out of service for ever.
LANE_DEVICES = ("camera", "engine", "gate", "document_reader", "outbox", "gallery")


@dataclass(frozen=True)
class LimitIssue:
    loc: tuple[str, ...]  # the setting to change, as a key path
    message: str


class LimitError(ValueError):
    """Raised by the Settings validator; the loader reports each issue at its own key and line."""

    def __init__(self, issues: list[LimitIssue]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{'.'.join(i.loc)}: {i.message}" for i in issues))


def check_limits(s: Settings) -> list[LimitIssue]:
    issues: list[LimitIssue] = []
    lane = s.lane
    if lane.passage_timeout_s > MAX_PASSAGE_TIMEOUT_S:
        issues.append(
            LimitIssue(
                ("lane", "passage_timeout_s"),
                f"{lane.passage_timeout_s:g} s is more than the OSDP turnstile driver can give one passage: "
                f"allowed 0 < passage_timeout_s <= {MAX_PASSAGE_TIMEOUT_S:g} s",
            )
        )
    if s.camera.fps > 0:
        most = int(s.camera.fps * lane.capture_timeout_s)
        if lane.capture_frames > most:
            issues.append(
                LimitIssue(
                    ("lane", "capture_frames"),
                    f"{lane.capture_frames} frames cannot arrive within lane.capture_timeout_s="
                    f"{lane.capture_timeout_s:g} s at camera.fps={s.camera.fps:g}: allowed 1..{max(most, 1)} "
                    "(or raise lane.capture_timeout_s / camera.fps)",
                )
            )
    if s.gallery.max_bundle_bytes > s.link.max_bundle_bytes:
        issues.append(
            LimitIssue(
                ("gallery", "max_bundle_bytes"),
                f"{s.gallery.max_bundle_bytes} bytes, but the link refuses bundles over link.max_bundle_bytes="
                f"{s.link.max_bundle_bytes}: allowed up to {s.link.max_bundle_bytes}",
            )
        )
    unknown = [d for d in lane.required_devices if d not in LANE_DEVICES]
    if unknown:
        issues.append(
            LimitIssue(
                ("lane", "required_devices"),
                f"{unknown} never report health, so the lane would never be in service: allowed "
                f"{', '.join(LANE_DEVICES)}",
            )
        )
    if lane.document_reader_device not in LANE_DEVICES:
        issues.append(
            LimitIssue(
                ("lane", "document_reader_device"),
                f"{lane.document_reader_device!r} never reports health: allowed 'document_reader'",
            )
        )
    if lane.policy.chip != "off" and s.chip.reader is None:
        issues.append(
            LimitIssue(
                ("lane", "policy", "chip"),
                f"{lane.policy.chip!r} needs a chip reader, but chip.reader is not set: set chip.reader to the PC/SC "
                'reader\'s name (egate diag chip lists them) or keep lane.policy.chip = "off"',
            )
        )
    return issues
