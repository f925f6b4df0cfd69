"""The traveller's screen in a real browser against the real daemon (`egate.tools.rig.lane` with the display).

One lane rig and one headless Chromium session for the module. The lane is driven only through the
daemon's own paths: the camera plays travellers (accept, refer, two people, too far), a technician's
maintenance command closes the lane, a lost camera takes it out of service, the turnstile simulator's
emergency and tailgate inputs, a signed ops `set_mode`, an MRZ on the serial reader. For every screen
and three languages (English, Arabic right-to-left, Chinese) the DOM is checked, a screenshot saved and
axe-core audits the page at WCAG 2.2 AA: `.cache/test-artifacts/display/` (screens, `axe.json`).

The positioning screens that need a face placed in a particular way (step back, move left/right, look
straight) are staged through the camera with real face photos in tests/test_display_camera.py (with the
camera mirror). "Please wait" lasts only while the engine matches (milliseconds), so
`test_please_wait_renders` drives it through the daemon's own feed component (`DisplayFeed`) into a
second display process. This lane runs without the mirror (the default): the page shows none.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from egate.edge.display.languages import load_catalogues
from egate.tools.display.browser import browser_available, open_browser, probe, renders, screenshot, wait_screen
from egate.tools.rig.lane import GATE, SITE, LaneRig, OpsMaterial, prepare_ops, run_egate
from egate.tools.sim.reader import ReaderSimulator
from tests.lane.test_lane_modes import td3
from tests.support.rig import LEAD_IN, NEEDS_RIG

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".cache" / "test-artifacts" / "display"
AXE = REPO / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
LANGS = ("en", "ar", "zh")
EMPTY = [5]  # an empty lane
CATALOGUES = load_catalogues([*LANGS, "ja"])
ICONS = {
    "welcome_exit": "face",
    "welcome_entry": "passport",
    "welcome_boarding": "boarding",
    "look_at_camera": "face",
    "come_closer": "closer",
    "step_back": "back",
    "move_left": "left",
    "move_right": "right",
    "look_straight": "straight",
    "one_person": "one",
    "please_wait": "wait",
    "proceed": "proceed",
    "see_officer": "officer",
    "out_of_service": "offline",
    "closed": "closed",
    "emergency": "emergency",
    "alarm": "alarm",
}

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


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def axe_results() -> Iterator[dict[str, Any]]:
    results: dict[str, Any] = {}
    yield results
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "axe.json").write_text(json.dumps(results, indent=1, sort_keys=True))


@pytest.fixture(scope="module")
def reader() -> Iterator[ReaderSimulator]:
    with ReaderSimulator() as sim:
        yield sim


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, reader: ReaderSimulator) -> Iterator[LaneRig]:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    folder = tmp_path_factory.mktemp("display")
    ops: OpsMaterial = prepare_ops(folder / "ops", scope=f"{SITE}:{GATE}")
    lane = LaneRig(
        folder / "rig",
        ops=ops,
        plan=None,
        display=True,
        config={
            "reader": {"serial_url": reader.port_path},
            # Long enough holds to look at each screen in three languages.
            "lane": {"refer_hold_s": 8.0, "capture_timeout_s": 6.0, "passage_timeout_s": 8.0},
            # Tones and spoken prompts on: their code runs on every screen change (headless has no voice).
            "display": {
                "idle_cycle_s": 1.0,
                "supervisor_bind": f"127.0.0.1:{_free_port()}",
                "audio": True,
                "speech": True,
            },
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
    """One tab per pinned language (`?lang=`) plus `auto`: the kiosk as deployed (cycles, follows the document)."""
    assert rig.display_url is not None
    handles: dict[str, str] = {}
    for i, lang in enumerate((*LANGS, "auto")):
        if i:
            browser.switch_to.new_window("tab")
        browser.get(rig.display_url + ("" if lang == "auto" else f"?lang={lang}"))
        handles[lang] = browser.current_window_handle
        wait_screen(browser, "welcome_exit", 30)
    return handles


# ------------------------------------------------------------------------------------------ checks


def _axe(driver: Any) -> dict[str, Any]:
    if not driver.execute_script("return typeof window.axe !== 'undefined';"):
        driver.execute_script(AXE.read_text())
    return dict(
        driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']})
              .then(r => done({violations: r.violations.map(v => ({id: v.id, impact: v.impact,
                  nodes: v.nodes.map(n => n.target.join(' '))})), passes: r.passes.length}))
              .catch(e => done({error: String(e)}));
            """,
            WCAG_TAGS,
        )
    )


def _dom(driver: Any) -> dict[str, Any]:
    return dict(
        driver.execute_script(
            """
        const h = document.documentElement;
        return {lang: h.lang, dir: h.dir, screen: document.body.dataset.screen,
          title: document.getElementById('title').textContent, text: document.getElementById('text').textContent,
          icon: document.getElementById('icon-use').getAttribute('href'),
          live: document.getElementById('message').getAttribute('aria-live'),
          pressed: [...document.querySelectorAll('#languages button[aria-pressed=true]')].map(b => b.dataset.code)};
        """
        )
    )


def _check_screen(driver: Any, screen: str, lang: str, axe_results: dict[str, Any], *, timeout: float = 15) -> None:
    """The tab shows `screen` in `lang`: texts from the catalogue, lang/dir, icon; screenshot; axe clean."""
    cat = CATALOGUES[lang]
    for _attempt in range(5):
        # Guidance while capturing may change frame by frame: read the DOM while the screen is the one wanted.
        wait_screen(driver, screen, timeout, lang=lang)
        dom = _dom(driver)
        if dom["screen"] == screen and dom["lang"] == cat.bcp47:
            break
    assert dom["screen"] == screen
    assert dom["lang"] == cat.bcp47 and dom["dir"] == cat.dir
    assert dom["title"] == cat.strings[f"{screen}.title"] and dom["text"] == cat.strings[f"{screen}.text"]
    assert dom["icon"] == f"#i-{ICONS[screen]}"
    assert dom["live"] == "assertive" and dom["pressed"] == [lang]
    screenshot(driver, ARTIFACTS / f"{screen}.{lang}.png")
    result = _axe(driver)
    axe_results[f"{screen}.{lang}"] = result
    assert "error" not in result, result
    assert result["violations"] == [], result["violations"]


def _check_all_languages(browser: Any, tabs: dict[str, str], screen: str, axe_results: dict[str, Any]) -> None:
    for lang in LANGS:
        browser.switch_to.window(tabs[lang])
        _check_screen(browser, screen, lang, axe_results)


def _set_mode(rig: LaneRig, mode: str) -> None:
    assert rig.ops is not None
    run_egate(
        [
            "ops", "cmd", "set-mode", "--mode", mode,
            "--gate", rig.gate, "--site", rig.site,
            "--host", rig.broker.host, "--port", str(rig.broker.port),
            "--signing-key", str(rig.ops.key), "--key-id", rig.ops.key_id, "--json",
        ],
        timeout=60,
    )  # fmt: skip
    rig.wait_status(lambda s: s["mode"] == mode and s["state"] == "idle", 15, f"the lane idle in {mode} mode")


# ------------------------------------------------------------------------------------------ tests


def test_every_lane_state_in_three_languages(
    rig: LaneRig, browser: Any, tabs: dict[str, str], reader: ReaderSimulator, axe_results
) -> None:
    _check_all_languages(browser, tabs, "welcome_exit", axe_results)

    # A technician closes the lane.
    rig.call("maintenance", on=True)
    _check_all_languages(browser, tabs, "closed", axe_results)
    rig.call("maintenance", on=False)

    # A fault: the camera is lost.
    rig.remove_camera_source()
    _check_all_languages(browser, tabs, "out_of_service", axe_results)
    rig.restore_camera_source()
    rig.wait_status(lambda s: s["in_service"] and s["state"] == "idle", 20, "the lane back in service")

    # The gate controller's emergency input: everything open, leave freely.
    rig.sim.set_emergency(True)
    _check_all_languages(browser, tabs, "emergency", axe_results)
    rig.sim.set_emergency(False)
    rig.wait_state("idle", 10)

    # Tailgating: alarm until an officer clears it.
    rig.sim.trigger_tailgate()
    _check_all_languages(browser, tabs, "alarm", axe_results)
    rig.call("alarm.clear")
    rig.wait_state("idle", 10)

    # A stranger is referred: neutral words, no reason on the screen.
    # Scenes loop: a new scene starts when the current one ends (a scene played once ends on a long tail).
    rig.play([LEAD_IN, "stranger", 30], loop=True)
    _check_all_languages(browser, tabs, "see_officer", axe_results)
    rig.play(EMPTY, loop=True)
    rig.wait_state("idle", 20)

    # An expected traveller: the gate opens. The simulated traveller waits, so the screen stays.
    rig.sim.walk_when_released = False
    try:
        rig.play([LEAD_IN, "male", 200], loop=True)
        _check_all_languages(browser, tabs, "proceed", axe_results)
        rig.play(EMPTY, loop=True)
    finally:
        rig.sim.walk_when_released = True
    rig.wait_state("idle", 20)

    # Two people at once, and a traveller too far away: guidance while capturing.
    rig.play(["group"], loop=True)
    _check_all_languages(browser, tabs, "one_person", axe_results)
    rig.play(["far"], loop=True)
    _check_all_languages(browser, tabs, "come_closer", axe_results)
    rig.play(EMPTY, loop=True)
    rig.wait_state("idle", 30)

    # Every welcome per mode (signed ops command); entry and boarding need the document reader.
    _set_mode(rig, "boarding")
    _check_all_languages(browser, tabs, "welcome_boarding", axe_results)
    _set_mode(rig, "entry")
    _check_all_languages(browser, tabs, "welcome_entry", axe_results)

    # A Japanese passport is read: the kiosk (not pinned) switches to Japanese for this traveller; the lane
    # captures (no face on the empty lane: "look at the camera"), refers, and the language ends with the session.
    browser.switch_to.window(tabs["auto"])
    for attempt in range(3):
        rig.wait_status(lambda s: s["in_service"] and s["state"] == "idle", 30, "the lane idle in service")
        reader.send_mrz(td3("TR7654321", "YAMADA", "HANAKO", issuer="JPN"))
        try:
            _check_screen(browser, "look_at_camera", "ja", axe_results)
            _check_screen(browser, "see_officer", "ja", axe_results)
            break
        except TimeoutError:
            # Under heavy CPU load the OSDP link may drop for a moment, which aborts the session
            # (ABORTED_OUT_OF_SERVICE): that traveller is read again; anything else is a failure.
            last = rig.call("outcomes", n=1)["outcomes"]
            if attempt == 2 or not last or "ABORTED_OUT_OF_SERVICE" not in last[0]["reasons"]:
                raise
    rig.wait_state("idle", 20)
    shown = wait_screen(browser, "welcome_entry", 10)
    assert shown["lang"] is not None
    _set_mode(rig, "exit")


def test_idle_languages_cycle_and_a_touch_chooses_one(rig: LaneRig, browser: Any, tabs: dict[str, str]) -> None:
    browser.switch_to.window(tabs["auto"])
    wait_screen(browser, "welcome_exit", 15)
    seen = {wait_screen(browser, "welcome_exit", 5)["lang"]}
    deadline = time.monotonic() + 15
    while len(seen) < 3 and time.monotonic() < deadline:
        seen.add(probe(browser)["lang"])
        time.sleep(0.1)
    assert len(seen) >= 3, seen  # the welcome cycles through the languages

    button = browser.find_element("css selector", "#languages button[data-code='ar']")
    button.click()
    chosen = wait_screen(browser, "welcome_exit", 5, lang="ar")
    assert browser.execute_script("return document.documentElement.dir") == "rtl"
    # The choice holds while idle: no cycling away from it over three cycle periods.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert probe(browser)["lang"] == "ar"
        time.sleep(0.2)
    assert chosen["offline"] is False


def test_supervisor_page_shows_state_devices_and_referral_reasons_only(rig: LaneRig, browser: Any, axe_results) -> None:
    address = rig.config()["display"]["supervisor_bind"]
    browser.switch_to.new_window("tab")
    try:
        browser.get(f"http://{address}/")
        deadline = time.monotonic() + 15
        text = ""
        while time.monotonic() < deadline:
            text = browser.find_element("tag name", "body").text
            if "NO_MATCH" in text and "camera" in text:
                break
            time.sleep(0.1)
        assert "NO_MATCH" in text and "camera" in text and "IDLE" in text, text
        for personal in ("subject-0001", "subject-0002", "TR7654321", "YAMADA", "HANAKO"):
            assert personal not in text
        screenshot(browser, ARTIFACTS / "supervisor.png")
        result = _axe(browser)
        axe_results["supervisor"] = result
        assert result["violations"] == [], result["violations"]
        # Read-only: nothing but GET is served.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"http://{address}/events", method="POST"), timeout=10)
        assert refused.value.code == 405
    finally:
        browser.close()
        browser.switch_to.window(browser.window_handles[0])


def test_the_page_survives_the_daemon_and_the_display_process(rig: LaneRig, browser: Any, tabs: dict[str, str]) -> None:
    browser.switch_to.window(tabs["auto"])
    wait_screen(browser, "welcome_exit", 15)
    load_id = probe(browser)["loadId"]
    timings: dict[str, float] = {}

    # The daemon stops (SIGTERM): the page shows out of service; it returns: the page recovers, no reload.
    began = time.monotonic()
    rig.stop_daemon()
    wait_screen(browser, "out_of_service", 10)
    timings["daemon_stop_to_out_of_service_s"] = round(time.monotonic() - began, 2)
    rig.start_daemon()
    wait_screen(browser, "welcome_exit", 20)

    # The daemon dies (SIGKILL).
    began = time.monotonic()
    rig.kill_daemon()
    wait_screen(browser, "out_of_service", 10)
    timings["daemon_kill_to_out_of_service_s"] = round(time.monotonic() - began, 2)
    rig.start_daemon()
    wait_screen(browser, "welcome_exit", 20)

    # The display process dies: only the page's own watchdog on the stream's heartbeat can notice.
    began = time.monotonic()
    rig.stop_display(kill=True)
    shown = wait_screen(browser, "out_of_service", 10)
    timings["display_kill_to_out_of_service_s"] = round(time.monotonic() - began, 2)
    assert shown["offline"] is True
    rig.start_display()
    wait_screen(browser, "welcome_exit", 20)
    assert probe(browser)["loadId"] == load_id  # recovered in place, never reloaded

    # A browser that (re)connects gets the current state at once: its very first screen is "closed".
    rig.call("maintenance", on=True)
    wait_screen(browser, "closed", 10)
    browser.switch_to.new_window("tab")
    try:
        assert rig.display_url is not None
        browser.get(rig.display_url)
        wait_screen(browser, "closed", 10)
        assert [r["screen"] for r in renders(browser)][:1] == ["closed"]
    finally:
        browser.close()
        browser.switch_to.window(tabs["auto"])
        rig.call("maintenance", on=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "resilience.json").write_text(json.dumps(timings, indent=1))


def test_no_camera_mirror_unless_configured(rig: LaneRig, browser: Any, tabs: dict[str, str]) -> None:
    """The mirror is off by default: the daemon opens no frame socket, the display has no frame route and the
    page, which has shown positioning screens by now, never showed a picture."""
    feed_socket = Path(rig.config()["display"]["feed_socket"])
    assert feed_socket.exists() and not feed_socket.with_name("display-mirror.sock").exists()
    assert rig.display_url is not None
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(rig.display_url + "mirror/events", timeout=10)
    assert missing.value.code == 404
    browser.switch_to.window(tabs["auto"])
    state = browser.execute_script(
        "return {hidden: document.getElementById('mirror').hidden, frames: window.__egate.mirrorFrames,"
        " src: document.getElementById('mirror-img').getAttribute('src')};"
    )
    assert state == {"hidden": True, "frames": 0, "src": None}
    assert not rig.log_events("display_mirror_listening")


def test_please_wait_renders(tmp_path: Path, browser: Any, axe_results) -> None:
    """please wait (while the engine matches) through the daemon's feed component."""
    from egate.edge.display.feed import DisplayFeed
    from egate.edge.display.model import SupervisorView

    sock = Path(os.environ.get("TMPDIR", "/tmp")) / f"egate-feed-{os.getpid()}.sock"
    feed = DisplayFeed(sock, None, lambda: SupervisorView(gate_id="t", in_service=True), heartbeat_s=0.5)
    config = tmp_path / "display.toml"
    config.write_text(
        f'[gate]\nsite_id = "site-t"\ngate_id = "t"\n[display]\nenabled = true\nfeed_socket = "{sock}"\n'
        'feed_group = ""\nport = 0\n'
    )
    feed.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egate.tools.cli", "display", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    browser.switch_to.new_window("tab")
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["display_url"]
        for guidance, screen in (("please_wait", "please_wait"),):
            feed.update(
                at=time.time(),
                state="capturing",
                mode="exit",
                guidance=guidance,
                maintenance=False,
                alarm=None,
                language=None,
            )
            for lang in LANGS:
                browser.get(f"{url}?lang={lang}")
                _check_screen(browser, screen, lang, axe_results)
    finally:
        browser.close()
        browser.switch_to.window(browser.window_handles[0])
        proc.terminate()
        proc.wait(5)
        feed.close()
