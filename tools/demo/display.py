"""`egate demo --screenshots DIR`: a headless Chromium on the demo lane's traveller screen that saves one
screenshot per traveller, when the screen shows their decision (please proceed / see an officer)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

DECISION_SCREENS = ("proceed", "see_officer", "one_person")


class DecisionScreenshots:
    """Watches the page's own render log from a thread; `close()` ends it and returns the files."""

    def __init__(self, url: str, folder: Path, *, poll_s: float = 0.1) -> None:
        self.url = url
        self.folder = Path(folder)
        self.poll_s = poll_s
        self.saved: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._driver: Any = None

    def start(self) -> None:
        from egate.tools.display.browser import open_browser, wait_screen

        self.folder.mkdir(parents=True, exist_ok=True)
        self._driver = open_browser()
        self._driver.get(self.url + "?lang=en")
        wait_screen(self._driver, {"welcome_exit", "welcome_entry", "welcome_boarding", "out_of_service"}, 30)
        self._thread = threading.Thread(target=self._run, name="demo-screenshots", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from egate.tools.display.browser import probe, screenshot

        last = None
        while not self._stop.wait(self.poll_s):
            try:
                shown = probe(self._driver)["screen"]
                if shown != last and shown in ("proceed", "see_officer"):
                    path = self.folder / f"traveller-{len(self.saved) + 1:02d}-{shown}.png"
                    self.saved.append(screenshot(self._driver, path))
                last = shown
            except Exception:  # the browser went away: the demo goes on without screenshots
                return

    def close(self) -> list[Path]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._driver is not None:
            self._driver.quit()
        return self.saved
