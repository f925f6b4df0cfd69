"""Payload of a `csca` bundle: the CSCA certificates (and CRLs) Passive Authentication trusts.

JSON with base64 DER, small enough (a few hundred certificates from a master list) that clarity
wins over a binary layout; every certificate and CRL must parse as X.509 before the bundle is
accepted, so a gate never activates a trust list it cannot use.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field

from egate.drivers.chip.pa import TrustList

MAX_CERTIFICATES = 5000
MAX_CRLS = 5000


class CscaPayloadError(ValueError):
    pass


class CscaPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload_version: Literal[1] = Field(1, description="Layout version of the csca payload.")
    certificates: list[str] = Field(
        ..., min_length=1, max_length=MAX_CERTIFICATES, description="CSCA certificates, base64 DER."
    )
    crls: list[str] = Field(default_factory=list, max_length=MAX_CRLS, description="CRLs of those CSCAs, base64 DER.")


def _der(items: list[str], what: str) -> list[bytes]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise CscaPayloadError(f"{what}[{i}] is not base64") from None
    return out


def decode_csca_payload(raw: bytes) -> TrustList:
    """The trust list in a csca payload; raises CscaPayloadError naming the first bad entry."""
    payload = CscaPayload.model_validate_json(raw)
    certificates = []
    for i, der in enumerate(_der(payload.certificates, "certificates")):
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise CscaPayloadError(f"certificates[{i}] is not an X.509 certificate") from None
        certificates.append(cert)
    crls = []
    for i, der in enumerate(_der(payload.crls, "crls")):
        try:
            crls.append(x509.load_der_x509_crl(der))
        except ValueError:
            raise CscaPayloadError(f"crls[{i}] is not an X.509 CRL") from None
    return TrustList(tuple(certificates), tuple(crls))


def encode_csca_payload(certificates: list[bytes], crls: list[bytes]) -> bytes:
    payload = CscaPayload(
        certificates=[base64.b64encode(c).decode("ascii") for c in certificates],
        crls=[base64.b64encode(c).decode("ascii") for c in crls],
    )
    return payload.model_dump_json().encode("utf-8")
