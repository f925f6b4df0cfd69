"""Parse IATA Resolution 792 bar coded boarding passes (format M, 1-4 legs).

Layout (Res. 792, "M" format): a unique mandatory block (format code, leg count, name, e-ticket flag)
and per leg a repeated mandatory block of 37 characters (the first leg's together make the 60-character
mandatory block), each leg followed by a 2-hex-digit size of its variable part: conditional items
(version, unique conditional block on the first leg, repeated conditional block) and airline
individual use. After the last leg an optional security section: `^`, type, 2-hex-digit length, data.
`parse_bcbp()` never raises; every problem is a `FieldError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from egate.drivers.document.models import BcbpResult, BoardingPass, FieldError, Leg, SecuritySection

log = structlog.get_logger(__name__)

MANDATORY_LENGTH = 60
_UNIQUE_MANDATORY = 23
_REPEATED_MANDATORY = 35  # plus the 2-digit variable size: 37 per leg, 23 + 37 = 60 for the first
_GROUP_SEPARATOR = "\x1d"

# (name, width) of the unique conditional items in order (Res. 792 field numbers 15-...).
_UNIQUE_CONDITIONAL = (
    ("passenger_description", 1),
    ("checkin_source", 1),
    ("issuance_source", 1),
    ("issue_date", 4),
    ("document_type", 1),
    ("issuer_airline", 3),
    ("baggage_tag_1", 13),
    ("baggage_tag_2", 13),
    ("baggage_tag_3", 13),
)
# Repeated conditional items per leg; fast track exists from version 5 on and is simply absent when the
# size field ends before it.
_REPEATED_CONDITIONAL = (
    ("airline_numeric_code", 3),
    ("document_serial", 10),
    ("selectee", 1),
    ("international_doc_verification", 1),
    ("marketing_carrier", 3),
    ("frequent_flyer_airline", 3),
    ("frequent_flyer_number", 16),
    ("id_ad_indicator", 1),
    ("free_baggage_allowance", 3),
    ("fast_track", 1),
)


_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")


class _Fail(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Cursor:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def take(self, n: int, field: str) -> str:
        if n < 0:  # a size read from the text must never move the cursor backwards
            raise _Fail(field, f"negative size {n}")
        if self.pos + n > len(self.text):
            raise _Fail(field, f"text ends at character {len(self.text)}: {field} needs {n} characters at "
                        f"{self.pos}; the barcode is truncated, scan it again")  # fmt: skip
        s = self.text[self.pos : self.pos + n]
        self.pos += n
        return s

    def hex_size(self, field: str) -> int:
        raw = self.take(2, field)
        # Exactly two hex digits: int(..., 16) alone would also take "+0", "-0", " 0" and "0_".
        if not _HEX2.fullmatch(raw):
            raise _Fail(field, f"{raw!r} is not a 2-digit hexadecimal size (Res. 792)")
        return int(raw, 16)

    def remaining(self) -> int:
        return len(self.text) - self.pos


def _fields(block: str, spec: tuple[tuple[str, int], ...]) -> dict[str, str]:
    # Conditional blocks may end early: items past the declared size are absent (Res. 792).
    out: dict[str, str] = {}
    pos = 0
    for name, width in spec:
        if pos >= len(block):
            break
        out[name] = block[pos : pos + width]
        pos += width
    return out


def _opt(value: str | None) -> str | None:
    return None if value is None else value.strip()


@dataclass(frozen=True)
class SignatureVerifier:
    """Optional check of the security section: a public key (PEM bytes from a credential) and encoding.

    Res. 792 leaves the signature scheme to the issuing airline; this checks the common one: a signature
    over everything before `^`, with ECDSA-SHA256 or RSA-PKCS1v15-SHA256, the data base64 or hex encoded.
    """

    public_key_pem: bytes
    encoding: str = "base64"

    def __call__(self, signed: str, signature_text: str) -> bool:
        try:
            sig = (
                base64.b64decode(signature_text, validate=False)
                if self.encoding == "base64"
                else binascii.unhexlify(signature_text)
            )
            key = serialization.load_pem_public_key(self.public_key_pem)
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, signed.encode("ascii"), ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
            else:
                return False
            return True
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            return False


def parse_bcbp(text: str, *, verifier: Callable[[str, str], bool] | None = None) -> BcbpResult:
    """Parse BCBP text. Never raises; `verifier(signed_text, security_data)` is optional."""
    raw = text if isinstance(text, str) else repr(text)
    try:
        return _parse(raw, verifier)
    except _Fail as f:
        return BcbpResult(raw=raw, errors=[FieldError(field=f.field, message=f.message)])
    except Exception as exc:  # pragma: no cover - a parser bug must still not escape into the lane
        return BcbpResult(raw=raw, errors=[FieldError(field="bcbp", message=f"internal parser error: {exc!r}")])


def _parse(text: str, verifier: Callable[[str, str], bool] | None) -> BcbpResult:
    errors: list[FieldError] = []
    text = text.rstrip("\r\n")
    bad = sorted({c for c in text if not (" " <= c <= "~") and c != _GROUP_SEPARATOR})
    if bad:
        raise _Fail("raw", f"characters {''.join(bad)!r} are not printable ASCII; BCBP is ASCII (Res. 792)")
    if not text:
        raise _Fail("raw", "empty text: nothing was scanned")
    cur = _Cursor(text.replace(_GROUP_SEPARATOR, ""))
    fmt = cur.take(1, "format_code")
    if fmt != "M":
        raise _Fail("format_code", f"{fmt!r}: only format M (Res. 792) is supported")
    n_legs_raw = cur.take(1, "number_of_legs")
    if n_legs_raw not in "1234":
        raise _Fail("number_of_legs", f"{n_legs_raw!r}: must be a digit 1-4")
    n_legs = int(n_legs_raw)
    name = cur.take(20, "passenger_name")
    eticket = cur.take(1, "electronic_ticket")
    if not name.strip():
        errors.append(FieldError(field="passenger_name", message="passenger name is empty"))

    legs: list[Leg] = []
    unique: dict[str, str] = {}
    bcbp_version: int | None = None
    for index in range(n_legs):
        prefix = f"legs[{index}]"
        mand = cur.take(_REPEATED_MANDATORY, f"{prefix}.mandatory")
        var_size = cur.hex_size(f"{prefix}.variable_size")
        var = cur.take(var_size, f"{prefix}.variable")
        repeated: dict[str, str] = {}
        airline_use = ""
        if var:
            vcur = _Cursor(var)
            if index == 0:
                marker = vcur.take(1, "version_marker")
                if marker != ">":
                    raise _Fail("version_marker", f"{marker!r}: conditional data must start with '>' (Res. 792)")
                version_raw = vcur.take(1, "bcbp_version")
                bcbp_version = int(version_raw) if version_raw.isdigit() else None
                unique_size = vcur.hex_size("unique_conditional_size")
                unique = _fields(vcur.take(unique_size, "unique_conditional"), _UNIQUE_CONDITIONAL)
            if vcur.remaining() >= 2:
                rep_size = vcur.hex_size(f"{prefix}.repeated_conditional_size")
                repeated = _fields(vcur.take(rep_size, f"{prefix}.repeated_conditional"), _REPEATED_CONDITIONAL)
            airline_use = var[vcur.pos :]
        legs.append(_leg(mand, repeated, airline_use, prefix, errors))

    security: SecuritySection | None = None
    if cur.remaining():
        signed = cur.text[: cur.pos]
        start = cur.take(1, "security_marker")
        if start != "^":
            raise _Fail("security_marker", f"{start!r} at {cur.pos - 1}: expected '^' or the end of the data")
        sec_type = cur.take(1, "security_type")
        sec_len = cur.hex_size("security_length")
        sec_data = cur.take(sec_len, "security_data")
        security = SecuritySection(type=sec_type, data=sec_data)
        if verifier is not None:
            ok = verifier(signed, sec_data)
            security = SecuritySection(type=sec_type, data=sec_data, signature_valid=ok)
            if not ok:
                errors.append(FieldError(field="security_data", message="signature does not verify"))
        if cur.remaining():
            raise _Fail("trailing", f"{cur.remaining()} characters after the security data; scan again")

    tags = [unique[k].strip() for k in ("baggage_tag_1", "baggage_tag_2", "baggage_tag_3") if unique.get(k, "").strip()]
    boarding_pass = BoardingPass(
        bcbp_version=bcbp_version,
        passenger_name=name.strip(),
        electronic_ticket=eticket == "E",
        legs=legs,
        passenger_description=_opt(unique.get("passenger_description")),
        checkin_source=_opt(unique.get("checkin_source")),
        issuance_source=_opt(unique.get("issuance_source")),
        issue_date=_opt(unique.get("issue_date")),
        document_type=_opt(unique.get("document_type")),
        issuer_airline=_opt(unique.get("issuer_airline")),
        baggage_tags=tags,
        security=security,
    )
    log.info("bcbp_parsed", legs=len(legs), valid=not errors, errors=[e.field for e in errors])
    return BcbpResult(raw=text, boarding_pass=boarding_pass, errors=errors)


def _leg(mand: str, cond: dict[str, str], airline_use: str, prefix: str, errors: list[FieldError]) -> Leg:
    pnr, origin, dest = mand[0:7], mand[7:10], mand[10:13]
    carrier, flight, jdate = mand[13:16], mand[16:21], mand[21:24]
    compartment, seat, seq, status = mand[24:25], mand[25:29], mand[29:34], mand[34:35]
    for field, value in (("from", origin), ("to", dest)):
        if value.strip() and not value.isalpha():
            errors.append(FieldError(field=f"{prefix}.{field}", message=f"{value!r} is not an IATA airport code"))
    julian: int | None = None
    if jdate.strip():
        if jdate.isdigit() and 1 <= int(jdate) <= 366:
            julian = int(jdate)
        else:
            errors.append(FieldError(field=f"{prefix}.date", message=f"{jdate!r} is not a day of the year 001-366"))
    flight_digits = flight[:4].strip()
    if flight_digits and not flight_digits.isdigit():
        errors.append(FieldError(field=f"{prefix}.flight", message=f"{flight!r}: flight number must start with digits"))
    return Leg(
        pnr=pnr.strip(),
        from_airport=origin.strip(),
        to_airport=dest.strip(),
        carrier=carrier.strip(),
        flight=flight.strip(),
        julian_date=julian,
        compartment=compartment.strip(),
        seat=seat.strip(),
        sequence=seq.strip(),
        status=status.strip(),
        airline_numeric_code=_opt(cond.get("airline_numeric_code")),
        document_serial=_opt(cond.get("document_serial")),
        selectee=_opt(cond.get("selectee")),
        international_doc_verification=_opt(cond.get("international_doc_verification")),
        marketing_carrier=_opt(cond.get("marketing_carrier")),
        frequent_flyer_airline=_opt(cond.get("frequent_flyer_airline")),
        frequent_flyer_number=_opt(cond.get("frequent_flyer_number")),
        id_ad_indicator=_opt(cond.get("id_ad_indicator")),
        free_baggage_allowance=_opt(cond.get("free_baggage_allowance")),
        fast_track=_opt(cond.get("fast_track")),
        airline_use=airline_use or None,
    )
