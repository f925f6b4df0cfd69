"""The rule for a credential's name: a file in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).

A plain file name, never a path: config can name a credential but cannot point outside that folder.
Lives in `drivers` because driver and daemon config sections both name credentials.
"""

from __future__ import annotations

CREDENTIAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
CREDENTIAL_NAME_WORDS = "a file name: 1-128 letters, digits, '.', '-' or '_' (no folders)"
