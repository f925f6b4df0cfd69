"""Gallery: signed bundles, the encrypted store, matching, ops tools.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
