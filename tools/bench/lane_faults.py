"""`egate bench lane-kill`: SIGKILL the real daemon during accepted passages and audit what is left.

The lane rig (tools/rig/lane.py) plays an enrolled traveller in a loop; each round waits for the
turnstile simulator to receive an entry release (a real opening), then kills `egate run` with SIGKILL
at one of three points: right after the open command, mid-passage (a random delay), or right after the
passage report. The daemon is started again on the same state and the next round begins.

At the end the daemon drains its outbox over MQTT and the audit compares what the controller really did
(the simulator's command history) with what ops received:

- every opening has an ACCEPT decision record committed before it (write-ahead),
- no txn id has two decision records, no opening is left without a record,
- no duplicate openings (openings <= ACCEPT decisions, matched in time order).

Redeliveries of the same message id after a restart (at-least-once MQTT) are counted, not failures.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from egate.tools.rig.lane import LaneRig

KILL_POINTS = ("after_open", "mid_passage", "after_report")
# The looped lane scene: the enrolled man (frontal, ~1.2 s) then an empty lane.
TRAVELLER_PLAN: tuple[str | int, ...] = ("male", 16)


def _wall_of(rig: LaneRig, mono: float) -> float:
    """A monotonic instant of this process as wall time (the records carry wall time)."""
    return time.time() - (time.monotonic() - mono)


def run_sigkill_trial(
    rig: LaneRig,
    passages: int,
    *,
    seed: int = 13,
    round_timeout_s: float = 60.0,
    progress: bool = False,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """`passages` rounds of open -> SIGKILL -> restart on a started rig; returns the audit figures.

    `max_seconds`: start no new round after this long (the figures say how many rounds ran)."""
    assert rig.sim is not None and rig.mqtt is not None
    rng = random.Random(seed)
    kills: Counter[str] = Counter()
    started = time.monotonic()
    rig.play(list(TRAVELLER_PLAN), loop=True)
    seen = len(rig.gate_openings())
    for i in range(passages):
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
        point = KILL_POINTS[i % len(KILL_POINTS)]
        # The first opening since the last kill: no traveller was walking then (see _gate_at_rest).
        if not _wait_opening(rig, seen, round_timeout_s):
            raise TimeoutError(f"round {i}: no opening within {round_timeout_s} s\n{rig.log_tail()}")
        walked = rig.sim.passages
        if point == "mid_passage":
            # Fault injection at a random instant of the passage (not a synchronisation wait).
            time.sleep(rng.uniform(0.05, 1.0) * rig.time_scale)
        elif point == "after_report":
            rig.sim.wait_for(lambda s, w=walked: s.passages > w, round_timeout_s)
        rig.kill_daemon()
        kills[point] += 1
        seen = len(rig.gate_openings())
        # The traveller finishes walking through the released leaf before the gate comes back (a daemon
        # starting under a traveller in the leaf sees intrusion: that case is the emergency work's).
        if not rig.sim.wait_for(_gate_at_rest, round_timeout_s):
            raise TimeoutError(f"round {i}: the simulated gate did not come to rest after the kill")
        rig.start_daemon()
        _back_to_idle(rig, round_timeout_s)
        if progress:
            sys.stderr.write(f"lane-kill: round {i + 1}/{passages} ({point}), openings {seen}\n")
    rig.show(rig.prepare_scene([]))  # an empty lane: no new traveller while the outbox drains
    openings = rig.gate_openings()
    drained = _wait_drained(rig, timeout=120.0)
    return {**audit(rig.mqtt.records, openings, rig), "kills": dict(kills), "drained": drained,
            "redeliveries": rig.mqtt.duplicates, "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def _wait_opening(rig: LaneRig, seen: int, timeout: float) -> bool:
    """Until the controller received an opening after the first `seen`. Intrusion alarms the simulated
    traveller stream may cause around a restart are cleared as an officer would (not what is audited)."""
    assert rig.sim is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.sim.wait_for(lambda _s: len(rig.gate_openings()) > seen, 0.5):
            return True
        if rig.status()["state"] == "alarm":
            rig.call("alarm.clear")
    return False


def _gate_at_rest(sim: Any) -> bool:
    """Entry locked (the controller's own link-loss rule) and no passage sensor or door input active."""
    inputs = [*sim.io.passage_sensor_inputs]
    if sim.io.door_position_input is not None:
        inputs.append(sim.io.door_position_input)
    return not sim.entry_free and not any(sim.input_active(n) for n in inputs)


def _back_to_idle(rig: LaneRig, timeout: float) -> None:
    """Wait for the lane to be idle again; an alarm raised by the restart is cleared as an officer would."""

    def idle(status: dict[str, Any]) -> bool:
        if status["state"] == "alarm":
            rig.call("alarm.clear")
        return bool(status["state"] == "idle")

    rig.wait_status(idle, timeout, "the lane idle after the restart", poll_s=0.1)


def _wait_drained(rig: LaneRig, timeout: float) -> bool:
    """Until the daemon's outbox is empty (every committed record acknowledged by the broker)."""
    from egate.tools.diag.selftest_checks import read_outbox_facts

    deadline = time.monotonic() + timeout
    config = rig_outbox_config(rig)
    path = rig.state_dir / "outbox.sqlite"
    while time.monotonic() < deadline:
        if read_outbox_facts(path, config).depth == 0:
            return True
        time.sleep(0.2)
    return False


def rig_outbox_config(rig: LaneRig) -> Any:
    from egate.edge.settings.link import OutboxConfig

    return OutboxConfig.model_validate(rig.config().get("outbox", {}))


def audit(records: list[dict[str, Any]], openings: list[float], rig: LaneRig) -> dict[str, Any]:
    """Match real openings with ACCEPT decision records in time order (each record serves one opening)."""
    decisions = [r for r in records if r.get("record") == "decision"]
    per_txn = Counter(r["txn_id"] for r in decisions)
    accepts = sorted(
        datetime.fromisoformat(str(r["ended_at"]).replace("Z", "+00:00")).timestamp()
        for r in decisions
        if r.get("decision") == "accept"
    )
    passages = Counter(r["txn_id"] for r in records if r.get("record") == "passage")
    unrecorded = 0
    used = 0
    for mono in sorted(openings):
        # The k-th opening needs k ACCEPT decisions stamped before it (the record is stamped, committed,
        # then the gate is told): otherwise an opening happened that no committed record explains.
        before = sum(1 for t in accepts if t <= _wall_of(rig, mono))
        if before > used:
            used += 1
        else:
            unrecorded += 1
    return {
        "openings": len(openings),
        "accept_records": len(accepts),
        "decision_records": len(decisions),
        "passage_records": sum(passages.values()),
        "openings_without_record": unrecorded,
        "duplicate_decision_records": sum(n - 1 for n in per_txn.values() if n > 1),
        "duplicate_passage_records": sum(n - 1 for n in passages.values() if n > 1),
        "duplicate_openings": max(0, len(openings) - len(accepts)),
    }


def lane_kill_command(
    passages: int = typer.Option(30, "--passages", min=1, max=10_000, help="Accepted passages to kill the daemon in."),
    seed: int = typer.Option(13, "--seed", help="Seed of the mid-passage kill delays."),
    max_seconds: float = typer.Option(0.0, "--max-seconds", help="Start no new round after this long (0: no limit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON line."),
    keep: Path | None = typer.Option(None, "--keep", help="Run in this folder and keep it (daemon log, config)."),
) -> None:
    """SIGKILL `egate run` during accepted passages; audit openings against committed records."""
    from egate.tools.rig.lane import LaneRig

    def run(folder: Path) -> dict[str, Any]:
        with LaneRig(folder, plan=None, time_scale=0.5) as rig:
            return run_sigkill_trial(rig, passages, seed=seed, progress=True, max_seconds=max_seconds or None)

    if keep is not None:
        result = run(keep)
    else:
        with tempfile.TemporaryDirectory(prefix="egate-bench-kill-") as tmp:
            result = run(Path(tmp) / "lane")
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        typer.echo(json.dumps(result, indent=2))
    bad = result["openings_without_record"] + result["duplicate_openings"] + result["duplicate_decision_records"]
    raise typer.Exit(1 if bad or not result["drained"] else 0)


def register(app: typer.Typer) -> None:
    """Add `lane-kill` to the `bench` group."""
    app.command("lane-kill")(lane_kill_command)
