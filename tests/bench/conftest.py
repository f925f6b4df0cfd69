"""Bench tests: `egate bench verify` on the shared face data (face models from the session `model_dir`).

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
