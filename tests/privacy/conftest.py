"""Personal data through the whole lane: a known traveller's documents in, every output searched.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
