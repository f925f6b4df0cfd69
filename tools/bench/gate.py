"""`egate bench gate`: OSDP latencies of the turnstile driver against the simulated controller.

Control panel and simulator run in this process over a real PTY pair with a secure channel, so both
ends share one clock (and one GIL: on the device the controller is a separate box, so figures here
are an upper bound for the panel's side).
- command_to_pd_ms: `open_for_passage()` called -> the controller's osdp_OUT handler has it;
- command_ack_ms:   `open_for_passage()` called -> it returned True (the PD's acknowledgement);
- input_to_cp_ms:   the controller queued an osdp_ISTATR report -> the GateEvent reached the callback.
"""

from __future__ import annotations

import functools
import json
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import typer

from egate.drivers.turnstile.base import GateEvent
from egate.drivers.turnstile.config import OsdpGateConfig
from egate.drivers.turnstile.gates.osdp import OsdpGateController
from egate.tools.sim.osdp_gate import OUT_TEMPORARY_ON, TurnstileSimulator


def _summary(samples_s: list[float]) -> dict[str, float | int]:
    ms = sorted(s * 1000.0 for s in samples_s)
    if not ms:
        return {"n": 0}
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return {
        "n": len(ms),
        "p50": round(statistics.median(ms), 2),
        "p95": round(p95, 2),
        "max": round(ms[-1], 2),
    }


class _Collector:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[tuple[float, GateEvent]] = []

    def __call__(self, event: GateEvent) -> None:
        with self.cond:
            self.events.append((time.monotonic(), event))
            self.cond.notify_all()

    def wait_kind(self, kind: str, after: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, event in self.events[after:]:
                    if event.kind == kind:
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _history_reaches(count: int, sim: TurnstileSimulator) -> bool:
    return len(sim.history) >= count


def run_gate_bench(commands: int, inputs: int, refresh_interval_ms: float) -> dict[str, Any]:
    scbk = secrets.token_bytes(16)
    with tempfile.TemporaryDirectory(prefix="egate-bench-gate-") as tmp:
        link = Path(tmp) / "gate"
        config = OsdpGateConfig(
            url=str(link), refresh_interval_ms=refresh_interval_ms, osdp_log_level="error", reconnect_initial_s=0.2
        )
        collector = _Collector()
        sim = TurnstileSimulator(
            scbk=scbk,
            io=config.io,
            time_scale=0.02,
            link_path=link,
            walk_when_released=False,
            refresh_interval_ms=refresh_interval_ms,
        )
        sim.start()
        gate = OsdpGateController(config, scbk, collector)
        started = time.monotonic()
        gate.start()
        try:
            if not _wait(lambda: gate.link_state == "up" and gate.status().inputs is not None, 15.0):
                raise RuntimeError(f"gate link did not come up within 15 s: {gate.status()}")
            link_up_s = time.monotonic() - started
            entry = config.io.entry_release_output
            to_pd: list[float] = []
            acks: list[float] = []
            for i in range(commands):
                before = len([c for c in sim.commands_for(entry) if c.control_code == OUT_TEMPORARY_ON])
                t0 = time.monotonic()
                if not gate.open_for_passage(f"bench-{i}", 5.0):
                    raise RuntimeError(f"open {i} refused: {gate.status()}")
                acks.append(time.monotonic() - t0)

                def pd_has_it(s: TurnstileSimulator, n: int = before) -> bool:
                    return len([c for c in s.commands_for(entry) if c.control_code == OUT_TEMPORARY_ON]) > n

                if sim.wait_for(pd_has_it, 2.0):
                    opened = [c for c in sim.commands_for(entry) if c.control_code == OUT_TEMPORARY_ON]
                    to_pd.append(opened[before].at - t0)
                gate.lock()  # entry off + egress free: two osdp_OUT round trips
                # time each open alone, not queued behind the previous lock's commands
                sim.wait_for(functools.partial(_history_reaches, len(sim.history) + 2), 2.0)
            tailgate = config.io.tailgate_input
            to_cp: list[float] = []
            if tailgate is not None:
                for _ in range(inputs):
                    after = len(collector.events)
                    sim.trigger_tailgate()
                    arrived = collector.wait_kind("tailgate", after, 5.0)
                    queued = [at for at, report in list(sim.report_log) if report[tailgate]]
                    if arrived is not None and queued:
                        to_cp.append(arrived - queued[-1])
                    _wait(lambda: (gate.status().inputs or {}).get("tailgate") is False, 5.0)
        finally:
            gate.close()
            sim.close()
    return {
        "version": 1,
        "bench": "gate",
        "transport": "pty, secure channel, CP and simulated PD in one process",
        "refresh_interval_ms": refresh_interval_ms,
        "link_up_s": round(link_up_s, 3),
        "command_to_pd_ms": _summary(to_pd),
        "command_ack_ms": _summary(acks),
        "input_to_cp_ms": _summary(to_cp),
    }


def bench_gate(
    commands: int = typer.Option(200, "--commands", min=1, max=100_000, help="open/lock cycles to time."),
    inputs: int = typer.Option(50, "--inputs", min=1, max=10_000, help="input events to time."),
    refresh_interval_ms: float = typer.Option(2.0, "--refresh-ms", min=0.5, max=20.0, help="libosdp refresh pause."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    soak: bool = typer.Option(
        False, "--soak", help="Soak instead: open/lock cycles for --minutes with every core busy; link drops, p99."
    ),
    minutes: float = typer.Option(10.0, "--minutes", min=0.05, max=24 * 60.0, help="Soak duration."),
    busy: int | None = typer.Option(None, "--busy", min=0, max=64, help="Soak busy-loop processes (default: cores)."),
    pipeline: bool = typer.Option(True, "--pipeline/--no-pipeline", help="Soak with the face pipeline running."),
) -> None:
    """OSDP command and input-event latencies against the simulated turnstile (p50/p95), or a soak."""
    if soak:
        from egate.tools.bench.gate_soak import run_soak

        soaked = run_soak(minutes, busy_loops=busy, face_pipeline=pipeline)
        if json_out:
            typer.echo(json.dumps(soaked))
            return
        ack = soaked["command_ack_ms"]
        typer.echo(
            f"{soaked['minutes']} min, {soaked['cycles']} cycles: link_drops={soaked['link_drops']} "
            f"refused={soaked['opens_refused']} ack p50={ack.get('p50')} p95={ack.get('p95')} "
            f"p99={ack.get('p99')} max={ack.get('max')} ms"
        )
        return
    result = run_gate_bench(commands, inputs, refresh_interval_ms)
    if json_out:
        typer.echo(json.dumps(result))
        return
    for name in ("command_to_pd_ms", "command_ack_ms", "input_to_cp_ms"):
        s = result[name]
        typer.echo(f"{name:18s} n={s.get('n')} p50={s.get('p50')} p95={s.get('p95')} max={s.get('max')}")


def register(app: typer.Typer) -> None:
    """Add `gate` to the given `bench` group."""
    app.command("gate")(bench_gate)
