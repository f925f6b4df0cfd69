"""The gate's trust store: which ops public keys may sign bundles, by key id.

Kept as one small JSON file under `<state_dir>/trust/`. The first key is installed when the gate is
provisioned (`egate ops keys install`); after that keys change only through a `keys` bundle signed by
a key the gate trusts at that moment (rotation), and a revoked key id stays refused for good, even if
a later keys bundle lists it again (a stolen key must not come back through an old bundle).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from egate.engines.atomic_file import atomic_write_bytes

log = structlog.get_logger(__name__)

KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TRUST_FILE_NAME = "trust.json"

KeyStatus = Literal["trusted", "revoked", "unknown"]


def key_id_for(public_raw: bytes) -> str:
    """The key id ops tools derive from a raw 32-byte Ed25519 public key (stable, short, not secret)."""
    return "ops-" + hashlib.sha256(public_raw).hexdigest()[:16]


class PublicKeyEntry(BaseModel):
    """One ops signing key as it travels (keys bundle, `.pub.json` file) and as the gate stores it."""

    model_config = ConfigDict(extra="forbid")

    entry_version: Literal[1] = Field(1, description="Layout version of this entry.")
    key_id: str = Field(..., pattern=KEY_ID_PATTERN, description="Id bundles name in their header.")
    public_key: str = Field(..., description="Raw 32-byte Ed25519 public key, standard base64.")
    comment: str = Field("", max_length=200, description="Free text for humans (who holds the key).")

    @field_validator("public_key")
    @classmethod
    def _is_ed25519(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("public_key must be standard base64 of the raw 32-byte Ed25519 key") from None
        if len(raw) != 32:
            raise ValueError(f"public_key must decode to 32 bytes (Ed25519), got {len(raw)}")
        return value

    def raw(self) -> bytes:
        return base64.b64decode(self.public_key)

    def load(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw())


class KeysPayload(BaseModel):
    """Payload of a `keys` bundle: the complete set of keys the gate should trust afterwards.

    A full set rather than a diff, so applying the same bundle twice is harmless; `revoked` ids are
    added to the gate's permanent revocation list.
    """

    model_config = ConfigDict(extra="forbid")

    payload_version: Literal[1] = Field(1, description="Layout version of the keys payload.")
    trusted: list[PublicKeyEntry] = Field(..., min_length=1, max_length=64, description="Keys to trust.")
    revoked: list[str] = Field(default_factory=list, max_length=1024, description="Key ids to refuse forever.")

    @field_validator("revoked")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for key_id in value:
            if not re.fullmatch(KEY_ID_PATTERN, key_id):
                raise ValueError(f"revoked key id {key_id!r} is not a valid key id")
        return value


class TrustFile(BaseModel):
    """On-disk layout of `<state_dir>/trust/trust.json`."""

    model_config = ConfigDict(extra="forbid")

    trust_version: Literal[1] = Field(1, description="Layout version of the trust file.")
    keys: list[PublicKeyEntry] = Field(default_factory=list, description="Keys trusted now.")
    revoked: list[str] = Field(default_factory=list, description="Key ids refused forever.")
    updated_at: AwareDatetime | None = Field(None, description="When the set last changed.")


class TrustError(RuntimeError):
    """The trust store cannot be read or a change to it is not allowed; the message says why."""


class TrustStore:
    """Ops public keys by key id, persisted atomically in `directory/trust.json`. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self._path = Path(directory) / TRUST_FILE_NAME
        self._lock = threading.Lock()
        self._file = self._read()
        self._keys = {entry.key_id: entry.load() for entry in self._file.keys}

    @property
    def path(self) -> Path:
        return self._path

    def _read(self) -> TrustFile:
        try:
            text = self._path.read_bytes()
        except FileNotFoundError:
            return TrustFile()
        try:
            return TrustFile.model_validate_json(text)
        except ValidationError as exc:
            raise TrustError(
                f"trust store {self._path} is corrupt ({exc.error_count()} errors, first: "
                f"{exc.errors()[0]['msg']}): reinstall the ops key with `egate ops keys install`"
            ) from None

    def _write(self) -> None:
        self._file.updated_at = datetime.now(timezone.utc)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self._file.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        atomic_write_bytes(self._path, data)
        self._keys = {entry.key_id: entry.load() for entry in self._file.keys}

    def status(self, key_id: str) -> KeyStatus:
        with self._lock:
            if key_id in self._file.revoked:
                return "revoked"
            return "trusted" if key_id in self._keys else "unknown"

    def public_key(self, key_id: str) -> Ed25519PublicKey | None:
        """The trusted key with this id, or None when unknown or revoked."""
        with self._lock:
            if key_id in self._file.revoked:
                return None
            return self._keys.get(key_id)

    def key_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    def revoked_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._file.revoked)

    def install(self, entry: PublicKeyEntry) -> None:
        """Provisioning only (local, by a technician): trust `entry` without a signed bundle."""
        with self._lock:
            if entry.key_id in self._file.revoked:
                raise TrustError(f"key {entry.key_id} was revoked on this gate and cannot be installed again")
            self._file.keys = [k for k in self._file.keys if k.key_id != entry.key_id] + [entry]
            self._write()
        log.info("trust_key_installed", key_id=entry.key_id)

    def revoke(self, key_id: str) -> None:
        """Refuse `key_id` from now on (local revocation; ops revoke through a keys bundle)."""
        with self._lock:
            if key_id not in self._file.revoked:
                self._file.revoked.append(key_id)
            self._file.keys = [k for k in self._file.keys if k.key_id != key_id]
            self._write()
        log.warning("trust_key_revoked", key_id=key_id)

    def apply_keys(self, payload: KeysPayload, signed_by: str) -> None:
        """Replace the trusted set with a verified keys bundle's payload (rotation and revocation).

        The caller has verified the bundle (signature by `signed_by`, a key trusted right now).
        """
        with self._lock:
            revoked = sorted(set(self._file.revoked) | set(payload.revoked))
            keys = [k for k in payload.trusted if k.key_id not in revoked]
            if not keys:
                raise TrustError(
                    "keys bundle would leave the gate with no trusted key (every listed key is revoked): "
                    "ops must list at least one valid key"
                )
            before = set(self._keys)
            self._file.keys = keys
            self._file.revoked = revoked
            self._write()
            after = set(self._keys)
        log.info(
            "trust_keys_rotated",
            signed_by=signed_by,
            added=sorted(after - before),
            removed=sorted(before - after),
            revoked=len(revoked),
        )
