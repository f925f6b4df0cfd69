"""Data the document reader hands to the lane: pydantic models with a version field.

Most of what they hold is personal data: egate.drivers.document.redact decides, from an allowlist, what of them
may be shown anywhere (logs, control API, MQTT, records). The models also keep the most sensitive fields out
of their `repr()` so an accidental `log.info(doc=...)` does not print them.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODELS_VERSION = 1

MrzFormat = Literal["TD1", "TD2", "TD3", "MRV-A", "MRV-B"]
DocumentKind = Literal["passport", "id_card", "visa", "other"]


class FieldError(BaseModel):
    """One problem, naming the field it belongs to (e.g. `expiry_date`, `line2`, `legs[1].seat`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(description="Field (or line) that was wrong.")
    message: str = Field(description="What was wrong and, where possible, what to do.")


class Repair(BaseModel):
    """An OCR confusion fixed because a check digit proved the repaired value (ICAO 9303 part 3 §4.9)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(description="Field that was repaired.")
    before: str = Field(description="Value as read.", repr=False)
    after: str = Field(description="Value after repair.", repr=False)


class CheckResults(BaseModel):
    """Check digit outcomes (ICAO 9303 part 3 §4.9); None where the format has no such check digit."""

    model_config = ConfigDict(extra="forbid")

    number: bool | None = Field(None, description="Document number check digit.")
    birth_date: bool | None = Field(None, description="Date of birth check digit.")
    expiry_date: bool | None = Field(None, description="Date of expiry check digit.")
    optional_data: bool | None = Field(None, description="Optional data / personal number check digit (TD3).")
    composite: bool | None = Field(None, description="Composite check digit (TD1, TD2, TD3).")


class Document(BaseModel):
    """A travel document read from its MRZ (ICAO Doc 9303 parts 4-7)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Model version.")
    kind: DocumentKind = Field(description="passport (P), id_card (I, A, C), visa (V) or other.")
    format: MrzFormat = Field(description="MRZ format.")
    document_code: str = Field(description="Document code, fillers removed (e.g. P, ID, V).")
    issuer: str = Field(description="Issuing state or organisation, ICAO 9303 part 3 code, fillers removed.")
    number: str = Field(description="Document number (never log it: use masked_number).", repr=False)
    surname: str = Field(description="Primary identifier, fillers as spaces.")
    given_names: str = Field(description="Secondary identifier, fillers as spaces.")
    nationality: str = Field(description="Nationality code, fillers removed.")
    birth_date: date | None = Field(description="Date of birth; None where the MRZ marks it unknown.")
    sex: Literal["M", "F", "X"] = Field(description="M, F or X (unspecified, `<` in the MRZ).")
    expiry_date: date | None = Field(description="Date of expiry.")
    expired: bool = Field(description="Expiry date lies before the reference day.")
    optional_data: str = Field("", description="Optional data (TD3: personal number), fillers removed.")
    optional_data_2: str = Field("", description="TD1 second optional data field, fillers removed.")
    checks: CheckResults = Field(default_factory=CheckResults, description="Check digit results.")

    @property
    def masked_number(self) -> str:
        from egate.drivers.document.redact import mask_document_number  # the one masking rule (imports this module)

        return mask_document_number(self.number)


class MrzResult(BaseModel):
    """Outcome of parsing MRZ text: always returned, never raised."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Model version.")
    kind: Literal["mrz"] = "mrz"
    format: MrzFormat | None = Field(None, description="Detected format; None when the text fits none.")
    lines: list[str] = Field(default_factory=list, description="MRZ lines after repair.", repr=False)
    document: Document | None = Field(None, description="Parsed document; None when the layout was unusable.")
    errors: list[FieldError] = Field(default_factory=list, description="Every problem, by field.")
    repairs: list[Repair] = Field(default_factory=list, description="OCR repairs proved by check digits.")

    @property
    def valid(self) -> bool:
        return self.document is not None and not self.errors

    def fields_json(self) -> dict[str, object]:
        """The `fields` object of `egate diag reader --json`."""
        if self.document is None:
            return {}
        return self.document.model_dump(mode="json", exclude={"version"})

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "mrz",
            "format": self.format,
            "lines": list(self.lines),
            "valid": self.valid,
            "fields": self.fields_json(),
            "errors": [e.model_dump() for e in self.errors],
        }


class Leg(BaseModel):
    """One flight leg of a boarding pass (IATA Res. 792 repeated mandatory and conditional items)."""

    model_config = ConfigDict(extra="forbid")

    pnr: str = Field(description="Operating carrier PNR code.")
    from_airport: str = Field(description="From city airport code (IATA 3-letter).")
    to_airport: str = Field(description="To city airport code (IATA 3-letter).")
    carrier: str = Field(description="Operating carrier designator.")
    flight: str = Field(description="Flight number as encoded (4 digits + optional suffix), spaces trimmed.")
    julian_date: int | None = Field(description="Date of flight, day of year 1-366; None if not numeric.")
    compartment: str = Field(description="Compartment code.")
    seat: str = Field(description="Seat number (e.g. 001A), spaces trimmed.")
    sequence: str = Field(description="Check-in sequence number, spaces trimmed.")
    status: str = Field(description="Passenger status.")
    airline_numeric_code: str | None = Field(None, description="Airline numeric code (conditional).")
    document_serial: str | None = Field(None, description="Document form/serial number (conditional).")
    selectee: str | None = Field(None, description="Selectee indicator (conditional).")
    international_doc_verification: str | None = Field(None, description="Int'l documentation verification.")
    marketing_carrier: str | None = Field(None, description="Marketing carrier designator (conditional).")
    frequent_flyer_airline: str | None = Field(None, description="Frequent flyer airline designator.")
    frequent_flyer_number: str | None = Field(None, description="Frequent flyer number.")
    id_ad_indicator: str | None = Field(None, description="ID/AD indicator.")
    free_baggage_allowance: str | None = Field(None, description="Free baggage allowance.")
    fast_track: str | None = Field(None, description="Fast track (version 5+).")
    airline_use: str | None = Field(None, description="For individual airline use (kept verbatim).")


class SecuritySection(BaseModel):
    """Security data after `^` (IATA Res. 792): kept verbatim; its signature check is optional."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Type of security data.")
    data: str = Field(description="Security data (typically a signature).", repr=False)
    signature_valid: bool | None = Field(None, description="None when no verification was configured.")


class BoardingPass(BaseModel):
    """An IATA BCBP (Res. 792, format M)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Model version.")
    bcbp_version: int | None = Field(None, description="Version number of the BCBP (conditional).")
    passenger_name: str = Field(description="Passenger name (SURNAME/GIVEN), spaces trimmed.")
    electronic_ticket: bool = Field(description="Electronic ticket indicator is E.")
    legs: list[Leg] = Field(description="1 to 4 legs.")
    passenger_description: str | None = Field(None, description="Passenger description.")
    checkin_source: str | None = Field(None, description="Source of check-in.")
    issuance_source: str | None = Field(None, description="Source of boarding pass issuance.")
    issue_date: str | None = Field(None, description="Date of issue of boarding pass (YDDD).")
    document_type: str | None = Field(None, description="Document type (B boarding pass, I itinerary).")
    issuer_airline: str | None = Field(None, description="Airline designator of boarding pass issuer.")
    baggage_tags: list[str] = Field(default_factory=list, description="Baggage tag licence plate numbers.")
    security: SecuritySection | None = Field(None, description="Security section, when present.")

    @property
    def pnr(self) -> str:
        return self.legs[0].pnr if self.legs else ""


class BcbpResult(BaseModel):
    """Outcome of parsing BCBP text: always returned, never raised."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Model version.")
    kind: Literal["bcbp"] = "bcbp"
    raw: str = Field(description="Text as received.", repr=False)
    boarding_pass: BoardingPass | None = Field(None, description="Parsed pass; None when unusable.")
    errors: list[FieldError] = Field(default_factory=list, description="Every problem, by field.")

    @property
    def valid(self) -> bool:
        return self.boarding_pass is not None and not self.errors

    def to_json(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        bp = self.boarding_pass
        if bp is not None:
            fields = {
                "name": bp.passenger_name,
                "pnr": bp.pnr,
                "electronic_ticket": bp.electronic_ticket,
                "legs": [
                    {
                        "from": leg.from_airport,
                        "to": leg.to_airport,
                        "carrier": leg.carrier,
                        "flight": leg.flight,
                        "date": leg.julian_date,
                        "compartment": leg.compartment,
                        "seat": leg.seat,
                        "sequence": leg.sequence,
                        "status": leg.status,
                    }
                    for leg in bp.legs
                ],
            }
        return {
            "kind": "bcbp",
            "raw": self.raw,
            "valid": self.valid,
            "fields": fields,
            "errors": [e.model_dump() for e in self.errors],
        }


class ReaderError(BaseModel):
    """A reader-level failure (port gone, nothing readable, garbage): the driver's result instead of a raise."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Model version.")
    kind: Literal["error"] = "error"
    source: str = Field(description="Where it happened (serial URL, image, decoder).")
    message: str = Field(description="What was wrong and what to do.")

    @property
    def valid(self) -> bool:
        return False

    def to_json(self) -> dict[str, object]:
        return {"kind": "error", "source": self.source, "valid": False, "errors": [self.message]}


ReaderResult = MrzResult | BcbpResult | ReaderError
