"""Foundation: config loading, daemon lifecycle, logging, systemd units.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
