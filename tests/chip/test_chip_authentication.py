"""Chip Authentication (ICAO 9303-11 §6.2, ECDH with AES secure messaging): the genuine chip proves its
DG14 key, a copy of every file without that key is caught, and DG14 with explicit curve parameters
(as many passports write it) parses. The card computes its side with `cryptography`'s ECDH, the
reader with its own curve code, so the two are not one mirror."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from egate.drivers.chip import pa
from egate.drivers.chip.ca import ID_CA_ECDH, ChipAuthenticationError, parse_dg14
from egate.drivers.chip.ec import BRAINPOOL_P256R1, NIST_P256
from egate.drivers.chip.models import ChipFailure
from egate.drivers.chip.reader import read_document
from egate.drivers.chip.tlv import TlvError
from egate.tools.sim.chip.card import DirectTransport, PassportCard
from egate.tools.sim.chip.passport import ID_CA_ECDH_AES_128, build_passport, dg14, dg15, make_pki, synthetic_face
from egate.tools.sim.chip.vpcd import VpcdCard
from tests.chip.chip_fixtures import PORTS, READER

NOW = datetime.now(timezone.utc)
PKI = make_pki(NOW)
FACE, SIZE = synthetic_face(4_000)
TRUST = pa.TrustList((PKI.csca,))


def _chip_with_ca(curve: ec.EllipticCurve, *, with_aa: bool = False):  # type: ignore[no-untyped-def]
    ca_key = ec.generate_private_key(curve)
    groups = {14: dg14(ca_key.public_key())}
    aa_key = ec.generate_private_key(ec.SECP256R1())
    if with_aa:
        groups[15] = dg15(aa_key.public_key())
    chip = build_passport(PKI, FACE, SIZE, pace_parameter_id=13, extra_groups=groups)
    return chip, ca_key, aa_key


@pytest.mark.parametrize("curve", [ec.BrainpoolP256R1(), ec.SECP256R1()], ids=["brainpoolP256r1", "secp256r1"])
def test_genuine_chip_passes_chip_authentication(curve: ec.EllipticCurve) -> None:
    chip, ca_key, _ = _chip_with_ca(curve)
    card = PassportCard(dict(chip.files), chip.key.mrz_information(), ca_private_key=ca_key, ca_oid=ID_CA_ECDH_AES_128)
    result = read_document(DirectTransport(card), chip.key, TRUST, NOW, atr=card.atr())
    assert result.authentic, result.detail
    assert result.chip_authentication == "done" and 14 in result.data_groups
    assert "ca" in [t.step for t in result.timings]


def test_a_copied_chip_without_the_ca_key_is_caught() -> None:
    chip, _, _ = _chip_with_ca(ec.BrainpoolP256R1())
    clone = PassportCard(
        dict(chip.files),
        chip.key.mrz_information(),
        ca_private_key=ec.generate_private_key(ec.BrainpoolP256R1()),
        ca_oid=ID_CA_ECDH_AES_128,
    )
    result = read_document(DirectTransport(clone), chip.key, TRUST, NOW, atr=clone.atr())
    assert result.failure is ChipFailure.CA_FAILED and result.reason == "chip_ca_failed"
    assert result.chip_authentication == "failed" and not result.authentic


def test_ca_is_preferred_to_active_authentication_when_both_are_offered() -> None:
    chip, ca_key, aa_key = _chip_with_ca(ec.SECP256R1(), with_aa=True)
    card = PassportCard(
        dict(chip.files),
        chip.key.mrz_information(),
        ca_private_key=ca_key,
        ca_oid=ID_CA_ECDH_AES_128,
        aa_private_key=aa_key,
    )
    result = read_document(DirectTransport(card), chip.key, TRUST, NOW, atr=card.atr())
    assert result.authentic, result.detail
    assert (result.chip_authentication, result.active_authentication) == ("done", "not_done")


def test_dg14_with_explicit_domain_parameters_parses_to_the_same_curve() -> None:
    from asn1crypto import keys as akeys

    from egate.drivers.chip.tlv import encode

    key = ec.generate_private_key(ec.BrainpoolP256R1()).public_key()
    c = BRAINPOOL_P256R1
    size = c.size
    spec = akeys.SpecifiedECDomain(
        {
            "version": "ecdpVer1",
            "field_id": {"field_type": "prime_field", "parameters": c.p},
            "curve": {"a": c.a.to_bytes(size, "big"), "b": c.b.to_bytes(size, "big")},
            "base": b"\x04" + c.gx.to_bytes(size, "big") + c.gy.to_bytes(size, "big"),
            "order": c.n,
            "cofactor": 1,
        }
    )
    spki = akeys.PublicKeyInfo(
        {
            "algorithm": {"algorithm": "ec", "parameters": akeys.ECDomainParameters(name="specified", value=spec)},
            "public_key": key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
        }
    ).dump()
    raw = encode(0x6E, encode(0x31, encode(0x30, encode(0x06, bytes.fromhex("04007F000702020102")) + spki)
                               + encode(0x30, encode(0x06, ID_CA_ECDH + b"\x02") + encode(0x02, b"\x01"))))  # fmt: skip
    parsed = parse_dg14(raw)
    chosen = parsed.choose()
    assert chosen is not None
    info, ca_key = chosen
    assert info.cipher == "aes128"
    assert (ca_key.curve.p, ca_key.curve.n, ca_key.curve.generator) == (c.p, c.n, c.generator)
    assert ca_key.point == (key.public_numbers().x, key.public_numbers().y)
    named = parse_dg14(dg14(ec.generate_private_key(ec.SECP256R1()).public_key())).choose()
    assert named is not None and named[1].curve is NIST_P256


@pytest.mark.slow
@pytest.mark.usefixtures("pcscd")
def test_chip_authentication_through_pcscd() -> None:
    from egate.drivers.chip.pcsc import PcscTransport, wait_for_card

    chip, ca_key, _ = _chip_with_ca(ec.BrainpoolP256R1())
    card = PassportCard(dict(chip.files), chip.key.mrz_information(), ca_private_key=ca_key, ca_oid=ID_CA_ECDH_AES_128)
    with VpcdCard(card, port=PORTS[READER]):
        transport = PcscTransport.open(READER, timeout_s=10.0)
        try:
            result = read_document(transport, chip.key, TRUST, NOW, atr=transport.atr)
        finally:
            transport.close()
    assert wait_for_card(READER, present=False, timeout_s=10.0)
    assert result.authentic and result.chip_authentication == "done", result.detail


_VALID_DG14 = dg14(ec.generate_private_key(ec.BrainpoolP256R1()).public_key())


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.binary(max_size=300), st.tuples(st.integers(0, 120), st.binary(min_size=1, max_size=16))))
def test_dg14_parser_raises_only_its_own_errors(data: bytes | tuple[int, bytes]) -> None:
    """Random bytes and a valid DG14 with bytes overwritten: a parse, a TlvError or a CA error, nothing else."""
    if isinstance(data, tuple):
        at, noise = data
        data = _VALID_DG14[:at] + noise + _VALID_DG14[at + len(noise) :]
    with contextlib.suppress(TlvError, ChipAuthenticationError):
        parse_dg14(data)
