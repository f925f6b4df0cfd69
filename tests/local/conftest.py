"""The local test broker (mosquitto) the link and rig tests start.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
