"""`egate diag`: verdicts, self-test, device checks and the daemon's diag over the control socket.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""

from __future__ import annotations

from tests.support.turnstile_fixtures import gate_factory  # noqa: F401 - fixture for this folder
