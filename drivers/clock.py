"""Timestamps: always timezone-aware UTC, the only kind records and wire payloads carry.

Lives in `drivers` so drivers, edge and tools can all share it (drivers import nothing above them).
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
