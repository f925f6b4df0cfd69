"""Python 3.10 compatibility (the Python of JetPack 6), checked statically.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
