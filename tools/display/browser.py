"""A headless Chromium driven by selenium, pointed at the traveller's screen (bench, demo, tests).

Debian's `chromium` and `chromium-driver`; as root Chromium needs `--no-sandbox`. The page exposes
what it rendered in `window.__egate` (screen, language, render timestamps); nothing here changes it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 800)  # a 10-15" kiosk panel in landscape


class BrowserMissing(RuntimeError):
    pass


def browser_available() -> bool:
    return bool(shutil.which("chromium") or os.path.exists(CHROMIUM)) and bool(
        shutil.which("chromedriver") or os.path.exists(CHROMEDRIVER)
    )


def open_browser(window: tuple[int, int] = WINDOW) -> Any:
    """A headless Chromium session (selenium WebDriver); close it with `.quit()`."""
    if not browser_available():
        raise BrowserMissing("chromium and chromium-driver are not installed: run `make setup`")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in (
        "--headless=new",
        f"--window-size={window[0]},{window[1]}",
        "--force-device-scale-factor=1",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--autoplay-policy=no-user-gesture-required",
        # Background tabs must keep their timers (the tests keep one tab per language).
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    service = Service(shutil.which("chromedriver") or CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def probe(driver: Any) -> dict[str, Any]:
    """The page's own record: screen, lang, offline, loadId, messages."""
    return dict(
        driver.execute_script(
            "const p = window.__egate || {}; return {screen: p.screen, lang: p.lang, offline: p.offline, "
            "loadId: p.loadId, messages: p.messages, renders: (p.renders || []).length};"
        )
    )


def wait_screen(driver: Any, screen: str | set[str], timeout: float, *, lang: str | None = None) -> dict[str, Any]:
    """Poll the page until it shows `screen` (and `lang`); TimeoutError with what it shows instead."""
    wanted = {screen} if isinstance(screen, str) else set(screen)
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while True:
        last = probe(driver)
        if last.get("screen") in wanted and (lang is None or last.get("lang") == lang):
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the page did not show {sorted(wanted)} ({lang or 'any language'}) in {timeout} s: {last}"
            )
        time.sleep(0.05)


def renders(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script("return (window.__egate && window.__egate.renders) || [];"))


def screenshot(driver: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
