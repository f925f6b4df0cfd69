"""The one way tests reach third-party data in ../shared/data.

The data is never copied into the project (the data folder's own SOURCES.md gives origin and licence).
When the folder is absent, the test that needs it is skipped with a message saying where it looks.
`../shared/holdout` is reserved for acceptance checks and is deliberately not reachable from here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """Root of the shared test data; `EGATE_SHARED_DATA` overrides the default `../shared/data`."""
    return Path(os.environ.get("EGATE_SHARED_DATA", _DEFAULT_ROOT))


def shared_data(relative: str) -> Path:
    """Path of `relative` under the shared data root, or skip the calling test with a clear reason."""
    if "holdout" in Path(relative).parts:
        raise ValueError("../shared/holdout is reserved for acceptance checks; tests must not read it")
    path = data_root() / relative
    if not path.exists():
        pytest.skip(
            f"shared test data {relative!r} not found under {data_root()} "
            "(clone the project beside ../shared or set EGATE_SHARED_DATA)"
        )
    return path
