"""What the tests driving the real daemon through `egate.tools.rig.lane.LaneRig` share: the spacing of
their frame plans and their marks (skipped without mosquitto or the face models; `slow`, since every
test starts and stops a whole daemon)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from egate.tools.rig.local_broker import MOSQUITTO

MODEL_DIR = Path(__file__).resolve().parents[2] / ".cache" / "models"

LEAD_IN = 6  # empty frames before the first traveller
GAP = 30  # empty frames after a traveller (2.4 s: the passage or the refer hold ends first)

# What a rig needs on this machine.
NEEDS_RIG = [
    pytest.mark.skipif(
        not (shutil.which("mosquitto") or os.path.exists(MOSQUITTO)), reason="mosquitto is not installed"
    ),
    pytest.mark.skipif(
        not (MODEL_DIR / "manifest.json").exists() and not os.environ.get("EGATE_MODEL_DIR"),
        reason="face models not provisioned: run `egate models build` (make setup does)",
    ),
]

# A module of rig tests: `pytestmark = RIG` (modules that need a longer timeout list their own).
RIG = [pytest.mark.slow, pytest.mark.timeout(120), *NEEDS_RIG]
