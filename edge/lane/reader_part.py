"""The document reader as a lane part: the serial reader and, when configured, the page camera with its
own engine for the page portrait; results become session events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import structlog

from egate.drivers.camera import Camera
from egate.drivers.document.models import BcbpResult, MrzResult, ReaderResult
from egate.drivers.document.reader import DocumentReader
from egate.edge.lane.adapters import boarding_pass_read, document_read
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.page import PageReader
from egate.edge.lane.part import Part
from egate.edge.lane.session_part import SessionPart
from egate.edge.service.daemon import StartError
from egate.edge.service.secrets import CredentialError, read_credential
from egate.edge.session.events import Event
from egate.edge.settings import Settings
from egate.engines.pipeline import FaceEngine

log = structlog.get_logger(__name__)


class ReaderPart(Part):
    name = "reader"

    def __init__(
        self,
        settings: Settings,
        *,
        session: SessionPart,
        board: HealthBoard,
        post: Callable[[Event], None],
        on_document: Callable[[MrzResult], None],
    ) -> None:
        """`on_document` sees every MRZ read (the screen takes its language from it)."""
        self._settings = settings
        self._session = session
        self._board = board
        self._post = post
        self._on_document = on_document
        self._reader: DocumentReader | None = None
        self._page_camera: Camera | None = None
        self._page_engine: FaceEngine | None = None
        self._page_reader: PageReader | None = None
        self.last: tuple[ReaderResult, datetime] | None = None

    @property
    def reader(self) -> DocumentReader | None:
        return self._reader

    @property
    def page_camera(self) -> Camera | None:
        return self._page_camera

    def configured(self) -> bool:
        cfg = self._settings.reader
        return bool(cfg.serial_url) or cfg.page_camera is not None

    def start(self) -> None:
        cfg = self._settings.reader
        if not self.configured():
            return
        key = None
        if cfg.verify_bcbp_signature:
            try:
                key = read_credential(cfg.bcbp_key_credential)
            except CredentialError as exc:
                raise StartError(f"reader: {exc}") from None
        self._reader = DocumentReader(cfg, self._on_result, bcbp_key_pem=key)
        self._reader.start()  # the serial reader, when one is configured
        if cfg.page_camera is not None:
            self._page_camera = Camera(cfg.page_camera, name="page-camera")
            self._page_camera.start()
            # Its own engine instance: enrolling a page portrait never waits on (or delays) the lane camera.
            self._page_engine = FaceEngine.from_config(self._settings.engine, self._settings.state.resolved_model_dir())
            self._page_reader = PageReader(
                self._page_camera,
                self._reader,
                self._page_engine,
                self._post,
                change_threshold=cfg.page_change_threshold,
                interval_s=cfg.page_interval_s,
                ready=lambda: self._session.running and self._session.status().in_service,
            )
            self._page_reader.start()

    def close(self) -> None:
        if self._page_reader is not None:
            self._page_reader.close()
        if self._page_camera is not None:
            self._page_camera.close()
        if self._page_engine is not None:
            self._page_engine.close()
        if self._reader is not None:
            self._reader.close()

    def poll(self) -> None:
        if not self.configured():
            self._board.report(
                "document_reader", False, "no document reader configured: set reader.serial_url or reader.page_camera"
            )
            return
        if self._reader is None:
            return
        problems = []
        if self._settings.reader.serial_url and not self._reader.serial_connected:
            problems.append(f"reader port {self._settings.reader.serial_url} not open")
        if self._page_camera is not None and self._page_camera.state != "streaming":
            problems.append(f"page camera {self._page_camera.state}")
        self._board.report("document_reader", not problems, "; ".join(problems))

    def _on_result(self, result: ReaderResult) -> None:
        self.last = (result, datetime.now(timezone.utc))
        if isinstance(result, MrzResult):
            self._on_document(result)
            doc = document_read(result)
            if doc is None:
                log.warning("reader_mrz_unusable", errors=[e.field for e in result.errors])
                return
            self._post(doc)
        elif isinstance(result, BcbpResult):
            flights = self._session.controller.scope.flights if self._session.running else ()
            self._post(boarding_pass_read(result, flights=flights))
        else:
            log.warning("reader_error", error=str(getattr(result, "message", result)))
