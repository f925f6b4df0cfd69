"""What egate needs from Python 3.11 that Python 3.10 lacks (JetPack 6 runs Ubuntu 22.04's Python 3.10).

Lives in `drivers` because every layer that needs it may import drivers (edge and tools do).
"""

from __future__ import annotations

import sys
from enum import Enum


class StrEnum310(str, Enum):
    """Python 3.11's `enum.StrEnum` for 3.10: members are strings, and str() and format() give the value
    (a plain `(str, Enum)` gives 'Class.MEMBER' from str(), which would leak into logs and records)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return str(self.value).__format__(spec)

    @staticmethod
    def _generate_next_value_(name: str, start: int, count: int, last_values: list[str]) -> str:
        return name.lower()


if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - exercised on Python 3.10 only
    StrEnum = StrEnum310

__all__ = ["StrEnum", "StrEnum310"]
