"""Entry mode's chip step (edge/lane/chip.py) feeding the policy: page MRZ -> chip -> DG1 = page ->
PA -> DG2 descriptor, with the real face engine on a real portrait in DG2."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import cv2
import pytest

from egate.drivers.chip.apdu import ChipIOError
from egate.drivers.chip.pa import TrustList
from egate.edge.lane.chip import access_key_from_mrz, inspect_chip
from egate.tools.sim.chip.card import DirectTransport, PassportCard
from egate.tools.sim.chip.passport import VirtualPassport, build_passport, encode_face, make_pki, td3_mrz
from tests.shared_data import shared_data

NOW = datetime.now(timezone.utc)
PKI = make_pki(NOW)


def _chip(photo_path: str, mrz: tuple[str, ...]) -> VirtualPassport:
    photo = cv2.imread(str(shared_data(photo_path)), cv2.IMREAD_COLOR)
    return build_passport(PKI, encode_face(photo), (photo.shape[1], photo.shape[0]), mrz=mrz, pace_parameter_id=13)


def _opener(chip: VirtualPassport):  # type: ignore[no-untyped-def]
    card = PassportCard(dict(chip.files), chip.key.mrz_information())
    return lambda: (DirectTransport(card), card.atr())


def test_access_key_from_a_passport_mrz() -> None:
    key = access_key_from_mrz(td3_mrz("L898902C", "740812", "350415"))
    assert key is not None
    assert (key.document_number, key.birth_date, key.expiry_date) == ("L898902C", "740812", "350415")
    assert access_key_from_mrz(["garbage"]) is None


def test_genuine_chip_gives_facts_and_a_dg2_descriptor_of_the_same_person(model_dir: Path) -> None:
    from egate.engines.config import EngineConfig
    from egate.engines.pipeline import FaceEngine

    mrz = td3_mrz("X1234567", "800101", "330101", surname="POWELL", given="COLIN")
    chip = _chip("faces/lfw_krasserm/Colin_Powell/Colin_Powell_0001.jpg", mrz)
    with FaceEngine.from_config(EngineConfig(), model_dir) as engine:
        enroll = lambda img: (lambda o: None if o is None else o.descriptor)(engine.enroll(img))  # noqa: E731
        inspection = inspect_chip(_opener(chip), mrz, TrustList((PKI.csca,)), NOW, enroll)
        assert inspection.facts.present and inspection.facts.failure is None
        assert inspection.facts.dg1_matches_page is True
        assert inspection.dg2_descriptor is not None
        same = engine.enroll(cv2.imread(str(shared_data("faces/lfw_krasserm/Colin_Powell/Colin_Powell_0002.jpg"))))
        other = engine.enroll(cv2.imread(str(shared_data("faces/lfw_krasserm/Tony_Blair/Tony_Blair_0001.jpg"))))
    assert same is not None and other is not None
    import numpy as np

    d_same = float(np.linalg.norm(same.descriptor - inspection.dg2_descriptor))
    d_other = float(np.linalg.norm(other.descriptor - inspection.dg2_descriptor))
    assert d_same < d_other
    assert "X1234567" not in str(inspection.record) and "POWELL" not in str(inspection.record)


def test_page_mrz_that_differs_from_dg1_is_reported() -> None:
    mrz = td3_mrz("X1234567", "800101", "330101", surname="POWELL", given="COLIN")
    chip = _chip("faces/lfw_krasserm/Colin_Powell/Colin_Powell_0001.jpg", mrz)
    forged_page = td3_mrz("X1234567", "800101", "330101", surname="BLAIR", given="TONY")  # same key fields
    inspection = inspect_chip(_opener(chip), forged_page, TrustList((PKI.csca,)), NOW, None)
    assert inspection.facts.dg1_matches_page is False and inspection.facts.failure is None


@pytest.mark.parametrize("which", ["no_card", "wrong_key"])
def test_no_card_means_no_chip_and_a_wrong_key_is_access_denied(which: str) -> None:
    mrz = td3_mrz("X1234567", "800101", "330101")
    if which == "no_card":

        def opener():  # type: ignore[no-untyped-def]
            raise ChipIOError("no card on Virtual PCD 00 00 within 2.0 s")

        inspection = inspect_chip(opener, mrz, None, NOW, None)
        assert not inspection.facts.present
    else:
        chip = _chip("faces/lfw_krasserm/Colin_Powell/Colin_Powell_0001.jpg", mrz)
        inspection = inspect_chip(_opener(chip), td3_mrz("X1234568", "800101", "330101"), None, NOW, None)
        assert inspection.facts.present and inspection.facts.failure == "chip_access_denied"
