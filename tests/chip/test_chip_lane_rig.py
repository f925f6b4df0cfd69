"""Entry mode with the ePassport chip through the real daemon: a serial MRZ reader (or the page camera),
pcscd with vsmartcard's vpcd, our virtual passport on the reader, the lane camera playing the demo clip's
traveller, the CSCA trust list pushed as a signed `csca` bundle, and the outcome read over MQTT.

The genuine chip's DG2 is the traveller's face cut from the demo enrolment clip; "someone else" is a
real photo of another person; both come from ../shared/data through tests/shared_data.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from egate.tools.rig.lane import GATE, SITE, LaneRig, OpsMaterial, prepare_ops, run_egate
from egate.tools.sim.chip.card import PassportCard
from egate.tools.sim.chip.passport import (
    ID_CA_ECDH_AES_128,
    ChipPki,
    VirtualPassport,
    build_passport,
    dg14,
    encode_face,
    make_pki,
)
from egate.tools.sim.chip.vpcd import FallSilent, VpcdCard
from egate.tools.sim.reader import ReaderSimulator
from tests.chip.chip_fixtures import NOW, PORTS, READER
from tests.lane.test_lane_modes import td3
from tests.shared_data import shared_data
from tests.support.rig import GAP, LEAD_IN, RIG

pytestmark = RIG

ENROLMENT_GIF = "video/intel_sample_videos/preview/head-pose-face-detection-female-and-male.gif"
OTHER_PERSON = "faces/lfw_krasserm/Colin_Powell/Colin_Powell_0001.jpg"
DG1_FID = 0x0101


def traveller_photo() -> np.ndarray:
    """The woman of the enrolment clip (its left half): the traveller the lane camera shows."""
    cap = cv2.VideoCapture(str(shared_data(ENROLMENT_GIF)))
    try:
        frame = None
        for _ in range(11):
            ok, frame = cap.read()
            assert ok, "the enrolment clip ended early"
    finally:
        cap.release()
    assert frame is not None
    return np.ascontiguousarray(frame[:, : frame.shape[1] // 2])


def other_photo() -> np.ndarray:
    image = cv2.imread(str(shared_data(OTHER_PERSON)), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def chip(pki: ChipPki, photo: np.ndarray, mrz: list[str], groups: dict[int, bytes] | None = None) -> VirtualPassport:
    return build_passport(
        pki, encode_face(photo), (photo.shape[1], photo.shape[0]), mrz=tuple(mrz), extra_groups=groups
    )


def page_image(lines: list[str], photo: np.ndarray) -> np.ndarray:
    """A data page: the face of `photo`, cut as a passport portrait and printed large, above the MRZ."""
    from egate.engines.config import EngineConfig
    from egate.engines.models import default_model_dir
    from egate.engines.pipeline import FaceEngine
    from tests.support.reader_fixtures import render_ocrb_page

    with FaceEngine.from_config(EngineConfig(), default_model_dir()) as engine:
        x1, y1, x2, y2 = engine.analyze(photo)[0].box_xyxy
    w, cx, cy = x2 - x1, (x1 + x2) / 2, (y1 + y2) / 2
    crop = photo[int(max(0, cy - 1.1 * w)) : int(cy + 1.3 * w), int(max(0, cx - 0.9 * w)) : int(cx + 0.9 * w)]
    portrait = cv2.resize(crop, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    mrz = render_ocrb_page(lines)
    top = np.full((portrait.shape[0] + 80, mrz.shape[1], 3), 235, np.uint8)
    top[40 : 40 + portrait.shape[0], 40 : 40 + portrait.shape[1]] = portrait
    return np.vstack([top, mrz])


@contextmanager
def on_reader(
    passport: VirtualPassport, card: PassportCard | None = None, *, removal_seen: bool = True
) -> Iterator[VpcdCard]:
    """The passport lies on the chip reader for the block (pcscd sees it before the page is read).
    `removal_seen=False` for a card that fell silent mid-command: vpcd may then keep reporting it until
    the abandoned command ends (docs/chip.md, vpcd quirks), and nothing is read after it."""
    from egate.drivers.chip.pcsc import wait_for_card

    card = card or PassportCard(dict(passport.files), passport.key.mrz_information())
    with VpcdCard(card, port=PORTS[READER]) as placed:
        assert wait_for_card(READER, present=True, timeout_s=10.0), "pcscd does not see the virtual card"
        yield placed
    if removal_seen:
        assert wait_for_card(READER, present=False, timeout_s=10.0), "pcscd still sees the removed card"


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> OpsMaterial:
    return prepare_ops(tmp_path_factory.mktemp("ops-chip"), scope=f"{SITE}:{GATE}")


def csca_bundle(folder: Path, pki: ChipPki, ops: OpsMaterial) -> Path:
    pem = folder / "csca.pem"
    pem.write_bytes(pki.csca_pem())
    out = folder / "csca.egb"
    run_egate(
        ["ops", "csca", "build", "--cert", str(pem), "--key", str(ops.key), "--out", str(out),
         "--scope", f"{SITE}:{GATE}", "--expires", "1d", "--json"]
    )  # fmt: skip
    return out


def kinds(record: dict[str, Any]) -> dict[str, bool]:
    return {c["kind"]: c["passed"] for c in record["comparisons"]}


@pytest.mark.timeout(300)  # one rig runs every case in turn
@pytest.mark.usefixtures("pcscd")
def test_entry_with_the_chip_through_the_daemon(tmp_path: Path, ops: OpsMaterial, pki: ChipPki) -> None:
    woman, other = traveller_photo(), other_photo()
    pages = tmp_path / "pages"
    (pages / "blank").mkdir(parents=True)
    cv2.imwrite(str(pages / "blank" / "page.png"), np.full((600, 900, 3), 235, np.uint8))
    window = pages / "window"  # what the page camera sees: swapped atomically like a document change
    window.symlink_to(pages / "blank", target_is_directory=True)
    with ReaderSimulator() as reader:
        rig = LaneRig(
            tmp_path / "rig",
            ops=ops,
            plan=None,
            config={
                "gate": {"mode": "entry"},
                "reader": {
                    "serial_url": reader.port_path,
                    "page_camera": {"kind": "folder", "location": str(window), "loop": True, "fps": 4.0},
                },
                "chip": {"reader": READER, "card_wait_s": 3.0, "apdu_timeout_s": 2.0},
                "lane": {
                    # Deadlines with room for a busy CPU: the test checks decisions, not speed.
                    "capture_timeout_s": 8.0,
                    "chip_timeout_s": 20.0,
                    "refer_hold_s": 1.0,
                    # Utopia's passports all carry a chip: one without a chip is referred.
                    "policy": {"chip": "when_present", "chip_expected_issuers": ["UTO"]},
                },
            },
        )
        rig.start()
        try:
            rig.push_gallery(csca_bundle(tmp_path, pki, ops))
            rig.play([LEAD_IN, "female", GAP], loop=True)
            n = 0

            def outcome(lines: list[str]) -> dict[str, Any]:
                nonlocal n
                for _attempt in range(2):
                    n += 1
                    reader.send_mrz(lines)
                    record = rig.wait_outcomes(n, timeout=60)[n - 1]
                    rig.wait_state("idle", 30)
                    # On a loaded machine the simulated turnstile's OSDP link can drop and abort the session
                    # (the lane goes out of service): that says nothing about the chip, so read it once more.
                    if record["reasons"] != ["ABORTED_OUT_OF_SERVICE"]:
                        break
                return record

            # (a) Her genuine chip: PACE, DG1 = page, PA passes, Chip Authentication with its DG14 key, the
            # live face matches DG2 -> ACCEPT.
            mrz_a = td3("C1000001", "DOE", "JANE")
            ca_key = ec.generate_private_key(ec.BrainpoolP256R1())
            genuine = chip(pki, woman, mrz_a, {14: dg14(ca_key.public_key())})
            ca_card = PassportCard(
                dict(genuine.files), genuine.key.mrz_information(), ca_private_key=ca_key, ca_oid=ID_CA_ECDH_AES_128
            )
            with on_reader(genuine, ca_card):
                a = outcome(mrz_a)
            assert a["decision"] == "accept", a
            assert kinds(a) == {"1:1_chip": True} and a["passage"] == "completed"
            assert a["chip"]["result"] == "authentic" and a["chip"]["dg1_matches_page"] is True
            assert a["chip"]["access_protocol"].startswith("PACE-ECDH-GM") and a["chip"]["dg2_face"] is True
            assert a["chip"]["clone_detection"] == "chip_authentication"
            assert {"access", "dg1", "dg2", "sod", "pa", "ca"} <= set(a["chip"]["timings_ms"])
            print("chip step (a):", json.dumps({"chip": a["chip"]["timings_ms"], "lane": a["timings_ms"]}))

            # (b) A genuine chip whose DG2 is someone else -> REFER, the chip comparison failed.
            mrz_b = td3("C2000002", "ROE", "RICHARD")
            with on_reader(chip(pki, other, mrz_b)):
                b = outcome(mrz_b)
            assert b["decision"] == "refer" and b["reasons"] == ["NO_MATCH"], b
            assert kinds(b) == {"1:1_chip": False} and b["chip"]["result"] == "authentic"

            # (d) The page's MRZ does not open the chip (another document number) -> access denied.
            mrz_d = td3("C3000003", "POE", "EDGAR")
            with on_reader(chip(pki, woman, mrz_d)):
                d = outcome(td3("C3000004", "POE", "EDGAR"))
            assert d["decision"] == "refer" and "CHIP_ACCESS_DENIED" in d["reasons"], d
            assert d["chip"]["reason"] == "chip_access_denied" and d["chip"]["access_protocol"] is None

            # (e) A chip signed under a CSCA this gate does not trust -> PA failed, untrusted CSCA.
            stranger = make_pki(NOW, csca_name="Utopia CSCA")
            mrz_e = td3("C5000005", "DOE", "JANE")
            with on_reader(chip(stranger, woman, mrz_e)):
                e = outcome(mrz_e)
            assert e["decision"] == "refer" and "CHIP_PA_FAILED" in e["reasons"], e
            assert e["chip"]["reason"] == "pa_untrusted_csca" and "1:1_chip" not in kinds(e)

            # (c) A forged page: her photo printed over the MRZ of someone else's genuine passport. The page
            # portrait matches her, the chip's DG2 does not: the chip wins -> REFER.
            forged = pages / "forged"
            forged.mkdir()
            cv2.imwrite(str(forged / "page.png"), page_image(mrz_b, woman))
            with on_reader(chip(pki, other, mrz_b)):
                swap = pages / "window.new"
                swap.symlink_to(forged, target_is_directory=True)
                swap.replace(window)
                n += 1
                c = rig.wait_outcomes(n, timeout=120)[n - 1]  # a deadline, not a speed check: page OCR
                rig.wait_state("idle", 30)
            assert c["decision"] == "refer" and c["reasons"] == ["NO_MATCH"], c
            assert kinds(c) == {"1:1_document": True, "1:1_chip": False}, c

            # No card on the reader, from an issuer whose passports all carry a chip -> CHIP_MISSING.
            g = outcome(td3("C7000007", "DOE", "JANE"))
            assert g["decision"] == "refer" and "CHIP_MISSING" in g["reasons"], g
            assert g["chip"]["result"] == "absent"

            # (d) A chip that stops answering in the middle of DG1 -> unreadable. Last: the daemon's
            # abandoned PC/SC command may keep that reader busy for the rest of its life.
            mrz_f = td3("C6000006", "DOE", "JANE")
            silent_chip = chip(pki, woman, mrz_f)
            card = PassportCard(dict(silent_chip.files), silent_chip.key.mrz_information())

            def silent_at_dg1(cmd: Any) -> None:
                if cmd.ins == 0xB0 and card._file == DG1_FID:
                    raise FallSilent

            card.before_command = silent_at_dg1
            with on_reader(silent_chip, card, removal_seen=False):
                n += 1
                reader.send_mrz(mrz_f)
                f = rig.wait_outcomes(n, timeout=60)[n - 1]
            assert f["decision"] == "refer" and "CHIP_UNREADABLE" in f["reasons"], f
            assert f["chip"]["reason"] == "chip_unreadable"

            # No document number, name or image in what left the gate or in the daemon's log.
            published = json.dumps(rig.outcomes)
            log = rig.log_path.read_text()
            for secret in ("C1000001", "C2000002", "RICHARD", "JANE"):
                assert secret not in published and secret not in log, secret
        finally:
            rig.close()
