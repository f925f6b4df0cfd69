"""Symmetric primitives of ICAO Doc 9303 part 11: key derivation (§9.7.1), 3DES with the ISO 9797-1
retail MAC (algorithm 3, padding method 2) for BAC, AES with CMAC for PACE (§9.8).

`cryptography` provides the ciphers; 3DES lives in its `decrepit` package because only legacy
protocols such as BAC still need it.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

KeyPurpose = Literal["enc", "mac", "pace"]
_COUNTER = {"enc": 1, "mac": 2, "pace": 3}


def pad(data: bytes, block: int) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 80 then zeros up to the block size."""
    padded = data + b"\x80"
    return padded + b"\x00" * (-len(padded) % block)


def unpad(data: bytes) -> bytes:
    stripped = data.rstrip(b"\x00")
    if not stripped or stripped[-1] != 0x80:
        raise ValueError("bad ISO 9797-1 padding")
    return stripped[:-1]


def kdf(shared: bytes, purpose: KeyPurpose, cipher: Literal["3des", "aes128", "aes192", "aes256"]) -> bytes:
    """KDF(K, c) of 9303-11 §9.7.1: a hash of the secret and a 32-bit counter (1 enc, 2 mac, 3 PACE)."""
    data = shared + _COUNTER[purpose].to_bytes(4, "big")
    if cipher == "3des":
        return _odd_parity(hashlib.sha1(data).digest()[:16])  # noqa: S324 - ICAO 9303-11 mandates SHA-1 here
    if cipher == "aes128":
        return hashlib.sha1(data).digest()[:16]  # noqa: S324 - ICAO 9303-11 mandates SHA-1 here
    digest = hashlib.sha256(data).digest()
    return digest[:24] if cipher == "aes192" else digest


def _odd_parity(key: bytes) -> bytes:
    """DES keys carry odd parity in each byte's low bit (9303-11 §9.7.1.1); DES ignores it, but the
    published keys show it, and a chip comparing keys byte for byte would too."""
    return bytes((b & 0xFE) | (bin(b >> 1).count("1") + 1) % 2 for b in key)


def bac_key_seed(mrz_information: str) -> bytes:
    """Kseed: the first 16 bytes of SHA-1 of number+check, birth+check, expiry+check (9303-11 §4.3.2)."""
    return hashlib.sha1(mrz_information.encode("ascii")).digest()[:16]  # noqa: S324 - ICAO 9303-11 mandates SHA-1 here


def des3_cbc(key: bytes, data: bytes, *, decrypt: bool = False, iv: bytes = bytes(8)) -> bytes:
    # Two-key 3DES (K1, K2, K1) spelled as a three-key bundle.
    cipher = Cipher(TripleDES(key[:16] + key[:8]), modes.CBC(iv))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _des_ecb(key8: bytes, block: bytes, *, decrypt: bool = False) -> bytes:
    # Single DES as 3DES with K1 = K2 = K3 (the only way modern libraries still offer it).
    cipher = Cipher(TripleDES(key8 * 3), modes.ECB())  # noqa: S305 - one block: a DES/AES primitive
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(block) + op.finalize()


def retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 with DES (the 'retail MAC'); `data` must already be padded."""
    if len(data) % 8:
        raise ValueError("retail MAC input must be padded to 8 bytes")
    ka, kb = key[:8], key[8:16]
    state = bytes(8)
    for i in range(0, len(data), 8):
        block = bytes(a ^ b for a, b in zip(state, data[i : i + 8], strict=True))
        state = _des_ecb(ka, block)
    state = _des_ecb(kb, state, decrypt=True)
    return _des_ecb(ka, state)


def aes_cbc(key: bytes, data: bytes, *, decrypt: bool = False, iv: bytes = bytes(16)) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def aes_ecb(key: bytes, block: bytes) -> bytes:
    op = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block: a DES/AES primitive
    return op.update(block) + op.finalize()


def aes_cmac(key: bytes, data: bytes) -> bytes:
    """Full 16-byte AES-CMAC; SM and PACE tokens use its first 8 bytes."""
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()
