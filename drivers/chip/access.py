"""Access control: the MRZ-derived key and Basic Access Control (ICAO Doc 9303 part 11 §4.3)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from egate.drivers.chip import crypto
from egate.drivers.chip.apdu import SW_OK, CardStatusError, Channel
from egate.drivers.chip.sm import SecureMessaging

# What a chip answers to a wrong key: 6300 (verification failed), 6982 (security status not
# satisfied) or 6988 (SM data objects incorrect, some BAC chips).
ACCESS_DENIED_SW = frozenset({0x6300, 0x6982, 0x6988, 0x6A80}) | frozenset(range(0x63C0, 0x63D0))


class AccessDenied(Exception):
    """The chip refused the MRZ-derived key (wrong or misread MRZ)."""


def _check_digit(text: str) -> str:
    weights = (7, 3, 1)
    total = 0
    for i, ch in enumerate(text):
        if ch.isdigit():
            value = int(ch)
        elif ch.isalpha():
            value = ord(ch.upper()) - 55
        else:
            value = 0
        total += value * weights[i % 3]
    return str(total % 10)


@dataclass(frozen=True)
class AccessKey:
    """The MRZ fields the chip's access key is derived from (never log them)."""

    document_number: str
    birth_date: str  # YYMMDD
    expiry_date: str  # YYMMDD

    def __repr__(self) -> str:
        return "AccessKey(<redacted>)"

    def mrz_information(self) -> str:
        number = self.document_number.upper().ljust(9, "<")
        return (
            number
            + _check_digit(number)
            + self.birth_date
            + _check_digit(self.birth_date)
            + self.expiry_date
            + _check_digit(self.expiry_date)
        )


RandomSource = Callable[[int], bytes]


def bac_keys(key: AccessKey) -> tuple[bytes, bytes]:
    seed = crypto.bac_key_seed(key.mrz_information())
    return crypto.kdf(seed, "enc", "3des"), crypto.kdf(seed, "mac", "3des")


def perform_bac(channel: Channel, key: AccessKey, random: RandomSource = os.urandom) -> SecureMessaging:
    """GET CHALLENGE + EXTERNAL AUTHENTICATE; returns the session's 3DES secure messaging."""
    k_enc, k_mac = bac_keys(key)
    rnd_ic, sw = channel.command(0x00, 0x84, 0x00, 0x00, b"", 8)
    if sw != SW_OK or len(rnd_ic) != 8:
        raise CardStatusError("GET CHALLENGE", sw)
    rnd_ifd = random(8)
    k_ifd = random(16)
    e_ifd = crypto.des3_cbc(k_enc, rnd_ifd + rnd_ic + k_ifd)
    m_ifd = crypto.retail_mac(k_mac, crypto.pad(e_ifd, 8))
    answer, sw = channel.command(0x00, 0x82, 0x00, 0x00, e_ifd + m_ifd, 0x28)
    if sw in ACCESS_DENIED_SW:
        raise AccessDenied(f"BAC refused (status {sw:04X}): check the MRZ")
    if sw != SW_OK or len(answer) != 40:
        raise CardStatusError("EXTERNAL AUTHENTICATE", sw)
    if crypto.retail_mac(k_mac, crypto.pad(answer[:32], 8)) != answer[32:]:
        raise AccessDenied("BAC answer MAC does not verify: wrong key or not this chip")
    plain = crypto.des3_cbc(k_enc, answer[:32], decrypt=True)
    if plain[:8] != rnd_ic or plain[8:16] != rnd_ifd:
        raise AccessDenied("BAC answer does not echo the challenges")
    k_ic = plain[16:32]
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_ic, strict=True))
    ssc = int.from_bytes(rnd_ic[4:] + rnd_ifd[4:], "big")
    return SecureMessaging("3des", crypto.kdf(seed, "enc", "3des"), crypto.kdf(seed, "mac", "3des"), ssc)
