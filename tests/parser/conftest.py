"""Small parsers at their limits: gallery tags, BCBP size fields, serial reads.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
