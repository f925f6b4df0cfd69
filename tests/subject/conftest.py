"""Opaque subject ids: keyed hashes made by `egate ops gallery build`.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
