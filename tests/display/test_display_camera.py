"""The positioning screens and the camera mirror, staged through the lane camera, in a real browser.

The real daemon (`egate.tools.rig.lane`, demo lane) watches still scenes made of real face photos
(tests/positioning_scenes.py, Labeled Faces in the Wild from ../shared/data): too far, too close, off to
the left, off to the right, head turned. The daemon's engine measures every frame and the session
chooses the guidance; the headless Chromium must show come closer / step back / move left / move right /
look straight, in English, Arabic (right-to-left) and Chinese, with axe-core clean. The mirror is on
(`[display.mirror]`): the page shows the camera picture with its face guide on those screens only, the
supervisor page never gets a frame, and nothing of the camera reaches the disk (state, logs, broker).
A second display process with the mirror off shows none. Screenshots and axe results:
`.cache/test-artifacts/display-camera/`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from egate.tools.display.browser import browser_available, open_browser, probe, screenshot, wait_screen
from egate.tools.rig.lane import EGATE, LaneRig, empty_frame, to_toml
from tests.display.positioning_scenes import EXPECTED_SCREEN, PLACEMENTS, scene_frame, write_still_scene
from tests.display.test_display_page import AXE, CATALOGUES, ICONS, LANGS, _axe, _dom
from tests.support.rig import NEEDS_RIG

ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "test-artifacts" / "display-camera"
MIRROR_WIDTH = 480
JPEG_SOI = b"\xff\xd8\xff"
JPEG_BASE64 = b"/9j/"  # base64 of a JPEG's first bytes

pytestmark = [
    pytest.mark.slow,
    *NEEDS_RIG,
    pytest.mark.timeout(400),
    pytest.mark.skipif(not browser_available(), reason="chromium / chromium-driver missing: make setup installs them"),
    pytest.mark.skipif(not AXE.exists(), reason=f"axe-core missing at {AXE}: make setup installs it (npm)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaneRig]:
    lane = LaneRig(
        tmp_path_factory.mktemp("display-camera") / "rig",
        plan=None,
        push_gallery=False,  # nobody is expected: every session ends in a referral, the scenes loop
        display=True,
        config={
            # Every session captures for 5 s (no frame passes the gate), then a short referral.
            "lane": {"capture_timeout_s": 5.0, "refer_hold_s": 1.0},
            "display": {"supervisor_bind": f"127.0.0.1:{_free_port()}", "mirror": {"enabled": True}},
        },
    )
    lane.start()
    try:
        yield lane
    finally:
        lane.close()


@pytest.fixture(scope="module")
def browser(rig: LaneRig) -> Iterator[Any]:
    driver = open_browser()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def tabs(rig: LaneRig, browser: Any) -> dict[str, str]:
    assert rig.display_url is not None
    handles: dict[str, str] = {}
    for i, lang in enumerate(LANGS):
        if i:
            browser.switch_to.new_window("tab")
        browser.get(f"{rig.display_url}?lang={lang}")
        handles[lang] = browser.current_window_handle
        wait_screen(browser, "welcome_exit", 30)
    return handles


@pytest.fixture(scope="module")
def axe_results() -> Iterator[dict[str, Any]]:
    results: dict[str, Any] = {}
    yield results
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "axe.json").write_text(json.dumps(results, indent=1, sort_keys=True))


def _mirror_state(driver: Any) -> dict[str, Any]:
    return dict(
        driver.execute_script(
            """
            const f = document.getElementById('mirror'), i = document.getElementById('mirror-img');
            const p = window.__egate;
            return {hidden: f.hidden, shown: p.mirrorShown, frames: p.mirrorFrames, width: i.naturalWidth,
              height: i.naturalHeight, alt: i.alt, src: (i.getAttribute('src') || '').slice(0, 23),
              box: f.getBoundingClientRect().width, screen: p.screen, lang: p.lang};
            """
        )
    )


def _wait_positioning_with_mirror(driver: Any, screen: str, lang: str, timeout: float = 30) -> dict[str, Any]:
    """The tab shows `screen` in `lang` with the live picture (new frames arriving while it shows)."""
    deadline = time.monotonic() + timeout
    first: dict[str, Any] | None = None
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = _mirror_state(driver)
        if last["screen"] == screen and last["lang"] == lang:
            if last["shown"] and not last["hidden"]:
                if first is None:
                    first = last
                elif last["frames"] >= first["frames"] + 2:
                    return last
        else:
            first = None
        time.sleep(0.05)
    raise TimeoutError(f"no live picture on {screen} ({lang}) within {timeout} s: {last}")


def _show(rig: LaneRig, name: str) -> None:
    shown = len(list(rig.scenes_dir.glob("still-*")))
    rig.show(write_still_scene(rig.scenes_dir / f"still-{shown:03d}-{name}", scene_frame(name)), loop=True)


def test_positioning_screens_follow_the_camera_with_the_mirror(
    rig: LaneRig, browser: Any, tabs: dict[str, str], axe_results: dict[str, Any]
) -> None:
    for name in PLACEMENTS:
        _show(rig, name)
        screen = EXPECTED_SCREEN[name]
        for lang in LANGS:
            browser.switch_to.window(tabs[lang])
            cat = CATALOGUES[lang]
            for _attempt in range(5):
                # Between two sessions the lane refers and idles: read the page while it shows the screen.
                mirror = _wait_positioning_with_mirror(browser, screen, lang)
                dom = _dom(browser)
                if dom["screen"] == screen:
                    break
            assert dom["screen"] == screen and dom["lang"] == cat.bcp47 and dom["dir"] == cat.dir
            assert dom["title"] == cat.strings[f"{screen}.title"] and dom["text"] == cat.strings[f"{screen}.text"]
            assert dom["icon"] == f"#i-{ICONS[screen]}"
            # The picture: the daemon's frame downscaled to display.mirror.width, labelled in the language.
            assert mirror["width"] == MIRROR_WIDTH and mirror["height"] == MIRROR_WIDTH * 3 // 4
            assert mirror["alt"] == cat.strings["ui.mirror"] and mirror["src"] == "data:image/jpeg;base64,"
            assert mirror["box"] > 300  # laid out, not a hidden 0-px element
            screenshot(browser, ARTIFACTS / f"{screen}.{lang}.png")
            result = _axe(browser)
            axe_results[f"{screen}.{lang}"] = result
            assert "error" not in result, result
            assert result["violations"] == [], result["violations"]

    # Off the positioning screens the picture goes, and the stream with it: the display stops reading frames.
    rig.show(write_still_scene(rig.scenes_dir / "still-empty", empty_frame()), loop=True)
    for lang in LANGS:
        browser.switch_to.window(tabs[lang])
        wait_screen(browser, "welcome_exit", 30)
        state = _mirror_state(browser)
        assert state["hidden"] and not state["shown"] and state["src"] == ""
    assert rig.display_url is not None
    deadline = time.monotonic() + 10
    while True:
        health = json.loads(urllib.request.urlopen(rig.display_url + "healthz", timeout=10).read())
        if health["mirror"]["watchers"] == 0:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.05)
    assert health["mirror"]["frames_in"] > 0


def _sse_lines(url: str, wanted: int, timeout: float = 10, log: Path | None = None) -> list[bytes]:
    """The first `wanted` lines of an event stream; a stream silent for `timeout` s fails with what it sent
    and the display's log (its keep-alives come every few seconds, so silence means a stuck display)."""
    lines: list[bytes] = []
    with urllib.request.urlopen(url, timeout=timeout) as response:
        while len(lines) < wanted:
            try:
                line = response.readline()
            except TimeoutError:
                tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
                pytest.fail(f"{url} silent for {timeout} s after {[ln[:60] for ln in lines]}; display log:\n{tail}")
            if not line:
                break
            lines.append(line)
    return lines


def test_frames_stay_on_loopback_off_the_supervisor_and_off_the_disk(rig: LaneRig, browser: Any) -> None:
    _show(rig, "too_far")
    assert rig.display_url is not None
    config = rig.config()["display"]
    # The kiosk (loopback) serves the frames...
    assert rig.display_url.startswith("http://127.0.0.1:")
    frame_lines = [
        ln
        for ln in _sse_lines(rig.display_url + "mirror/events", 8, 30, rig.workdir / "display.log")
        if ln.startswith(b"data: ")
    ]
    assert frame_lines and json.loads(frame_lines[0][6:])["jpeg"].startswith(JPEG_BASE64.decode())
    # ...the supervisor's address has no such route, and its own stream carries no picture.
    supervisor = f"http://{config['supervisor_bind']}/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(supervisor + "mirror/events", timeout=10)
    assert refused.value.code == 404
    assert not any(
        JPEG_BASE64 in line for line in _sse_lines(supervisor + "events", 6, 10, rig.workdir / "display.log")
    )
    browser.switch_to.new_window("tab")
    try:
        browser.get(supervisor)
        wait_deadline = time.monotonic() + 15
        while "demo-gate" not in browser.find_element("tag name", "body").text:
            assert time.monotonic() < wait_deadline
            time.sleep(0.1)
        assert (
            browser.execute_script("return document.images.length + document.querySelectorAll('#mirror').length") == 0
        )
        assert "mirror" not in browser.page_source
    finally:
        browser.close()
        browser.switch_to.window(browser.window_handles[0])

    # Nothing of the camera on disk: the daemon's state, its logs, the display's log, the broker's files.
    # (scenes/ is the test's own camera input; ops/ holds the enrolment photos the rig made.)
    written = [
        p
        for p in rig.workdir.rglob("*")
        if p.is_file() and not {"scenes", "ops"} & set(p.relative_to(rig.workdir).parts[:1])
    ]
    assert any(p.name == "daemon.log" for p in written) and any(p.name == "display.log" for p in written)
    for path in written:
        data = path.read_bytes()
        assert JPEG_SOI not in data and JPEG_BASE64 not in data, f"camera picture in {path}"
        assert path.suffix.lower() not in {".jpg", ".jpeg", ".png"}, path
    assert rig.log_events("display_mirror_listening")  # the mirror really ran in this daemon


def test_a_display_without_the_mirror_shows_none(rig: LaneRig, browser: Any, tmp_path: Path) -> None:
    settings = rig.config()
    settings["display"] = {**settings["display"], "mirror": {"enabled": False}, "supervisor_bind": ""}
    config = tmp_path / "no-mirror.toml"
    config.write_text(to_toml(settings))
    proc = subprocess.Popen(
        [*EGATE, "display", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    browser.switch_to.new_window("tab")
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["display_url"]
        assert json.loads(urllib.request.urlopen(url + "config.json", timeout=10).read())["mirror"] is False
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(url + "mirror/events", timeout=10)
        assert missing.value.code == 404
        _show(rig, "off_left")
        browser.get(url + "?lang=en")
        wait_screen(browser, "move_left", 30)
        shown = probe(browser)
        assert shown["screen"] == "move_left"
        state = _mirror_state(browser)
        assert state["hidden"] and not state["shown"] and state["frames"] == 0 and state["src"] == ""
    finally:
        browser.close()
        browser.switch_to.window(browser.window_handles[0])
        proc.terminate()
        proc.wait(10)
