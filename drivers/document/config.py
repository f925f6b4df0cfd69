"""`[reader]` config section: where documents and boarding passes come from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from egate.drivers.camera import CameraConfig
from egate.drivers.credentials import CREDENTIAL_NAME_PATTERN


class ReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serial_url: str | None = Field(
        None, description="pyserial URL of a serial MRZ/BCBP reader (e.g. /dev/ttyUSB1); none to disable."
    )
    page_camera: CameraConfig | None = Field(
        None,
        description="Camera looking at the reader's document window (a full-page reader's image output, or a "
        "camera over the platen): the MRZ is read from it by OCR and the portrait on the page is compared "
        "in entry mode when the gallery has no subject for the document. None: serial reader only.",
    )
    page_change_threshold: float = Field(
        6.0,
        ge=0.5,
        le=128.0,
        description="Mean absolute grey-level change between page images that counts as a new page (a "
        "document placed or removed); an unchanged page is not read twice.",
    )
    page_interval_s: float = Field(
        0.3, ge=0.05, le=10.0, description="Shortest time between two reads of the page image."
    )
    baudrate: int = Field(9600, ge=1200, le=921600, description="Serial speed of the reader.")
    line_gap_s: float = Field(
        0.5, ge=0.05, le=10.0, description="Longest pause inside one read (between MRZ lines) before giving up."
    )
    reconnect_s: float = Field(2.0, ge=0.1, le=60.0, description="Wait before reopening a failed serial port.")
    max_line_bytes: int = Field(
        1024,
        ge=128,
        le=65536,
        description="Longest serial line kept (a boarding pass with a signature is ~400); longer runs are dropped "
        "as garbage up to the next line end.",
    )
    ocr_char_height_px: int = Field(
        40, ge=16, le=128, description="MRZ character height tesseract sees on the first OCR attempt."
    )
    ocr_retry_char_height_px: int = Field(
        56, ge=16, le=128, description="Character height of the second attempt (only when checks fail)."
    )
    ocr_passporteye_fallback: bool = Field(
        False, description="Try PassportEye's MRZ locator when ours finds none (slow: ~3 s per image)."
    )
    tesseract_cmd: str = Field("tesseract", min_length=1, description="tesseract executable.")
    verify_bcbp_signature: bool = Field(
        False, description="Verify the BCBP security section; needs the issuer key credential."
    )
    bcbp_key_credential: str = Field(
        "bcbp_issuer_key.pem",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Credential file (in $CREDENTIALS_DIRECTORY) with the issuer's public key (PEM).",
    )
    bcbp_signature_encoding: Literal["base64", "hex"] = Field(
        "base64", description="How the signature is written in the BCBP security data."
    )

    @model_validator(mode="after")
    def _retry_differs(self) -> ReaderConfig:
        if self.ocr_retry_char_height_px == self.ocr_char_height_px:
            raise ValueError(
                "reader.ocr_retry_char_height_px equals ocr_char_height_px: the retry would repeat the first "
                "attempt; choose a different height (e.g. 56)"
            )
        return self
