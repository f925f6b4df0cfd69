"""The small facade the lane calls: one object for the serial reader and for page/boarding-pass images."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
import structlog

from egate.drivers.document.barcodes import decode_barcodes
from egate.drivers.document.bcbp import SignatureVerifier, parse_bcbp
from egate.drivers.document.config import ReaderConfig
from egate.drivers.document.models import ReaderError, ReaderResult
from egate.drivers.document.ocr import OcrSettings, read_mrz_image
from egate.drivers.document.serial_reader import SerialDocumentReader

log = structlog.get_logger(__name__)


class DocumentReader:
    """Reads documents from the configured serial reader (callback) and from images (`read_image`).

    `bcbp_key_pem` is the issuer public key bytes (from a credential); needed only when
    `config.verify_bcbp_signature` is on.
    """

    def __init__(
        self,
        config: ReaderConfig,
        on_result: Callable[[ReaderResult], None],
        *,
        bcbp_key_pem: bytes | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        if config.verify_bcbp_signature and not bcbp_key_pem:
            raise ValueError(
                "reader.verify_bcbp_signature is on but no issuer key was given: provide the credential "
                f"{config.bcbp_key_credential!r} or turn verification off"
            )
        self.config = config
        self._on_result = on_result
        self._today = today or date.today
        self._verifier = (
            SignatureVerifier(bcbp_key_pem, config.bcbp_signature_encoding)
            if config.verify_bcbp_signature and bcbp_key_pem
            else None
        )
        self._ocr = OcrSettings(
            char_height=config.ocr_char_height_px,
            retry_char_height=config.ocr_retry_char_height_px,
            tesseract_cmd=config.tesseract_cmd,
            use_passporteye_fallback=config.ocr_passporteye_fallback,
        )
        self._serial: SerialDocumentReader | None = None

    def start(self) -> None:
        if self.config.serial_url and self._serial is None:
            self._serial = SerialDocumentReader(
                self.config.serial_url,
                self._on_result,
                baudrate=self.config.baudrate,
                line_gap_s=self.config.line_gap_s,
                reconnect_s=self.config.reconnect_s,
                max_line=self.config.max_line_bytes,
                today=self._today,
                bcbp_verifier=self._verifier,
            )
            self._serial.start()

    @property
    def serial_connected(self) -> bool:
        """The serial reader's port is open (False when none is configured)."""
        return self._serial is not None and self._serial.connected.is_set()

    @property
    def serial_error(self) -> str | None:
        """Why the serial reader's port is not open (its last open or read failure); None while open or unset."""
        return self._serial.port_error if self._serial is not None else None

    def wait_serial_connected(self, timeout: float) -> bool:
        return self._serial is not None and self._serial.connected.wait(timeout)

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def __enter__(self) -> DocumentReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_image(self, image_bgr: np.ndarray) -> ReaderResult:
        """A boarding-pass barcode if the image has one, else the MRZ; never raises."""
        return read_image(image_bgr, today=self._today(), settings=self._ocr, verifier=self._verifier)


def read_image(
    image_bgr: np.ndarray,
    *,
    today: date | None = None,
    settings: OcrSettings | None = None,
    verifier: Callable[[str, str], bool] | None = None,
) -> ReaderResult:
    """Barcodes first (milliseconds), MRZ OCR second (tesseract, about half a second)."""
    try:
        for code in decode_barcodes(image_bgr):
            if code.text.startswith("M"):
                return parse_bcbp(code.text, verifier=verifier)
        result = read_mrz_image(image_bgr, today=today, settings=settings)
        return result
    except Exception as exc:  # pragma: no cover - the pieces already catch; belt and braces for the lane
        log.error("read_image_failed", error=repr(exc))
        return ReaderError(source="image", message=f"image could not be read: {exc}")
