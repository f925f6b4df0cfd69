"""A virtual ePassport for tests, the bench and technicians: test PKI and LDS files (`passport`),
the chip's command logic with BAC, PACE-GM and secure messaging (`card`), and the link to
vsmartcard's virtual reader driver vpcd (`vpcd`), so the real PC/SC stack carries every APDU.
"""
