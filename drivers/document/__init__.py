"""Travel-document reader: ICAO 9303 MRZ (OCR or serial) and IATA BCBP boarding passes."""
