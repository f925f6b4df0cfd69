"""The daemon's control socket against hostile or careless peers.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
