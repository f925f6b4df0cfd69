"""The traveller's screen without a browser: catalogues, screen choice, positioning guidance, languages from
documents, config rules, and the daemon's write-only feed socket with a real client on a real socket."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from egate.edge.display.feed import DisplayFeed
from egate.edge.display.languages import (
    DEFAULT_LANGUAGE,
    CatalogueError,
    available_languages,
    document_language,
    load_catalogues,
)
from egate.edge.display.model import LaneView, SupervisorView
from egate.edge.display.screens import SCREENS, screen_for
from egate.edge.session.machine import positioning_guidance
from egate.edge.session.states import Guidance
from egate.edge.settings.display import DisplayConfig

CJK = {"zh", "ja", "ko"}


def test_at_least_ten_complete_catalogues_with_arabic_rtl_and_two_cjk() -> None:
    codes = available_languages()
    catalogues = load_catalogues(codes)  # raises on any missing text
    assert len(codes) >= 10
    assert catalogues["ar"].dir == "rtl" and all(c.dir == "ltr" for k, c in catalogues.items() if k != "ar")
    assert len(CJK & set(codes)) >= 2
    reference = catalogues[DEFAULT_LANGUAGE].strings
    for screen in SCREENS:
        assert f"{screen}.title" in reference and f"{screen}.text" in reference, screen
    for code, cat in catalogues.items():
        assert all(text.strip() for text in cat.strings.values()), code
        if code != DEFAULT_LANGUAGE:  # translated, not copied
            assert cat.strings["proceed.title"] != reference["proceed.title"], code
    # The default config offers every shipped catalogue.
    assert sorted(DisplayConfig().languages) == sorted(codes)


def test_a_missing_catalogue_is_named() -> None:
    with pytest.raises(CatalogueError, match=r"no catalogue xx\.json"):
        load_catalogues(["en", "xx"])


def _view(state: str, guidance: str | None = None, **kw: object) -> LaneView:
    return LaneView(seq=1, at=0.0, state=state, mode=str(kw.pop("mode", "exit")), guidance=guidance, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("view", "screen"),
    [
        (_view("idle", "ready"), "welcome_exit"),
        (_view("idle", "present_document", mode="entry"), "welcome_entry"),
        (_view("idle", "scan_boarding_pass", mode="boarding"), "welcome_boarding"),
        (_view("capturing", "look_at_camera"), "look_at_camera"),
        (_view("capturing", "come_closer"), "come_closer"),
        (_view("capturing", "step_back"), "step_back"),
        (_view("capturing", "move_left"), "move_left"),
        (_view("capturing", "move_right"), "move_right"),
        (_view("capturing", "look_straight"), "look_straight"),
        (_view("capturing", "one_person_at_a_time"), "one_person"),
        (_view("matching", "please_wait"), "please_wait"),
        (_view("accept", "please_proceed"), "proceed"),
        (_view("refer", "see_officer"), "see_officer"),
        (_view("out_of_service", "out_of_service"), "out_of_service"),
        (_view("out_of_service", "out_of_service", maintenance=True), "closed"),
        (_view("emergency", "emergency"), "emergency"),
        (_view("alarm", "alarm", alarm="tailgate"), "alarm"),
        # The state wins over a stale guidance: never "please proceed" while the lane is out of service.
        (_view("out_of_service", "please_proceed"), "out_of_service"),
        (_view("refer", "please_proceed"), "see_officer"),
    ],
)
def test_screen_for_each_state_and_guidance(view: LaneView, screen: str) -> None:
    assert screen_for(view) == screen


@pytest.mark.parametrize(
    ("issues", "placement", "guidance"),
    [
        (["face_too_small"], None, Guidance.COME_CLOSER),
        (["face_too_small"], (0.1, 0.05), Guidance.COME_CLOSER),  # far first: once closer, centring follows
        (["too_blurred"], (0.5, 0.7), Guidance.STEP_BACK),
        (["too_blurred"], (0.15, 0.3), Guidance.MOVE_LEFT),  # image left = the traveller's right
        (["too_blurred"], (0.85, 0.3), Guidance.MOVE_RIGHT),
        (["yaw_too_large"], (0.5, 0.3), Guidance.LOOK_STRAIGHT),
        (["pitch_too_large", "too_dark"], None, Guidance.LOOK_STRAIGHT),
        (["too_dark"], (0.5, 0.3), Guidance.LOOK_AT_CAMERA),
        ([], None, Guidance.LOOK_AT_CAMERA),
    ],
)
def test_positioning_guidance_from_the_engines_measurements(
    issues: list[str], placement: tuple[float, float] | None, guidance: Guidance
) -> None:
    assert positioning_guidance(issues, placement) is guidance


@pytest.mark.parametrize(
    ("nationality", "issuer", "language"),
    [
        ("JPN", "JPN", "ja"),
        ("D", "D", "de"),  # Germany's one-letter code, as read from the MRZ
        ("D<<", "UTO", "de"),
        ("SAU", "GBR", "ar"),  # nationality before the issuing state
        ("UTO", "KOR", "ko"),  # unknown nationality: the issuing state
        ("XXA", "UTO", None),
    ],
)
def test_document_language(nationality: str, issuer: str, language: str | None) -> None:
    assert document_language(nationality, issuer) == language


def test_display_config_keeps_the_page_on_loopback() -> None:
    assert DisplayConfig(host="::1").host == "::1"
    with pytest.raises(ValidationError, match="loopback"):
        DisplayConfig(host="0.0.0.0")
    assert DisplayConfig().supervisor_address() is None
    assert DisplayConfig(supervisor_bind="10.0.0.5:8766").supervisor_address() == ("10.0.0.5", 8766)
    with pytest.raises(ValidationError, match="host:port"):
        DisplayConfig(supervisor_bind="10.0.0.5")


# ------------------------------------------------------------------------------------------ the feed


@pytest.fixture
def feed() -> Iterator[DisplayFeed]:
    path = Path(f"/tmp/egate-test-feed-{os.getpid()}.sock")
    f = DisplayFeed(path, None, lambda: SupervisorView(gate_id="g", in_service=True), heartbeat_s=0.2)
    f.start()
    try:
        yield f
    finally:
        f.close()


def _client(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.connect(str(path))
    return s


def _messages(sock: socket.socket, want: int) -> list[dict]:
    buf = b""
    out: list[dict] = []
    while len(out) < want:
        chunk = sock.recv(65536)
        assert chunk, "feed closed"
        buf += chunk
        *lines, buf = buf.split(b"\n")
        out += [json.loads(line) for line in lines if line]
    return out


def _update(feed: DisplayFeed, state: str, guidance: str) -> LaneView | None:
    return feed.update(
        at=time.time(), state=state, mode="exit", guidance=guidance, maintenance=False, alarm=None, language=None
    )


def test_feed_gives_the_current_view_at_once_then_each_change(feed: DisplayFeed) -> None:
    first = _update(feed, "idle", "ready")
    assert first is not None and _update(feed, "idle", "ready") is None  # unchanged: nothing published
    with _client(feed.socket_path) as client:
        hello = _messages(client, 2)
        assert hello[0] == {"v": 1, "type": "lane", "lane": first.model_dump()}
        assert hello[1]["type"] == "heartbeat" and hello[1]["supervisor"]["gate_id"] == "g"
        second = _update(feed, "capturing", "look_at_camera")
        assert second is not None and second.seq == first.seq + 1
        lanes = [m for m in _messages(client, 3) if m["type"] == "lane"]
        while not lanes:
            lanes = [m for m in _messages(client, 1) if m["type"] == "lane"]
        assert lanes[0]["lane"]["guidance"] == "look_at_camera"


def test_feed_never_reads_what_a_client_sends(feed: DisplayFeed) -> None:
    _update(feed, "idle", "ready")
    with _client(feed.socket_path) as client:
        _messages(client, 1)
        # The daemon shut its read side: whatever a client writes goes nowhere (or fails), and the feed goes on.
        with contextlib.suppress(OSError):
            client.sendall(b'{"v":1,"cmd":"gate.open"}\n' * 100)
        _update(feed, "refer", "see_officer")
        seen: list[dict] = []
        while not any(m["type"] == "lane" and m["lane"]["state"] == "refer" for m in seen):
            seen += _messages(client, 1)
    assert feed.health().ok


def test_a_client_that_does_not_read_is_dropped_and_can_reconnect(feed: DisplayFeed) -> None:
    stuck = _client(feed.socket_path)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        for i in range(3000):
            _update(feed, "capturing", "look_at_camera" if i % 2 else "come_closer")
        deadline = time.monotonic() + 10
        while "0 display client" not in feed.health().detail and time.monotonic() < deadline:
            _update(feed, "idle", "ready")
            _update(feed, "capturing", "look_at_camera")
            time.sleep(0.02)
        assert "0 display client" in feed.health().detail, feed.health().detail
    finally:
        stuck.close()
    with _client(feed.socket_path) as again:
        assert _messages(again, 1)[0]["type"] == "lane"


def test_display_config_refuses_a_language_without_catalogue() -> None:
    with pytest.raises(ValidationError, match="no catalogue for xx"):
        DisplayConfig(languages=["en", "xx"])
