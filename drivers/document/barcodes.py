"""Find and decode boarding-pass barcodes in an image.

Res. 792 allows PDF417, Aztec, QR and DataMatrix. zbar (pyzbar) reads QR but neither PDF417, Aztec nor
DataMatrix; zxing-cpp reads all four. We ask zbar for QR first (fast, robust on phone screens) and
zxing-cpp for the rest, and fall back to zxing-cpp for QR when zbar finds nothing. Text is taken from
the raw bytes (zxing-cpp's default text mode shows control characters as `<GS>`, which would corrupt a
BCBP's group separators).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

log = structlog.get_logger(__name__)

Symbology = Literal["pdf417", "aztec", "qr", "datamatrix", "other"]


class Barcode(BaseModel):
    """One decoded symbol."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Model version.")
    symbology: Symbology = Field(description="Barcode symbology.")
    text: str = Field(description="Payload decoded as Latin-1 (BCBP is ASCII).", repr=False)
    decoder: Literal["zbar", "zxing-cpp"] = Field(description="Library that decoded it.")


def _zxing_symbology(name: str) -> Symbology:
    n = name.lower().replace(" ", "")
    if "pdf417" in n:
        return "pdf417"
    if "aztec" in n:
        return "aztec"
    if "qr" in n:
        return "qr"
    if "datamatrix" in n:
        return "datamatrix"
    return "other"


def _bytes_text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _zbar_qr(gray: np.ndarray) -> list[Barcode]:
    try:
        from pyzbar import pyzbar
    except ImportError:  # libzbar0 missing: zxing-cpp still reads QR
        return []
    found = pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE])
    return [Barcode(symbology="qr", text=_bytes_text(s.data), decoder="zbar") for s in found]


def _zxing(gray: np.ndarray, with_qr: bool) -> list[Barcode]:
    import zxingcpp

    formats = [zxingcpp.BarcodeFormat.PDF417, zxingcpp.BarcodeFormat.Aztec, zxingcpp.BarcodeFormat.DataMatrix]
    if with_qr:
        formats.append(zxingcpp.BarcodeFormat.QRCode)
    out = []
    found = zxingcpp.read_barcodes(gray, formats=formats, text_mode=zxingcpp.TextMode.Plain)  # type: ignore[arg-type]
    for r in found:
        if not r.valid:
            continue
        out.append(Barcode(symbology=_zxing_symbology(str(r.format)), text=_bytes_text(bytes(r.bytes)),
                           decoder="zxing-cpp"))  # fmt: skip
    return out


def decode_barcodes(image_bgr: np.ndarray) -> list[Barcode]:
    """All boarding-pass symbols in the image; [] when none (never raises)."""
    try:
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim not in (2, 3) or image_bgr.size == 0:
            return []
        import cv2

        gray = image_bgr if image_bgr.ndim == 2 else cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        if gray.dtype != np.uint8:
            gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)  # type: ignore[call-overload]
        gray = np.ascontiguousarray(gray)
        qr = _zbar_qr(gray)
        results = qr + _zxing(gray, with_qr=not qr)
        seen: set[tuple[str, str]] = set()
        unique = []
        for b in results:
            if (b.symbology, b.text) not in seen:
                seen.add((b.symbology, b.text))
                unique.append(b)
        log.info("barcodes_decoded", count=len(unique), symbologies=[b.symbology for b in unique])
        return unique
    except Exception as exc:
        log.warning("barcode_decode_failed", error=repr(exc))
        return []
