"""What of a document read may leave the process: the one redaction rule for every output path.

Logs (the structlog processor `redact_event`), the daemon's control API (`reader.last`), `egate diag reader`
on the daemon, MQTT and outcome records all show a reader result through `public_view`, which is built
from an allowlist: a field is shown only when it is named below. Anything added to the models later stays
hidden until someone decides it is not personal and adds it here.

Personal (never shown): document number (only its masked form), names, birth date, personal number and
other optional data, MRZ lines, the BCBP text, PNR, seat, check-in sequence, frequent flyer number,
baggage tags, document serial, security data, and the before/after values of OCR repairs. Error messages
are parser text that may quote what was read: quoted values, dates and every personal value of the same
result are masked in them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from egate.drivers.document.models import BcbpResult, BoardingPass, Document, MrzResult, ReaderError

MASK = "***"

# Allowlists: the only fields of each model that are copied into a public view.
DOCUMENT_FIELDS = ("kind", "format", "document_code", "issuer", "nationality", "expired")
CHECK_FIELDS = ("number", "birth_date", "expiry_date", "optional_data", "composite")
BOARDING_PASS_FIELDS = ("bcbp_version", "electronic_ticket", "document_type", "issuer_airline")
LEG_FIELDS = ("from_airport", "to_airport", "carrier", "flight", "julian_date", "compartment", "status")

# Log keys whose values are personal wherever they appear (the log processor masks them).
PERSONAL_LOG_KEYS = frozenset(
    {
        "document_number",
        "number",
        "surname",
        "given_names",
        "name",
        "passenger_name",
        "birth_date",
        "optional_data",
        "optional_data_2",
        "personal_number",
        "lines",
        "mrz",
        "raw",
        "text",
        "pnr",
        "seat",
        "sequence",
        "frequent_flyer_number",
        "baggage_tags",
        "before",
        "after",
    }
)
_NUMBER_KEYS = frozenset({"document_number", "number"})

_QUOTED = re.compile(r"""'[^']*'|"[^"]*\"""")
_DATES = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{6}\b")


def mask_document_number(number: str | None) -> str:
    """First 2 characters + `***` + last 1; short or empty numbers are fully hidden. Idempotent."""
    n = (number or "").strip()
    if not n:
        return "<none>"
    if len(n) < 4:
        return MASK
    return f"{n[:2]}{MASK}{n[-1]}"


def mask_text(text: str, personal: Iterable[str] = ()) -> str:
    """`text` with quoted literals, dates and each of the `personal` values replaced by `***`."""
    out = _QUOTED.sub(MASK, text)
    for value in sorted({p for p in personal if len(p) >= 3}, key=len, reverse=True):
        out = out.replace(value, MASK)
    return _DATES.sub(MASK, out)


def _dates(value: date | None) -> list[str]:
    return [] if value is None else [value.isoformat(), value.strftime("%y%m%d")]


def personal_values(result: object) -> list[str]:
    """Every personal value a reader result holds (to mask them in free text, and for tests to search)."""
    values: list[str] = []
    if isinstance(result, MrzResult):
        values += result.lines
        values += [v for r in result.repairs for v in (r.before, r.after)]
        if result.document is not None:
            values += _document_values(result.document)
    elif isinstance(result, BcbpResult):
        values.append(result.raw)
        if result.boarding_pass is not None:
            values += _boarding_pass_values(result.boarding_pass)
    return [v.strip() for v in values if v and v.strip()]


def _document_values(d: Document) -> list[str]:
    names = [d.surname, d.given_names, *d.surname.split(), *d.given_names.split()]
    return [d.number, *names, d.optional_data, d.optional_data_2, *_dates(d.birth_date)]


def _boarding_pass_values(bp: BoardingPass) -> list[str]:
    name = bp.passenger_name
    values = [name, *re.split(r"[/ ]", name), *bp.baggage_tags]
    for leg in bp.legs:
        values += [leg.pnr, leg.seat, leg.sequence, leg.frequent_flyer_number or "", leg.document_serial or ""]
    if bp.security is not None:
        values.append(bp.security.data)
    return values


def _pick(model: object, fields: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(model, name)
        out[name] = value.isoformat() if isinstance(value, date) else value
    return out


def public_view(result: object) -> dict[str, Any]:
    """The allowlisted, JSON-ready view of a reader result (MrzResult, BcbpResult or ReaderError)."""
    personal = personal_values(result)
    if isinstance(result, MrzResult):
        document = None
        if result.document is not None:
            d = result.document
            document = {
                **_pick(d, DOCUMENT_FIELDS),
                "number_masked": mask_document_number(d.number),
                "checks": _pick(d.checks, CHECK_FIELDS),
            }
        return {
            "kind": "mrz",
            "format": result.format,
            "valid": result.valid,
            "document": document,
            "errors": [{"field": e.field, "message": mask_text(e.message, personal)} for e in result.errors],
            "repairs": [{"field": r.field} for r in result.repairs],
        }
    if isinstance(result, BcbpResult):
        boarding_pass = None
        if result.boarding_pass is not None:
            bp = result.boarding_pass
            boarding_pass = {
                **_pick(bp, BOARDING_PASS_FIELDS),
                "legs": [_pick(leg, LEG_FIELDS) for leg in bp.legs],
                "signature_valid": bp.security.signature_valid if bp.security is not None else None,
            }
        return {
            "kind": "bcbp",
            "valid": result.valid,
            "boarding_pass": boarding_pass,
            "errors": [{"field": e.field, "message": mask_text(e.message, personal)} for e in result.errors],
        }
    if isinstance(result, ReaderError):
        return {"kind": "error", "valid": False, "source": result.source, "message": mask_text(result.message)}
    raise TypeError(f"not a reader result: {type(result).__name__}")


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, MrzResult | BcbpResult | ReaderError):
        return public_view(value)
    if isinstance(value, Document | BoardingPass):
        return MASK
    if key in PERSONAL_LOG_KEYS and value is not None and not isinstance(value, bool | int | float):
        if key in _NUMBER_KEYS and isinstance(value, str):
            return mask_document_number(value)
        return MASK
    return value


def redact_event(_logger: object, _name: str, event: Mapping[str, Any]) -> Any:
    """structlog processor: reader results become their public view, personal keys are masked."""
    return {key: _redact_value(key, value) for key, value in event.items()}
