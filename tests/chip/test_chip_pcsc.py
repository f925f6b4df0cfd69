"""The chip reader end to end through the real PC/SC stack: pcscd + vsmartcard's vpcd + a virtual
ePassport (tools/sim/chip), with a test PKI and EF.SOD generated here."""

from __future__ import annotations

from datetime import timedelta

import pytest

from egate.drivers.chip.access import AccessKey
from egate.drivers.chip.lds import DATA_GROUPS
from egate.drivers.chip.models import ChipFailure
from egate.drivers.chip.pa import PaFailure, TrustList
from egate.drivers.chip.reader import ChipReadOptions
from egate.tools.sim.chip.passport import (
    ChipPki,
    VirtualPassport,
    build_passport,
    dg2,
    make_crl,
    make_pki,
    synthetic_face,
)
from egate.tools.sim.chip.vpcd import CardRemoved
from tests.chip.chip_fixtures import NOW, SACRIFICIAL_READER, read_over_pcsc

DG1_FID = DATA_GROUPS[1][0]
DG2_FID = DATA_GROUPS[2][0]

# Real PC/SC reads: a private pcscd with vsmartcard's virtual readers.
pytestmark = pytest.mark.slow


def trust_for(pki: ChipPki, crls: tuple[bytes, ...] = ()) -> TrustList:
    return TrustList.from_der([pki.csca_der()], crls)


@pytest.mark.usefixtures("pcscd")
def test_pace_brainpool_chip_is_read_and_passes_passive_authentication(passport: VirtualPassport, pki: ChipPki) -> None:
    run = read_over_pcsc(passport, trust_for(pki))
    r = run.result
    assert r.failure is None, r.detail
    assert r.authentic
    assert r.access_protocol == "PACE-ECDH-GM-AES128-brainpoolP256r1"
    assert r.mrz == "".join(passport.mrz)
    assert r.face is not None and r.face.image_type == "jpeg"
    assert r.face.pixels.shape[1] == r.face.width
    assert r.pa is not None and r.pa.checked_groups == (1, 2)
    assert r.extended_length
    assert [t.step for t in r.timings][:3] == ["access", "dg1", "dg2"]


@pytest.mark.usefixtures("pcscd")
def test_pace_on_nist_p256(pki: ChipPki, face: tuple[bytes, tuple[int, int]]) -> None:
    nist = build_passport(pki, face[0], face[1], pace_parameter_id=12)
    r = read_over_pcsc(nist, trust_for(pki)).result
    assert r.authentic, r.detail
    assert r.access_protocol == "PACE-ECDH-GM-AES128-secp256r1"


@pytest.mark.usefixtures("pcscd")
def test_bac_chip_without_card_access_is_read_with_short_apdus(bac_passport: VirtualPassport, pki: ChipPki) -> None:
    run = read_over_pcsc(bac_passport, trust_for(pki), extended_length=False)
    r = run.result
    assert r.authentic, r.detail
    assert r.access_protocol == "BAC"
    assert not r.extended_length
    dg2_step = next(t for t in r.timings if t.step == "dg2")
    # 20 KB in 223-byte answers: about a hundred READ BINARY commands.
    assert dg2_step.apdus > 80


@pytest.mark.usefixtures("pcscd")
@pytest.mark.parametrize("which", ["pace", "bac"])
def test_wrong_mrz_is_access_denied_after_one_attempt(
    which: str, passport: VirtualPassport, bac_passport: VirtualPassport, pki: ChipPki
) -> None:
    chip = passport if which == "pace" else bac_passport
    run = read_over_pcsc(chip, trust_for(pki), key=AccessKey("L898902C", "740812", "350416"))
    assert run.result.failure is ChipFailure.ACCESS_DENIED
    assert run.result.reason == "chip_access_denied"
    assert run.card.failed_authentications == 1  # no retry storm (and no BAC after a refused PACE)
    assert run.result.mrz is None and run.result.face is None


@pytest.mark.usefixtures("pcscd")
def test_tampered_dg2_fails_the_hash_check(passport: VirtualPassport, pki: ChipPki) -> None:
    other, size = synthetic_face(20_000, seed=99)
    run = read_over_pcsc(passport.with_file(DG2_FID, dg2(other, *size)), trust_for(pki))
    assert run.result.failure is ChipFailure.PA_FAILED
    assert run.result.pa_failure is PaFailure.HASH_MISMATCH
    assert run.result.reason == "pa_hash_mismatch"
    assert not run.result.authentic


@pytest.mark.usefixtures("pcscd")
def test_tampered_dg1_fails_the_hash_check(passport: VirtualPassport, pki: ChipPki) -> None:
    forged = bytearray(passport.files[DG1_FID])
    forged[10:13] = b"ZZZ"  # a changed name: still a well-formed MRZ field
    run = read_over_pcsc(passport.with_file(DG1_FID, bytes(forged)), trust_for(pki))
    assert run.result.pa_failure is PaFailure.HASH_MISMATCH


@pytest.mark.usefixtures("pcscd")
def test_sod_from_an_untrusted_csca_is_refused(passport: VirtualPassport) -> None:
    stranger = make_pki(NOW, csca_name="Utopia CSCA")  # same name, other key: only the signature tells
    run = read_over_pcsc(passport, trust_for(stranger))
    assert run.result.pa_failure is PaFailure.UNTRUSTED_CSCA


@pytest.mark.usefixtures("pcscd")
def test_expired_document_signer_is_refused(face: tuple[bytes, tuple[int, int]]) -> None:
    old = make_pki(NOW, ds_not_before=NOW - timedelta(days=4000), ds_not_after=NOW - timedelta(days=1))
    chip = build_passport(old, face[0], face[1])
    run = read_over_pcsc(chip, trust_for(old))
    assert run.result.pa_failure is PaFailure.DS_EXPIRED


@pytest.mark.usefixtures("pcscd")
def test_revoked_document_signer_is_refused_and_an_unrelated_crl_is_not(
    passport: VirtualPassport, pki: ChipPki
) -> None:
    revoked = read_over_pcsc(passport, trust_for(pki, (make_crl(pki, NOW, (pki.ds.serial_number,)),)))
    assert revoked.result.pa_failure is PaFailure.DS_REVOKED
    clean = read_over_pcsc(passport, trust_for(pki, (make_crl(pki, NOW, (12345,)),)))
    assert clean.result.authentic, clean.result.detail


@pytest.mark.usefixtures("pcscd")
def test_no_trust_list_is_its_own_reason(passport: VirtualPassport) -> None:
    assert read_over_pcsc(passport, None).result.pa_failure is PaFailure.NO_TRUST_LIST


@pytest.mark.usefixtures("pcscd")
def test_extended_length_can_be_turned_off_by_config(passport: VirtualPassport, pki: ChipPki) -> None:
    r = read_over_pcsc(passport, trust_for(pki), options=ChipReadOptions(extended_length="off")).result
    assert r.authentic and not r.extended_length


# A chip that falls silent is exercised through `egate diag chip` in a subprocess
# (tests/chip/test_chip_tools.py): the abandoned SCardTransmit then ends with that process.


def _remove_in_dg2(card):  # type: ignore[no-untyped-def]
    def hook(cmd):  # type: ignore[no-untyped-def]
        if cmd.ins == 0xB0 and (cmd.p1 << 8 | cmd.p2) > 0 and card._file == DG2_FID:
            raise CardRemoved

    return hook


@pytest.mark.usefixtures("pcscd")
def test_card_removed_in_the_middle_of_dg2_is_unreadable(passport: VirtualPassport, pki: ChipPki) -> None:
    run = read_over_pcsc(passport, trust_for(pki), hook=_remove_in_dg2, reader=SACRIFICIAL_READER, wait_absent=False)
    assert run.result.failure is ChipFailure.UNREADABLE
    assert run.result.detail.startswith("dg2:")
    assert run.result.face is None and 2 not in run.result.data_groups
