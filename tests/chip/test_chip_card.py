"""The virtual chip (tools/sim/chip) replays the ICAO Doc 9303 part 11 worked examples from the chip's
side, and the reader survives malformed data from a chip (fuzzed)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egate.drivers.chip import lds, pa, pace, tlv
from egate.drivers.chip.access import AccessKey
from egate.drivers.chip.models import ChipFailure
from egate.drivers.chip.reader import read_document
from egate.tools.sim.chip.card import CardSecrets, DirectTransport, PassportCard
from egate.tools.sim.chip.passport import build_passport, card_access, make_pki, synthetic_face
from tests.chip.test_chip_vectors import (
    NONCE_S,
    NONCE_Z,
    PK_DH_IC,
    PK_DH_IFD,
    PK_MAP_IC,
    PK_MAP_IFD,
    SK_DH_IC,
    SK_MAP_IC,
    T_IC,
    T_IFD,
)

H = bytes.fromhex


def _replay(card: PassportCard, transcript: list[tuple[str, str]]) -> None:
    for command, answer in transcript:
        assert card.process(H(command)).hex().upper() == answer


def test_card_replays_the_bac_and_secure_messaging_example_of_appendix_d() -> None:
    ef_com = H("60145F0104303130365F36063034303030305C026175")
    card = PassportCard(
        {0x011E: ef_com},
        "L898902C<369080619406236",
        secrets_=CardSecrets(rnd_ic=H("4608F91988702212"), k_ic=H("0B4F80323EB3191CB04970CB4052790B")),
    )
    _replay(
        card,
        [
            ("00A4040C07A0000002471001", "9000"),
            ("0084000008", "4608F919887022129000"),
            (
                "008200002872C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F25F1448EEA8AD90A728",
                "46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F2F2D235D074D74499000",
            ),
            ("0CA4020C158709016375432908C044F68E08BF8B92D635FF24F800", "990290008E08FA855A5D4C50A8ED9000"),
            ("0CB000000D9701048E08ED6705417E96BA5500", "8709019FF0EC34F9922651990290008E08AD55CC17140B2DED9000"),
            (
                "0CB000040D9701128E082EA28A70F3C7B53500",
                "871901FB9235F4E4037F2327DCC8964F1F9B8C30F42C8E2FFF224A990290008E08C8B2787EAEA07D749000",
            ),
        ],
    )


def test_card_replays_the_pace_ecdh_gm_example_of_appendix_g1() -> None:
    card = PassportCard(
        {0x011C: card_access(13)},
        AccessKey("T22000129", "640812", "101031").mrz_information(),
        secrets_=CardSecrets(nonce=H(NONCE_S), sk_map=SK_MAP_IC, sk_dh=SK_DH_IC),
    )
    _replay(
        card,
        [
            ("0022C1A412800A04007F0007020204020283010184010D", "9000"),
            ("10860000027C0000", "7C128010" + NONCE_Z + "9000"),
            ("10860000457C438141" + PK_MAP_IFD + "00", "7C438241" + PK_MAP_IC + "9000"),
            ("10860000457C438341" + PK_DH_IFD + "00", "7C438441" + PK_DH_IC + "9000"),
            ("008600000C7C0A8508" + T_IFD + "00", "7C0A8608" + T_IC + "9000"),
        ],
    )


def test_card_refuses_a_wrong_terminal_token() -> None:
    card = PassportCard(
        {0x011C: card_access(13)},
        AccessKey("T22000129", "640812", "101031").mrz_information(),
        secrets_=CardSecrets(nonce=H(NONCE_S), sk_map=SK_MAP_IC, sk_dh=SK_DH_IC),
    )
    card.process(H("0022C1A412800A04007F0007020204020283010184010D"))
    card.process(H("10860000027C0000"))
    card.process(H("10860000457C438141" + PK_MAP_IFD + "00"))
    card.process(H("10860000457C438341" + PK_DH_IFD + "00"))
    assert card.process(H("008600000C7C0A85080000000000000000" + "00")).hex().upper() == "6300"
    assert card.failed_authentications == 1


# ---- malformed data from the chip --------------------------------------------------------------------

PARSERS = [lds.parse_ef_com, lds.parse_dg1, lds.parse_dg2, pa.parse_sod, pace.parse_card_access, tlv.parse_all]
EXPECTED = (lds.LdsError, tlv.TlvError, pa.PaError)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__name__)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_parsers_raise_only_their_own_errors_on_random_bytes(parser, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(EXPECTED):
        parser(data)


_NOW = datetime.now(timezone.utc)
_PKI = make_pki(_NOW)
_FACE, _SIZE = synthetic_face(3_000)
_GENUINE = build_passport(_PKI, _FACE, _SIZE, pace_parameter_id=None)


@settings(max_examples=30, deadline=None)
@given(
    fid=st.sampled_from([0x0101, 0x0102, 0x011D, 0x011E]),
    cut=st.integers(min_value=0, max_value=400),
    noise=st.binary(min_size=1, max_size=64),
)
def test_reader_turns_corrupted_chip_files_into_a_reason_code(fid: int, cut: int, noise: bytes) -> None:
    original = _GENUINE.files[fid]
    cut = min(cut, len(original))
    corrupted = original[:cut] + noise + original[cut + len(noise) :]
    chip = _GENUINE.with_file(fid, corrupted)
    card = PassportCard(dict(chip.files), chip.key.mrz_information(), extended_length=True)
    result = read_document(DirectTransport(card), chip.key, pa.TrustList((_PKI.csca,)), _NOW, atr=card.atr())
    if corrupted[: len(original)] == original:
        assert result.authentic  # only bytes past the file's own TLV length changed: never read
    elif fid in (0x0101, 0x0102):
        # Data groups are hashed in EF.SOD: any change within them must fail.
        assert not result.authentic
        assert result.failure in (ChipFailure.MALFORMED, ChipFailure.PA_FAILED, ChipFailure.UNREADABLE)
    else:
        # EF.COM and the unsigned parts of EF.SOD's CMS (digestAlgorithms, certificate set order, ...)
        # may change without effect; anything else must end in a reason code, never an exception.
        assert result.authentic or result.failure in (
            ChipFailure.MALFORMED,
            ChipFailure.PA_FAILED,
            ChipFailure.UNREADABLE,
        )


@pytest.mark.parametrize("jpeg2000", [False, True], ids=["jpeg", "jpeg2000"])
def test_dg2_with_a_real_portrait_decodes_in_memory(jpeg2000: bool) -> None:
    import cv2
    import numpy as np

    from egate.tools.sim.chip.passport import dg2
    from tests.shared_data import shared_data

    photo = cv2.imread(str(shared_data("faces/lfw_krasserm/Colin_Powell/Colin_Powell_0001.jpg")), cv2.IMREAD_COLOR)
    ok, encoded = cv2.imencode(".jp2" if jpeg2000 else ".jpg", photo)
    assert ok
    face = lds.parse_dg2(dg2(encoded.tobytes(), photo.shape[1], photo.shape[0], jpeg2000=jpeg2000))
    assert face.image_type == ("jpeg2000" if jpeg2000 else "jpeg")
    assert face.pixels.shape == photo.shape
    # Same picture: JPEG 2000 here is lossless, JPEG re-encoding only slightly lossy.
    assert float(np.mean(np.abs(face.pixels.astype(int) - photo.astype(int)))) < (0.5 if jpeg2000 else 4.0)


def test_active_authentication_is_done_and_a_cloned_chip_is_caught() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from egate.tools.sim.chip.passport import dg15

    aa_key = ec.generate_private_key(ec.SECP256R1())
    chip = build_passport(_PKI, _FACE, _SIZE, pace_parameter_id=None, extra_groups={15: dg15(aa_key.public_key())})
    trust = pa.TrustList((_PKI.csca,))
    genuine = PassportCard(dict(chip.files), chip.key.mrz_information(), aa_private_key=aa_key)
    result = read_document(DirectTransport(genuine), chip.key, trust, _NOW, atr=genuine.atr())
    assert result.authentic and result.active_authentication == "done", result.detail
    assert 15 in result.data_groups and [t.step for t in result.timings][-1] == "aa"
    # A copy of every file (so PA passes) without the chip's private key.
    clone = PassportCard(
        dict(chip.files), chip.key.mrz_information(), aa_private_key=ec.generate_private_key(ec.SECP256R1())
    )
    result = read_document(DirectTransport(clone), chip.key, trust, _NOW, atr=clone.atr())
    assert result.failure is ChipFailure.AA_FAILED and result.reason == "chip_aa_failed"
    assert result.active_authentication == "failed" and not result.authentic


def test_rsa_active_authentication_signature_iso9796_2_scheme1() -> None:
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import rsa

    from egate.drivers.chip.aa import ActiveAuthenticationFailed, _verify_rsa_9796_2

    key = rsa.generate_private_key(65537, 1024)
    n, d = key.public_key().public_numbers().n, key.private_numbers().d
    k = (n.bit_length() + 7) // 8
    challenge = bytes(range(8))
    m1 = bytes([0x5A]) * (k - 2 - 20)
    message = b"\x6a" + m1 + hashlib.sha1(m1 + challenge).digest() + b"\xbc"
    signature = pow(int.from_bytes(message, "big"), d, n).to_bytes(k, "big")
    _verify_rsa_9796_2(key.public_key(), signature, challenge)
    with pytest.raises(ActiveAuthenticationFailed):
        _verify_rsa_9796_2(key.public_key(), signature, bytes(8))
