"""Suite-wide pytest setup. Area fixtures live in tests/<area>_fixtures.py and are imported by their tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
