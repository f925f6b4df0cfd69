"""ICAO Doc 9303 part 11 worked examples: BAC (appendix D) and PACE ECDH-GM (appendix G.1).

The values are the published ones; the reader's code must reproduce every intermediate step.
"""

from __future__ import annotations

from collections import deque

import pytest
from cryptography.hazmat.primitives.asymmetric import ec as cec

from egate.drivers.chip import crypto
from egate.drivers.chip.access import AccessKey, bac_keys, perform_bac
from egate.drivers.chip.apdu import Channel
from egate.drivers.chip.ec import BRAINPOOL_P256R1, NIST_P256, Curve
from egate.drivers.chip.pace import (
    PaceInfo,
    auth_token,
    map_generator,
    parse_card_access,
    password_key,
    perform_pace,
    session_keys,
)
from egate.drivers.chip.sm import SecureMessaging

H = bytes.fromhex
BAC_KEY = AccessKey("L898902C", "690806", "940623")


class ScriptedCard:
    """Answers an exact, expected sequence of APDUs (the worked example's transcript)."""

    def __init__(self, script: list[tuple[str, str]]) -> None:
        self.script = deque((H(c), H(r)) for c, r in script)

    def transmit(self, apdu: bytes) -> tuple[bytes, int]:
        expected, answer = self.script.popleft()
        assert apdu.hex().upper() == expected.hex().upper()
        return answer[:-2], int.from_bytes(answer[-2:], "big")

    def close(self) -> None:
        pass


def test_bac_key_derivation_matches_appendix_d2() -> None:
    assert BAC_KEY.mrz_information() == "L898902C<369080619406236"
    assert crypto.bac_key_seed(BAC_KEY.mrz_information()) == H("239AB9CB282DAF66231DC5A4DF6BFBAE")
    k_enc, k_mac = bac_keys(BAC_KEY)
    assert k_enc == H("AB94FDECF2674FDFB9B391F85D7F76F2")
    assert k_mac == H("7962D9ECE03D1ACD4C76089DCE131543")


def test_bac_mutual_authentication_and_secure_messaging_match_appendix_d3_d4() -> None:
    card = ScriptedCard(
        [
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
        ]
    )
    randoms = deque([H("781723860C06C226"), H("0B795240CB7049B01C19B33E32804F0B")])
    channel = Channel(card)
    sm = perform_bac(channel, BAC_KEY, random=lambda n: randoms.popleft())
    assert sm.ks_enc == H("979EC13B1CBFE9DCD01AB0FED307EAE5")
    assert sm.ks_mac == H("F1CB1F1FB5ADF208806B89DC579DC1F8")
    assert sm.ssc == 0x887022120C06C226
    channel.sm = sm
    channel.select_file(0x011E)
    assert channel.read_binary(0, 4) == H("60145F01")
    assert channel.read_binary(4, 0x12) == H("04303130365F36063034303030305C026175")
    assert sm.ssc == 0x887022120C06C22C
    assert not card.script


def test_a_tampered_response_mac_is_refused() -> None:
    sm = SecureMessaging(
        "3des", H("979EC13B1CBFE9DCD01AB0FED307EAE5"), H("F1CB1F1FB5ADF208806B89DC579DC1F8"), 0x887022120C06C226
    )
    sm.wrap(0x00, 0xA4, 0x02, 0x0C, H("011E"), None)
    from egate.drivers.chip.sm import SecureMessagingError

    with pytest.raises(SecureMessagingError):
        sm.unwrap(H("990290008E08FA855A5D4C50A8EE"), 0x9000)


# ---- PACE ECDH-GM, appendix G.1 (brainpoolP256r1, AES-128) --------------------------------------------

PACE_KEY = AccessKey("T22000129", "640812", "101031")
OID = H("04007F00070202040202")
NONCE_Z = "95A3A016522EE98D01E76CB6B98B42C3"
NONCE_S = "3F00C4D39D153F2B2A214A078D899B22"
SK_MAP_IFD = 0x7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99
PK_MAP_IFD = (
    "047ACF3EFC982EC45565A4B155129EFBC74650DCBFA6362D896FC70262E0C2CC5E"
    "544552DCB6725218799115B55C9BAA6D9F6BC3A9618E70C25AF71777A9C4922D"
)
SK_MAP_IC = 0x498FF49756F2DC1587840041839A85982BE7761D14715FB091EFA7BCE9058560
PK_MAP_IC = (
    "04824FBA91C9CBE26BEF53A0EBE7342A3BF178CEA9F45DE0B70AA601651FBA3F57"
    "30D8C879AAA9C9F73991E61B58F4D52EB87A0A0C709A49DC63719363CCD13C54"
)
SHARED_H = (
    "0460332EF2450B5D247EF6D3868397D398852ED6E8CAF6FFEEF6BF85CA57057FD5"
    "0840CA7415BAF3E43BD414D35AA4608B93A2CAF3A4E3EA4E82C9C13D03EB7181"
)
G_MAPPED = (
    "048CED63C91426D4F0EB1435E7CB1D74A46723A0AF21C89634F65A9AE87A9265E2"
    "8C879506743F8611AC33645C5B985C80B5F09A0B83407C1B6A4D857AE76FE522"
)
SK_DH_IFD = 0xA73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595
PK_DH_IFD = (
    "042DB7A64C0355044EC9DF190514C625CBA2CEA48754887122F3A5EF0D5EDD301C"
    "3556F3B3B186DF10B857B58F6A7EB80F20BA5DC7BE1D43D9BF850149FBB36462"
)
SK_DH_IC = 0x107CF58696EF6155053340FD633392BA81909DF7B9706F226F32086C7AFF974A
PK_DH_IC = (
    "049E880F842905B8B3181F7AF7CAA9F0EFB743847F44A306D2D28C1D9EC65DF6DB"
    "7764B22277A2EDDC3C265A9F018F9CB852E111B768B326904B59A0193776F094"
)
SHARED_K = "28768D20701247DAE81804C9E780EDE582A9996DB4A315020B2733197DB84925"
KS_ENC = "F5F0E35C0D7161EE6724EE513A0D9A7F"
KS_MAC = "FE251C7858B356B24514B3BD5F4297D1"
T_IFD = "C2B0BD78D94BA866"
T_IC = "3ABB9674BCE93C08"


@pytest.mark.parametrize(("curve", "named"), [(NIST_P256, cec.SECP256R1()), (BRAINPOOL_P256R1, cec.BrainpoolP256R1())])
def test_curve_constants_agree_with_cryptography(curve: Curve, named: cec.EllipticCurve) -> None:
    assert curve.contains(curve.generator)
    assert curve.multiply(curve.n, curve.generator) is None
    for k in (1, 2, 0xDEADBEEF12345, curve.n - 1):
        public = cec.derive_private_key(k, named).public_key().public_numbers()
        assert curve.multiply(k, curve.generator) == (public.x, public.y)


def test_pace_password_key_and_nonce_match_appendix_g1() -> None:
    k_pi = password_key(PACE_KEY, "aes128")
    assert k_pi == H("89DED1B26624EC1E634C1989302849DD")
    assert crypto.aes_cbc(k_pi, H(NONCE_Z), decrypt=True) == H(NONCE_S)


def test_pace_mapping_agreement_keys_and_tokens_match_appendix_g1() -> None:
    curve = BRAINPOOL_P256R1
    assert curve.encode(curve.multiply(SK_MAP_IFD, curve.generator)) == H(PK_MAP_IFD)
    assert curve.encode(curve.multiply(SK_MAP_IC, curve.generator)) == H(PK_MAP_IC)
    assert curve.encode(curve.multiply(SK_MAP_IFD, curve.decode(H(PK_MAP_IC)))) == H(SHARED_H)
    mapped = map_generator(curve, int(NONCE_S, 16), SK_MAP_IFD, curve.decode(H(PK_MAP_IC)))
    assert curve.encode(mapped) == H(G_MAPPED)
    # The chip maps to the same generator from its side.
    assert map_generator(curve, int(NONCE_S, 16), SK_MAP_IC, curve.decode(H(PK_MAP_IFD))) == mapped
    assert curve.encode(curve.multiply(SK_DH_IFD, mapped)) == H(PK_DH_IFD)
    assert curve.encode(curve.multiply(SK_DH_IC, mapped)) == H(PK_DH_IC)
    shared = curve.multiply(SK_DH_IFD, curve.decode(H(PK_DH_IC)))
    assert shared is not None and shared[0].to_bytes(32, "big") == H(SHARED_K)
    ks_enc, ks_mac = session_keys(H(SHARED_K), "aes128")
    assert (ks_enc, ks_mac) == (H(KS_ENC), H(KS_MAC))
    assert auth_token(ks_mac, OID, curve, H(PK_DH_IC)) == H(T_IFD)
    assert auth_token(ks_mac, OID, curve, H(PK_DH_IFD)) == H(T_IC)


def test_pace_transcript_of_appendix_g1_is_reproduced_byte_for_byte() -> None:
    card = ScriptedCard(
        [
            ("0022C1A412800A04007F0007020204020283010184010D", "9000"),
            ("10860000027C0000", "7C128010" + NONCE_Z + "9000"),
            ("10860000457C438141" + PK_MAP_IFD + "00", "7C438241" + PK_MAP_IC + "9000"),
            ("10860000457C438341" + PK_DH_IFD + "00", "7C438441" + PK_DH_IC + "9000"),
            ("008600000C7C0A8508" + T_IFD + "00", "7C0A8608" + T_IC + "9000"),
        ]
    )
    keys = deque([SK_MAP_IFD, SK_DH_IFD])
    sm = perform_pace(Channel(card), PACE_KEY, PaceInfo(OID, 2, 13), key_source=lambda c: keys.popleft())
    assert (sm.ks_enc, sm.ks_mac, sm.ssc) == (H(KS_ENC), H(KS_MAC), 0)
    assert not card.script


def test_card_access_of_the_example_offers_pace_gm_on_brainpool() -> None:
    card_access = H("3114" + "3012" + "060A04007F00070202040202" + "020102" + "02010D")
    (info,) = parse_card_access(card_access)
    assert info.supported and info.parameter_id == 13 and info.cipher == "aes128"
