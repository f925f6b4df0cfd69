"""Gate drivers: the OSDP and Modbus turnstiles against their simulators on PTY pairs.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""

from __future__ import annotations

from tests.support.turnstile_fixtures import gate_factory, gate_pair  # noqa: F401 - fixtures for this folder
