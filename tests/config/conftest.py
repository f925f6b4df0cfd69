"""Cross-section config limits: settings one part accepts but another cannot honour are refused by
`egate config check`.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
