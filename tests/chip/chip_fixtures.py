"""Chip test fixtures: a private pcscd with vsmartcard's virtual readers, a test PKI, and a helper
that puts a virtual passport on the reader and reads it through the real PC/SC stack."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from egate.drivers.chip.models import ChipResult
from egate.drivers.chip.pa import TrustList
from egate.drivers.chip.reader import ChipReadOptions, read_document
from egate.tools.sim.chip.card import PassportCard
from egate.tools.sim.chip.passport import ChipPki, VirtualPassport, build_passport, make_pki, synthetic_face

READER = "Virtual PCD 00 00"
# vpcd goes deaf to new cards after one vanished in the middle of a command: the one test that does
# that uses the second reader, which nothing else uses in the session.
SACRIFICIAL_READER = "Virtual PCD 00 01"
PORTS = {READER: 35963, SACRIFICIAL_READER: 35964}
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="session")
def pcscd() -> Iterator[object]:
    if shutil.which("pcscd") is None:
        pytest.skip("pcscd is not installed (scripts/setup.sh installs pcscd and vsmartcard-vpcd)")
    from egate.tools.sim.chip.pcscd import Pcscd, PcscdError

    daemon = Pcscd()
    try:
        daemon.start()
    except PcscdError as exc:
        pytest.skip(f"cannot run pcscd here: {exc}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def pki() -> ChipPki:
    return make_pki(NOW)


@pytest.fixture(scope="session")
def face() -> tuple[bytes, tuple[int, int]]:
    return synthetic_face(20_000)


@pytest.fixture(scope="session")
def passport(pki: ChipPki, face: tuple[bytes, tuple[int, int]]) -> VirtualPassport:
    return build_passport(pki, face[0], face[1], pace_parameter_id=13)


@pytest.fixture(scope="session")
def bac_passport(pki: ChipPki, face: tuple[bytes, tuple[int, int]]) -> VirtualPassport:
    return build_passport(pki, face[0], face[1], pace_parameter_id=None)


@dataclass
class ChipRun:
    result: ChipResult
    card: PassportCard


def read_over_pcsc(
    passport: VirtualPassport,
    trust: TrustList | None,
    *,
    key: Any = None,
    hook: Callable[[PassportCard], Callable[[Any], None]] | None = None,
    extended_length: bool = True,
    options: ChipReadOptions | None = None,
    apdu_timeout_s: float = 5.0,
    reader: str = READER,
    wait_absent: bool = True,
) -> ChipRun:
    """Insert a virtual card with `passport`, read it through pcscd, take the card out."""
    from egate.drivers.chip.pcsc import PcscTransport, wait_for_card
    from egate.tools.sim.chip.vpcd import VpcdCard

    card = PassportCard(dict(passport.files), passport.key.mrz_information(), extended_length=extended_length)
    if hook is not None:
        card.before_command = hook(card)
    with VpcdCard(card, port=PORTS[reader]):
        transport = PcscTransport.open(reader, timeout_s=10.0, apdu_timeout_s=apdu_timeout_s)
        try:
            result = read_document(transport, key or passport.key, trust, NOW, atr=transport.atr, options=options)
        finally:
            transport.close()
    # The next test's card must not meet this one in pcscd's view of the reader.
    assert not wait_absent or wait_for_card(reader, present=False, timeout_s=10.0), "pcscd still sees the removed card"
    return ChipRun(result, card)
