"""`[display]` config section: the traveller's screen (edge/display) and the daemon's read-only feed to it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback_address(host: str) -> bool:
    """A literal loopback IP: a name (even `localhost`) resolves through /etc/hosts or DNS, which may change."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MirrorConfig(BaseModel):
    """`[display.mirror]`: the live camera picture on the kiosk page, with a face guide. Off by default.

    The daemon (the camera's only owner) hands downscaled JPEG frames of what the face engine just saw to
    the display process over a UNIX socket, only while a page shows a positioning screen; the display
    relays them to the kiosk page on loopback. The frames are kept in memory only: never written to disk
    or to a log, never served on the supervisor page.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Show the live camera picture with a face guide while positioning (with display.enabled)."
    )
    socket: Path | None = Field(
        None,
        description="UNIX socket the daemon writes the frames to (mode as the feed socket); none: "
        "display-mirror.sock beside display.feed_socket.",
    )
    fps: float = Field(8.0, ge=1.0, le=15.0, description="Most frames per second sent to the screen.")
    width: int = Field(480, ge=160, le=960, description="Width of the frames sent, in pixels (downscaled).")
    jpeg_quality: int = Field(70, ge=30, le=90, description="JPEG quality of the frames sent.")


class DisplayConfig(BaseModel):
    """The kiosk page (`egate display serve`) and the feed the daemon writes for it.

    The daemon only ever writes to the feed socket: the display process (and the page it serves) can
    read the lane's state but has no way to send anything to the gate.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="The daemon publishes the lane's state on feed_socket for the display.")
    feed_socket: Path = Field(
        Path("/run/egate/display.sock"),
        description="UNIX socket the daemon writes the lane's state to (write-only from the daemon's side).",
    )
    feed_group: str | None = Field(
        "egate",
        description="Group allowed to read the feed socket (mode 0660): the daemon's own group, which the display's "
        "user joins (SupplementaryGroups=egate); none or empty keeps the owner only.",
    )
    host: str = Field(
        "127.0.0.1", description="Address the kiosk page is served on; loopback only (the kiosk browser is local)."
    )
    port: int = Field(8765, ge=0, le=65535, description="TCP port of the kiosk page (0: any free port, for tests).")
    languages: list[str] = Field(
        default_factory=lambda: ["en", "fr", "de", "es", "pt", "it", "ru", "tr", "ar", "zh", "ja", "ko"],
        min_length=1,
        max_length=40,
        description="Languages offered, in the order they cycle while the lane is idle (catalogues in edge/display/i18n).",
    )
    idle_cycle_s: float = Field(5.0, ge=1.0, le=60.0, description="Seconds each language shows while idle.")
    choice_hold_s: float = Field(
        60.0,
        ge=5.0,
        le=600.0,
        description="A language chosen on the touch screen holds this long after the last touch.",
    )
    proceed_direction: Literal["ahead", "left", "right"] = Field(
        "ahead", description="Which way the 'please proceed' arrow points, as the traveller faces the screen."
    )
    audio: bool = Field(False, description="Play tones for 'please proceed' and 'see an officer' (WebAudio).")
    speech: bool = Field(
        False,
        description="Also speak each new screen's words with a voice installed on the device (Web Speech API, "
        "local voices only, e.g. speech-dispatcher + espeak-ng); silent where the language has no local voice.",
    )
    heartbeat_s: float = Field(1.0, ge=0.2, le=5.0, description="Feed and page heartbeat interval.")
    stale_after_s: float = Field(
        2.5,
        ge=0.5,
        le=3.0,
        description="The page shows 'out of service' when no heartbeat came for this long (daemon or server gone).",
    )
    supervisor_bind: str | None = Field(
        None,
        description="host:port of the read-only supervisor page for the officer's tablet (lane network); "
        "none keeps it off.",
    )
    mirror: MirrorConfig = Field(
        default_factory=MirrorConfig, description="The live camera picture with a face guide (off by default)."
    )

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        if not _is_loopback(value):
            raise ValueError(f"display.host must be a loopback address (127.0.0.1, ::1), not {value!r}")
        return value

    @field_validator("languages")
    @classmethod
    def _languages_shipped(cls, value: list[str]) -> list[str]:
        from egate.edge.display.languages import available_languages

        shipped = available_languages()
        unknown = [code for code in value if code not in shipped]
        if unknown:
            raise ValueError(f"no catalogue for {', '.join(unknown)}; shipped: {', '.join(shipped)}")
        if len(set(value)) != len(value):
            raise ValueError("a language is listed twice")
        return value

    @field_validator("supervisor_bind")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"display.supervisor_bind must be host:port, e.g. 10.0.0.5:8766, not {value!r}")
        return value

    @model_validator(mode="after")
    def _mirror_stays_on_loopback(self) -> DisplayConfig:
        if not self.mirror.enabled:
            return self
        if not _is_loopback_address(self.host):
            raise ValueError(
                f"display.mirror.enabled needs display.host to be a literal loopback address (127.0.0.1 or ::1), "
                f"not {self.host!r}: the camera picture must never leave this machine"
            )
        if self.mirror_socket() == self.feed_socket:
            raise ValueError("display.mirror.socket must differ from display.feed_socket")
        return self

    def mirror_socket(self) -> Path:
        return self.mirror.socket or self.feed_socket.with_name("display-mirror.sock")

    def supervisor_address(self) -> tuple[str, int] | None:
        if not self.supervisor_bind:
            return None
        host, _, port = self.supervisor_bind.rpartition(":")
        return host.strip("[]"), int(port)
