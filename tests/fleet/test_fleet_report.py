"""`egate ops report`: per-gate biometric health from stored outcomes; a degrading gate is flagged."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from egate.tools.ops.report import ks_distance, robust_outliers
from egate.tools.ops.store import Store
from egate.tools.sim.fleet import synthetic_outcome

ROOT = Path(__file__).resolve().parents[2]


def _fill(store: Store) -> None:
    rng = random.Random(3)
    now = datetime.now(timezone.utc)
    batch = []
    for g in range(12):
        gate = f"gate-{g:02d}"
        seq = 0
        for day in range(20, 0, -1):  # 13 baseline days, then the 7-day window
            in_window = day <= 7
            degraded = gate == "gate-05" and in_window  # its camera drifts out of focus
            for _ in range(15):
                seq += 1
                when = now - timedelta(days=day - 0.5, minutes=rng.uniform(0, 600))
                payload = synthetic_outcome(
                    gate, rng, score_mean=0.58 if degraded else 0.72, refer_rate=0.35 if degraded else 0.08, when=when
                )
                batch.append(
                    (
                        "site-r",
                        {
                            "id": str(uuid.uuid4()),
                            "seq": seq,
                            "gate": gate,
                            "kind": "outcome",
                            "ts": when.isoformat(),
                            "payload": payload,
                        },
                    )
                )
    batch.append(
        (
            "site-r",
            {
                "id": str(uuid.uuid4()),
                "seq": 10_000,
                "gate": "gate-07",
                "kind": "event",
                "ts": (now - timedelta(days=1)).isoformat(),
                "payload": {"type": "tailgate", "severity": "alarm", "details": {}},
            },
        )
    )
    store.store_batch(batch)


@pytest.mark.slow
def test_report_flags_the_degrading_gate_and_writes_plots(tmp_path: Path) -> None:
    db = tmp_path / "ops.sqlite"
    with Store.open(str(db)) as store:
        _fill(store)
    out = tmp_path / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "egate.tools.cli",
            "ops",
            "report",
            "--since",
            "7d",
            "--baseline",
            "30d",
            "--db",
            str(db),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # alerts raised
    result = json.loads(proc.stdout)
    flagged = {(a["gate"], a["alert"]) for a in result["alerts"]}
    assert ("gate-05", "score_drift_vs_baseline") in flagged
    assert ("gate-05", "median_score_far_from_fleet") in flagged
    assert ("gate-05", "referral_rate_far_from_fleet") in flagged
    assert ("gate-07", "alarm_tailgate") in flagged
    assert {gate for gate, _ in flagged} == {"gate-05", "gate-07"}
    gates = {g["gate"]: g for g in result["gates"]}
    assert gates["gate-03"]["transactions"] == 7 * 15
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 4
    assert "gate-05" in text
    # One row per gate, and one per site and timezone.utc day of the 7-day window (7 or 8 calendar days).
    assert text.count("<td>site-r</td>") - 12 in (7, 8)


def test_statistics_helpers() -> None:
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert ks_distance([1, 2, 3], [10, 11, 12]) == 1.0
    values = {f"g{i}": 0.08 + 0.001 * i for i in range(10)} | {"bad": 0.4}
    assert set(robust_outliers(values, 3.5)) == {"bad"}
