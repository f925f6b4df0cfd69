"""Our chip reader against a card that is not ours: vsmartcard's virtual ePassport (vicc's ISO 7816
OS and BAC SAM, run by tools/sim/chip/vicc_peer.py in its own process) behind pcscd and vpcd."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from egate.drivers.chip.access import AccessKey
from egate.drivers.chip.models import ChipFailure, ChipResult
from egate.drivers.chip.pa import TrustList
from egate.drivers.chip.reader import read_document
from egate.tools.sim.chip.passport import SPECIMEN_MRZ
from egate.tools.sim.chip.vicc_peer import VICC_SITE, vicc_available
from tests.chip.chip_fixtures import NOW, PORTS, READER

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not vicc_available(), reason=f"vsmartcard's vicc is not installed under {VICC_SITE} (python3-virtualsmartcard)"
    ),
]

SPECIMEN_KEY = AccessKey(SPECIMEN_MRZ[1][0:9].rstrip("<"), SPECIMEN_MRZ[1][13:19], SPECIMEN_MRZ[1][21:27])


@pytest.fixture(scope="module")
def vicc(pcscd: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustList]:
    """vicc's ePassport in the reader, in a process of its own; yields the trust list of its CSCA."""
    csca = tmp_path_factory.mktemp("vicc") / "csca.der"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egate.tools.sim.chip.vicc_peer",
            "--port",
            str(PORTS[READER]),
            "--csca-out",
            str(csca),
            "--exit-on-stdin-eof",
        ],
        stdin=subprocess.PIPE,  # the peer leaves when this closes, even if pytest itself is killed
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: stdout.readline() == "ready\n" and ready.set(), daemon=True).start()
    try:
        assert ready.wait(timeout=60.0), f"vicc peer did not come up (exit code {proc.poll()})"
        yield TrustList.from_der([Path(csca).read_bytes()], ())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10.0)
        stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
    from egate.drivers.chip.pcsc import wait_for_card

    assert wait_for_card(READER, present=False, timeout_s=10.0), "pcscd still sees vicc's card"


def read(key: AccessKey, trust: TrustList) -> ChipResult:
    from egate.drivers.chip.pcsc import PcscTransport

    transport = PcscTransport.open(READER, timeout_s=10.0, apdu_timeout_s=5.0)
    try:
        return read_document(transport, key, trust, NOW, atr=transport.atr)
    finally:
        transport.close()


def test_bac_read_and_passive_authentication_against_vicc(vicc: TrustList) -> None:
    r = read(SPECIMEN_KEY, vicc)
    assert r.failure is None, r.detail
    assert r.access_protocol == "BAC"
    assert r.mrz == "".join(SPECIMEN_MRZ)
    assert r.face is not None and r.face.image_type == "jpeg"
    assert r.pa is not None and r.pa.checked_groups == (1, 2)
    assert r.authentic
    # Every file came from vicc's card over secure messaging: EF.COM, DG1, DG2 and EF.SOD.
    assert [t.step for t in r.timings] == ["access", "dg1", "dg2", "sod", "com", "pa"]
    assert all(t.apdus > 0 for t in r.timings if t.step != "pa")


def test_wrong_mrz_is_access_denied_by_vicc(vicc: TrustList) -> None:
    r = read(AccessKey("L898902C", "740812", "350416"), vicc)
    assert r.failure is ChipFailure.ACCESS_DENIED
    assert r.reason == "chip_access_denied"
    assert r.mrz is None and r.face is None
