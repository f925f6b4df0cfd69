"""Travel-document reader: ICAO 9303 MRZ (OCR or serial) and IATA BCBP boarding passes."""

from egate.drivers.document.barcodes import Barcode, decode_barcodes
from egate.drivers.document.bcbp import SignatureVerifier, parse_bcbp
from egate.drivers.document.config import ReaderConfig
from egate.drivers.document.models import (
    BcbpResult,
    BoardingPass,
    Document,
    FieldError,
    Leg,
    MrzResult,
    ReaderError,
    ReaderResult,
)
from egate.drivers.document.mrz import check_digit, parse_mrz
from egate.drivers.document.ocr import read_mrz_image
from egate.drivers.document.reader import DocumentReader, read_image
from egate.drivers.document.redact import mask_document_number, public_view
from egate.drivers.document.serial_reader import SerialDocumentReader

__all__ = [
    "Barcode",
    "BcbpResult",
    "BoardingPass",
    "Document",
    "DocumentReader",
    "FieldError",
    "Leg",
    "MrzResult",
    "ReaderConfig",
    "ReaderError",
    "ReaderResult",
    "SerialDocumentReader",
    "SignatureVerifier",
    "check_digit",
    "decode_barcodes",
    "mask_document_number",
    "parse_bcbp",
    "parse_mrz",
    "public_view",
    "read_image",
    "read_mrz_image",
]
