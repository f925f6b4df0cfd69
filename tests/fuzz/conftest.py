"""Fuzzing of every untrusted-input parser with a small budget (`egate bench fuzz` runs longer).

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
