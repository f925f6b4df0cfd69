"""Suite-wide pytest setup.

Layout: tests/<area>/test_<area>_*.py, one folder per area. A folder's conftest.py provides its fixtures
(test modules import only helpers, never fixtures); helpers used by one area sit in its folder, helpers
used by several in tests/support/, and tests/shared_data.py is the one way to the shared test data.
Long tests carry `@pytest.mark.slow`: `make test` runs everything, `make test-fast` (`-m "not slow"`) the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import logging  # noqa: E402

import pytest  # noqa: E402
import structlog  # noqa: E402

# Session fixtures used by several areas are registered here, once (pytest accepts `pytest_plugins`
# only in this top-level conftest); a folder's own fixtures come from its conftest.py.
pytest_plugins = ["tests.support.engine_fixtures"]


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts and ends with structlog's defaults: a test (or a CLI it invokes) that configures
    logging onto a captured stream must not leave later tests writing into a closed file."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
