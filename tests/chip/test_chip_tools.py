"""`egate diag chip` and `egate bench chip` as a technician runs them (subprocesses), against the
virtual ePassport on pcscd's virtual reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egate.tools.sim.chip.card import PassportCard
from egate.tools.sim.chip.passport import ChipPki, VirtualPassport, td3_mrz
from egate.tools.sim.chip.vpcd import FallSilent, VpcdCard
from tests.chip.chip_fixtures import READER

ROOT = Path(__file__).resolve().parents[2]

# `egate chip` processes against a private pcscd and virtual cards.
pytestmark = pytest.mark.slow


def _egate(*args: str, timeout: float = 120) -> tuple[int, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.usefixtures("pcscd")
def test_diag_chip_reports_reader_card_protocol_pa_and_hints(
    passport: VirtualPassport, pki: ChipPki, tmp_path: Path
) -> None:
    csca = tmp_path / "csca.pem"
    csca.write_bytes(pki.csca_pem())
    card = PassportCard(dict(passport.files), passport.key.mrz_information())
    with VpcdCard(card):
        rc, good = _egate(
            "diag",
            "chip",
            "--reader",
            READER,
            "--mrz",
            passport.mrz[0],
            "--mrz",
            passport.mrz[1],
            "--csca",
            str(csca),
            "--timeout",
            "10",
        )
        assert rc == 0, good
        assert good["pcscd"] == "running" and good["reader"] == READER and good["card_present"]
        assert good["atr"] == card.atr().hex().upper()
        chip = good["chip"]
        assert chip["authentic"] and chip["access_protocol"].startswith("PACE-ECDH-GM")
        assert chip["passive_authentication"]["checked_groups"] == [1, 2]
        assert [t["step"] for t in chip["timings"]][:3] == ["access", "dg1", "dg2"]
        assert passport.mrz[1][:9] not in json.dumps(good)  # no document number in the report

        wrong = td3_mrz("L898902C", "740813", "350415")  # birth date misread by one day
        rc, bad = _egate(
            "diag",
            "chip",
            "--reader",
            READER,
            "--mrz",
            wrong[0],
            "--mrz",
            wrong[1],
            "--csca",
            str(csca),
            "--timeout",
            "10",
        )
    assert rc == 1
    assert bad["chip"]["reason"] == "chip_access_denied"
    assert any("MRZ" in hint for hint in bad["hints"])


@pytest.mark.usefixtures("pcscd")
def test_chip_that_stops_answering_is_unreadable_within_the_deadline(passport: VirtualPassport) -> None:
    card = PassportCard(dict(passport.files), passport.key.mrz_information())

    def silent_at_dg1(cmd):  # type: ignore[no-untyped-def]
        if cmd.ins == 0xB0 and card._file == 0x0101:
            raise FallSilent

    card.before_command = silent_at_dg1
    with VpcdCard(card):
        rc, report = _egate(
            "diag",
            "chip",
            "--reader",
            READER,
            "--mrz",
            passport.mrz[0],
            "--mrz",
            passport.mrz[1],
            "--timeout",
            "10",
            "--apdu-timeout",
            "1",
        )
    assert rc == 1
    assert report["chip"]["reason"] == "chip_unreadable"
    assert "did not answer within 1.0 s" in report["chip"]["detail"]
    assert any("hold the document still" in hint for hint in report["hints"])


def test_diag_chip_without_pcscd_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # A PC/SC client pointed at a socket nobody serves behaves as a gate without pcscd.
    env_socket = "/tmp/egate-no-pcscd.comm"
    monkeypatch.setenv("PCSCLITE_CSOCK_NAME", env_socket)
    rc, report = _egate("diag", "chip")
    assert rc == 1 and report["pcscd"] == "not running"
    assert any("pcscd" in hint for hint in report["hints"])


@pytest.mark.usefixtures("pcscd")
def test_bench_chip_prints_steps_bytes_and_the_424k_share() -> None:
    rc, result = _egate("bench", "chip", "--runs", "1", "--dg2-kb", "4", timeout=300)
    assert rc == 0
    for name, variant in result["variants"].items():
        assert variant["apdus"] > 0 and variant["bytes"] > 4000, name
        assert variant["transfer_s_at_424k"] == pytest.approx(variant["bytes"] * 8 / 424_000, abs=1e-3)
        assert set(variant["steps"]) >= {"access", "dg1", "dg2", "sod", "pa"}
    assert result["variants"]["bac-short"]["apdus"] > result["variants"]["bac-extended"]["apdus"]
    assert "ca" in result["variants"]["pace-brainpoolP256r1-extended-ca"]["steps"]
