"""Suite-wide pytest setup. Area fixtures live in tests/<area>_fixtures.py and are imported by their tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import logging  # noqa: E402

import pytest  # noqa: E402
import structlog  # noqa: E402

# Session-wide services (a RabbitMQ cluster, PostgreSQL) must be registered once, not per importing module.
pytest_plugins = ["tests.fleet.fleet_fixtures"]


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Each test starts and ends with structlog's defaults: a test (or a CLI it invokes) that configures
    logging onto a captured stream must not leave later tests writing into a closed file."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
