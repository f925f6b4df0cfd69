"""`egate bench lane`: the whole lane's speed, measured through the real daemon (`egate run`).

Runs `egate.tools.rig.lane.LaneRig` (local mosquitto, OSDP turnstile simulator, signed gallery over MQTT)
with the camera in `lockstep` pacing: the next frame is read only when the face worker took the last
one, so the camera never waits for the clock and never drops a frame: frames per second is what the
engine and the lane sustain on this machine. A frame waits, at most, for the previous frame's
inference, as with a live camera at least as fast as the engine: `frame_to_open` (the frame that
completed a capture -> the turnstile's open command, from the outcome records) includes that wait.

Reported (JSON with --json):
- `fps`: frames processed per second over the lane clip (empty lane frames included: they cost a
  detection only) and `fps_face_frames` (1000 / median inference time of frames with a face);
- `engine_ms`: per-stage p50/p95 of the last 256 frames (`engines.status`) and of the frames the
  sessions chose (outcome records' `engine_<stage>`);
- `frame_to_open_ms`: p50/p95/max over every ACCEPT; the target is p95 < 150 ms.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from egate.tools.rig.lane import LaneRig, PlanItem

TARGET_P95_MS = 150.0
# Gaps long enough (~0.3-0.5 s in lockstep) for a passage or a refer hold to end before the next traveller.
BENCH_ROUND: tuple[PlanItem, ...] = ("female", 90, "male", 90, "stranger", 90)


def _pct(values: list[float]) -> dict[str, float | int]:
    import numpy as np

    if not values:
        return {"n": 0}
    data = np.asarray(values, dtype=np.float64)
    p50, p95 = np.percentile(data, [50, 95])
    return {
        "n": int(data.size),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "max": round(float(data.max()), 2),
    }


def run_bench(folder: Path, rounds: int, timeout_s: float) -> dict[str, Any]:
    plan: list[PlanItem] = [6]
    for _ in range(rounds):
        plan.extend(BENCH_ROUND)
    config = {
        # Fast turnstile and short holds: in lockstep the clip plays faster than real time.
        "lane": {"refer_hold_s": 0.3},
    }
    with LaneRig(folder, plan=None, pacing="lockstep", time_scale=0.05, config=config) as rig:
        scene = rig.prepare_scene(plan)
        before = rig.camera_stats()  # the camera switches to the scene within a frame or two of show()
        began = time.monotonic()
        rig.show(scene)
        target = before["frames"] + scene.frames + 2
        rig.wait_status(
            lambda _s: rig.camera_stats()["frames"] >= target, timeout_s, "the camera to play the bench clip", 0.1
        )
        elapsed = time.monotonic() - began
        after = rig.camera_stats()
        engines = rig.call("engines.status")
        rig.wait_status(lambda s: s["state"] == "idle", 30, "the lane idle after the clip")
        recorded = len(rig.call("outcomes", n=100)["outcomes"])
        records = rig.wait_outcomes(recorded, timeout=15)
        startup = dict(rig.times.steps)
    delivered = after["delivered"] - before["delivered"]
    accepts = [r for r in records if r["decision"] == "accept"]
    aborted = [r for r in records if any(str(x).startswith("ABORTED") for x in r["reasons"])]
    frame_to_open = [float(r["timings_ms"]["frame_to_open"]) for r in accepts if "frame_to_open" in r["timings_ms"]]
    chosen: dict[str, list[float]] = {}
    for r in records:
        for key, ms in r["timings_ms"].items():
            if key.startswith("engine_"):
                chosen.setdefault(key.removeprefix("engine_"), []).append(float(ms))
    face_frame = _pct(chosen.get("frame", []))
    f2o = _pct(frame_to_open)
    decisions: dict[str, int] = {}
    for r in records:
        key = f"{r['decision']}:{'+'.join(r['reasons'])}"
        decisions[key] = decisions.get(key, 0) + 1
    return {
        "bench": "lane",
        "pacing": "lockstep",
        "rounds": rounds,
        "travellers_planned": scene.travellers,
        "frames": delivered,
        "frames_dropped": after["dropped"] - before["dropped"],
        "seconds": round(elapsed, 2),
        "fps": round(delivered / elapsed, 1) if elapsed > 0 else None,
        "fps_face_frames": round(1000.0 / float(face_frame["p50"]), 1) if face_frame.get("p50") else None,
        "engine_ms": {
            "last_256_frames": engines.get("stages", {}),
            "chosen_frames": {stage: _pct(values) for stage, values in sorted(chosen.items())},
        },
        "frame_to_open_ms": f2o,
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": bool(f2o.get("p95") is not None and float(f2o["p95"]) < TARGET_P95_MS),
        "outcomes": decisions,
        "aborted": len(aborted),
        "backend": engines.get("backend"),
        "model_id": engines.get("model_id"),
        "startup_s": startup,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def lane_command(
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON line."),
    rounds: int = typer.Option(
        10, "--rounds", min=1, max=50, help="Times the bench round (2 expected, 1 stranger) plays."
    ),
    timeout: float = typer.Option(300.0, "--timeout", help="Give up after this many seconds of clip."),
    keep: Path | None = typer.Option(None, "--keep", help="Run in this folder and keep it (daemon log, config)."),
) -> None:
    """Lane speed through the real daemon: fps, per-stage engine times, frame->open p50/p95."""
    from egate.engines.models import default_model_dir
    from egate.tools.rig.local_broker import MOSQUITTO

    if shutil.which(MOSQUITTO) is None and not Path(MOSQUITTO).exists():
        typer.echo("egate bench lane: mosquitto not installed (make setup, or apt-get install mosquitto)", err=True)
        raise typer.Exit(2)
    if not (default_model_dir() / "manifest.json").exists():
        typer.echo(f"error: no face models in {default_model_dir()}\nfix: egate models build", err=True)
        raise typer.Exit(2)
    if keep is not None:
        result = run_bench(keep, rounds, timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="egate-bench-lane-") as tmp:
            result = run_bench(Path(tmp) / "lane", rounds, timeout)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    f2o = result["frame_to_open_ms"]
    typer.echo(
        f"lane: {result['frames']} frames in {result['seconds']} s = {result['fps']} fps "
        f"({result['fps_face_frames']} fps on frames with a face)\n"
        f"frame->open over {f2o.get('n', 0)} accepts: p50 {f2o.get('p50')} ms, p95 {f2o.get('p95')} ms "
        f"(target < {TARGET_P95_MS:.0f} ms: {'met' if result['meets_target'] else 'NOT met'})\n"
        f"outcomes: {result['outcomes']}"
    )
    for stage, pct in result["engine_ms"]["last_256_frames"].items():
        typer.echo(f"  {stage:<10} p50 {pct['p50_ms']:>7} ms  p95 {pct['p95_ms']:>7} ms")


def register(app: typer.Typer) -> None:
    """Add `lane` to the `bench` group."""
    app.command("lane")(lane_command)
