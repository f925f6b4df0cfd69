"""IATA Res. 792 boarding passes: strings from three independent parsers, security section, signatures."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from egate.drivers.document import parse_bcbp
from egate.drivers.document.bcbp import SignatureVerifier
from tests.support.reader_fixtures import BCBP_ONE_LEG, bcbp_invalid_strings, bcbp_valid_strings

TWO_LEGS = (
    "M2DESMARAIS/LUC       EABC123 YULFRAAC 0834 226F001A0025 14D>6181WW6225BAC 00141234560032A0141234567890 1AC "
    "AC 1234567890123    20KYLX58ZDEF456 FRAGVALH 3664 227C012C0002 12E2A0140987654321 1AC AC 1234567890123    "
    "2PCNWQ^164GIWVC5EH7JNT684FVNJ91W2QA4DVN5J8K4F0L0GEQ3DF5TGBN8709HKT5D3DW3GBHFCVHMY7J5T6HFR41W2QA4DVN5J8K4F0L0GE"
)


def test_every_valid_example_parses() -> None:
    strings = bcbp_valid_strings()
    assert len(strings) >= 8
    for s in strings:
        r = parse_bcbp(s)
        assert r.boarding_pass is not None, (s, r.errors)
        assert len(r.boarding_pass.legs) == int(s[1]), s
        assert not [e for e in r.errors if e.field in ("raw", "format_code", "trailing")], (s, r.errors)


def test_every_invalid_example_is_rejected_with_a_field() -> None:
    strings = bcbp_invalid_strings()
    assert len(strings) >= 8
    for s in strings:
        r = parse_bcbp(s)
        assert not r.valid, s
        assert r.errors and all(e.field for e in r.errors)


def test_one_leg_mandatory_block() -> None:
    r = parse_bcbp(BCBP_ONE_LEG)
    assert r.valid
    bp = r.boarding_pass
    assert bp is not None
    assert (bp.passenger_name, bp.pnr, bp.electronic_ticket) == ("DESMARAIS/LUC", "ABC123", True)
    leg = bp.legs[0]
    assert (leg.from_airport, leg.to_airport, leg.carrier, leg.flight) == ("YUL", "FRA", "AC", "0834")
    assert (leg.julian_date, leg.compartment, leg.seat, leg.sequence, leg.status) == (326, "J", "001A", "0025", "1")
    assert bp.security is None


def test_two_legs_conditional_airline_and_security_fields() -> None:
    # Values from iata_bcbp_rs tests/iata_792_b.rs (IATA 792B example).
    r = parse_bcbp(TWO_LEGS)
    assert r.valid, r.errors
    bp = r.boarding_pass
    assert bp is not None
    assert (bp.bcbp_version, bp.passenger_description, bp.checkin_source, bp.issuance_source) == (6, "1", "W", "W")
    assert (bp.issue_date, bp.document_type, bp.issuer_airline) == ("6225", "B", "AC")
    assert bp.baggage_tags == ["0014123456003"]
    first, second = bp.legs
    assert (first.airline_numeric_code, first.document_serial, first.free_baggage_allowance) == (
        "014",
        "1234567890",
        "20K",
    )
    assert (first.fast_track, first.airline_use, first.frequent_flyer_number) == ("Y", "LX58Z", "1234567890123")
    assert (second.pnr, second.from_airport, second.to_airport, second.carrier) == ("DEF456", "FRA", "GVA", "LH")
    assert (second.flight, second.julian_date, second.seat, second.fast_track, second.airline_use) == (
        "3664", 227, "012C", "N", "WQ")  # fmt: skip
    assert bp.security is not None and bp.security.type == "1"
    assert bp.security.data.startswith("GIWVC5") and len(bp.security.data) == 0x64
    assert bp.security.signature_valid is None


def test_version_2_pass_without_fast_track() -> None:
    s = ("M1TEST/HIDDEN         E8OQ6FU FRARLGLH 4010 012C004D0001 35C>2180WW6012BLH              2922023642241060 LH"
         "                        *30600000K09         ")  # fmt: skip
    r = parse_bcbp(s)
    assert r.valid, r.errors
    leg = r.boarding_pass.legs[0]  # type: ignore[union-attr]
    assert (leg.airline_numeric_code, leg.document_serial, leg.fast_track) == ("220", "2364224106", None)
    assert leg.airline_use == "*30600000K09         "  # kept verbatim


def test_json_shape() -> None:
    out = parse_bcbp(TWO_LEGS).to_json()
    assert out["kind"] == "bcbp" and out["raw"] == TWO_LEGS
    f = out["fields"]
    assert isinstance(f, dict)
    assert (f["name"], f["pnr"]) == ("DESMARAIS/LUC", "ABC123")
    assert f["legs"][1] == {
        "from": "FRA", "to": "GVA", "carrier": "LH", "flight": "3664", "date": 227, "compartment": "C",
        "seat": "012C", "sequence": "0002", "status": "1",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "raw"),
        ("S1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100", "format_code"),
        ("M5DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100", "number_of_legs"),
        ("M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 1", "legs[0].variable_size"),
        ("M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 1ZZ", "legs[0].variable_size"),
        ("M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100junk", "security_marker"),
        ("M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 999J001A0025 100", "legs[0].date"),
        ("M1DESMARAIS/LUC       EABC123 Y1LFRAAC 0834 326J001A0025 100", "legs[0].from"),
        ("M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 102+6", "version_marker"),
    ],
)
def test_bad_input_names_the_field(text: str, field: str) -> None:
    r = parse_bcbp(text)
    assert not r.valid
    assert field in {e.field for e in r.errors}, r.errors


def test_signature_verification_is_optional_and_checks() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signed = BCBP_ONE_LEG
    sig = base64.b64encode(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256()))).decode()
    text = f"{signed}^1{len(sig):02X}{sig}"
    verifier = SignatureVerifier(pem)
    r = parse_bcbp(text, verifier=verifier)
    assert r.valid and r.boarding_pass is not None
    assert r.boarding_pass.security is not None and r.boarding_pass.security.signature_valid is True
    tampered = text.replace("YULFRA", "YULCDG")
    r = parse_bcbp(tampered, verifier=verifier)
    assert not r.valid and {e.field for e in r.errors} == {"security_data"}
    assert r.boarding_pass is not None and r.boarding_pass.security.signature_valid is False  # type: ignore[union-attr]
    # Without a verifier the section is kept, unverified.
    r = parse_bcbp(text)
    assert r.valid and r.boarding_pass.security.signature_valid is None  # type: ignore[union-attr]
