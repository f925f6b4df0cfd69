"""`egate demo` as a person runs it, and the demo as an installed package runs it.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
