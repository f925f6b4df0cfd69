"""ePassport chip tests: ICAO 9303 vectors, the virtual card, PC/SC reads through a private pcscd.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""

from __future__ import annotations

from tests.chip.chip_fixtures import bac_passport, face, passport, pcscd, pki  # noqa: F401 - fixtures for this folder
