"""ePassport (eMRTD) chip reader: PC/SC access, BAC and PACE, LDS files and Passive Authentication.

Knows nothing of the lane: it takes the access key (document number, birth and expiry dates read from
the page's MRZ) and trusted CSCA certificates, and returns a typed `ChipResult` (ICAO Doc 9303 parts
10 and 11). The DG2 face image is decoded in memory and never written anywhere.
"""
