"""Where egate's shipped files and a developer's data are, in an installed egate and in a checkout alike.

Shipped files (the demo config, the demo clips, the systemd units) are package data, found through importlib.resources;
nothing here assumes the code runs from a git checkout. Only developer conveniences (the shared test
data beside a checkout) look for one, and say so.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

DEMO_MEDIA = Path(str(files("egate.tools.demo") / "media"))
DEMO_CONFIG = Path(str(files("egate.config") / "demo.toml"))
SYSTEMD_UNITS = Path(str(files("egate.systemd")))


def checkout_root() -> Path | None:
    """The source checkout this egate runs from (`pip install -e`), or None for an installed egate."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "edge").is_dir() else None


def shared_data_dir() -> Path:
    """Third-party test data: `$EGATE_SHARED_DATA`, else `../shared/data` beside a checkout."""
    env = os.environ.get("EGATE_SHARED_DATA")
    if env:
        return Path(env)
    root = checkout_root()
    return (root.parent if root else Path.cwd()) / "shared" / "data"
