"""Secrets come only from files in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).

Keys never live in config files or environment variables: systemd hands the daemon a private,
read-only directory (backed by the TPM with `LoadCredentialEncrypted=` on a device).
"""

from __future__ import annotations

import os
from pathlib import Path


class CredentialError(RuntimeError):
    """A credential is missing or unreadable; the message says which and how to provide it."""


def credentials_dir() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def read_credential(name: str) -> bytes:
    """Bytes of credential `name`, or a CredentialError naming the fix."""
    folder = credentials_dir()
    if folder is None:
        raise CredentialError(
            f"credential {name!r} needed but $CREDENTIALS_DIRECTORY is not set: run egate under systemd "
            f"with LoadCredential={name}:/etc/egate/credentials/{name}, or export CREDENTIALS_DIRECTORY "
            "pointing at a folder holding it"
        )
    path = folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(
            f"credential {name!r} not found in {folder}: add LoadCredential={name}:<file> to egate.service "
            f"(or place the file at {path})"
        ) from None
    except OSError as exc:
        raise CredentialError(f"credential {name!r} at {path} unreadable: {exc.strerror}") from None
    if not data:
        raise CredentialError(f"credential {name!r} at {path} is empty")
    return data


def credential_path(name: str) -> Path:
    """Path of a credential file for libraries that want a path (TLS certificates); checked to exist."""
    read_credential(name)
    folder = credentials_dir()
    assert folder is not None
    return folder / name
