"""Document reader: MRZ, BCBP, page images, serial OCR readers.

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""
