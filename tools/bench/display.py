"""`egate bench display`: lane guidance event -> the traveller's screen rendered the change.

A whole local lane (egate.tools.rig.lane: the real daemon, the turnstile simulator, mosquitto) with the
display process and a headless Chromium on the kiosk page. The lane changes state through the daemon's
own paths (maintenance on/off over the control socket, each a guidance event: out of service / ready);
the page stamps each change when it is on screen (`performance.timeOrigin + now()` in the next
animation frame) and the latency is that minus the wall time of the lane event that made it.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

GOAL_P95_MS = 100.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_bench(changes: int, workdir: Path) -> dict[str, Any]:
    from egate.tools.display.browser import open_browser, renders, wait_screen
    from egate.tools.rig.lane import LaneRig

    with LaneRig(workdir, plan=None, push_gallery=False, display=True) as rig:
        assert rig.display_url is not None
        driver = open_browser()
        try:
            driver.get(rig.display_url)
            wait_screen(driver, "welcome_exit", 20)
            start = len(renders(driver))
            began = time.monotonic()
            for i in range(changes):
                on = i % 2 == 0
                rig.call("maintenance", on=on)
                want = start + i + 1
                deadline = time.monotonic() + 10
                while len(renders(driver)) < want:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the page rendered {len(renders(driver)) - start} of {i + 1} changes")
                    time.sleep(0.005)
            elapsed = time.monotonic() - began
            rows = renders(driver)[start:]
        finally:
            driver.quit()
    latencies = [r["shown"] - r["at"] for r in rows]
    screens = sorted({r["screen"] for r in rows})
    return {
        "changes": len(latencies),
        "screens": screens,
        "latency_ms": {
            "p50": round(_percentile(latencies, 0.50), 1),
            "p95": round(_percentile(latencies, 0.95), 1),
            "p99": round(_percentile(latencies, 0.99), 1),
            "max": round(max(latencies), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        "goal_p95_ms": GOAL_P95_MS,
        "meets_goal": _percentile(latencies, 0.95) <= GOAL_P95_MS,
        "changes_per_s": round(len(latencies) / elapsed, 1),
        "path": "lane event (daemon) -> feed socket -> egate display serve -> SSE -> Chromium render",
    }


def bench_display(
    changes: int = typer.Option(200, "--changes", min=2, max=5000, help="State changes to measure."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Latency from the lane's guidance event to the kiosk page's rendered change (p50/p95/p99)."""
    with tempfile.TemporaryDirectory(prefix="egate-bench-display-") as tmp:
        result = run_bench(changes, Path(tmp) / "lane")
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    lat = result["latency_ms"]
    typer.echo(
        f"{result['changes']} changes: p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms (goal p95 <= {GOAL_P95_MS:g} ms: {'met' if result['meets_goal'] else 'NOT met'})"
    )


def register(app: typer.Typer) -> None:
    app.command("display")(bench_display)
