"""CLI conventions: every `egate` command's `--help`, walked from the real command tree.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
