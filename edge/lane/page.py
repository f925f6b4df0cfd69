"""The document page image: MRZ by OCR and the holder's portrait, for entry mode (ABC gates).

A full-page reader (or a camera over the document window) gives an image of the data page. When the
page changes (a document placed), this worker reads the MRZ from it and, when there is one, the face
printed on the page; the lane gets one `DocumentRead` with the portrait's descriptor, so a traveller
whose document has no gallery subject is compared with the document's own photo (kind 1:1_document).

The same page is not read twice: a new read needs the image to change (document removed and another
placed). Pages are read only while the lane is in service, so a document placed during start-up counts. Nothing is written to disk; the portrait descriptor lives only in the event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import structlog

from egate.drivers.camera import Camera
from egate.drivers.document.models import MrzResult
from egate.drivers.document.reader import DocumentReader
from egate.edge.lane.adapters import document_read
from egate.edge.session.events import Event
from egate.engines.pipeline import FaceEngine

log = structlog.get_logger(__name__)


class PageReader:
    """Watches the page camera; posts a DocumentRead (with the portrait descriptor) per placed document."""

    def __init__(
        self,
        camera: Camera,
        reader: DocumentReader,
        engine: FaceEngine,
        post: Callable[[Event], None],
        *,
        change_threshold: float,
        interval_s: float,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._camera = camera
        self._reader = reader
        self._engine = engine  # its own instance: the lane's engine stays with the lane's camera
        self._post = post
        self._change_threshold = change_threshold
        self._interval_s = interval_s
        self._ready = ready
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_gray: np.ndarray | None = None
        self._posted_lines: tuple[str, ...] | None = None
        self.last_read_ms: float | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lane-page", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        seq: int | None = None
        while not self._stop.is_set():
            frame = self._camera.latest(after_seq=seq, timeout=1.0)
            if frame is None:
                continue
            seq = frame.seq
            try:
                self._consider(frame.image)
            except Exception:  # one bad page must not stop the reader
                log.exception("page_read_failed")
            self._stop.wait(self._interval_s)

    def _consider(self, image: np.ndarray) -> None:
        if not self._ready():
            # A page placed while the lane cannot take it (starting, out of service) is not consumed: it
            # is read once the lane serves, else the traveller would wait at a gate that ignores it.
            return
        gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (160, 120), interpolation=cv2.INTER_AREA)
        if self._last_gray is not None:
            change = float(np.mean(cv2.absdiff(gray, self._last_gray)))
            if change < self._change_threshold:
                return  # the same page as last time: already read (or already known to hold no MRZ)
        self._last_gray = gray
        t0 = time.perf_counter()
        result = self._reader.read_image(image)
        if not isinstance(result, MrzResult) or result.document is None:
            self._posted_lines = None  # the page changed and shows no document: the next one is new
            return
        lines = tuple(result.lines)
        if lines == self._posted_lines:
            return
        portrait = self._engine.enroll(image)
        doc = document_read(result, portrait_descriptor=None if portrait is None else portrait.descriptor)
        self.last_read_ms = round((time.perf_counter() - t0) * 1e3, 1)
        if doc is None:
            return
        self._posted_lines = lines
        log.info(
            "page_document_read",
            checks_ok=doc.checks_ok,
            portrait=portrait is not None,
            ms=self.last_read_ms,
        )
        self._post(doc)
