"""The traveller display: page units and the real page in Chromium against the daemon.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
