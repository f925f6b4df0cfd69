"""`egate bench fuzz`: a longer fuzz run over every outside input, and a size-doubling cost check.

For each target of tools/bench/fuzz_targets.py: hypothesis runs `--examples` inputs (random bytes, mutated valid
inputs, JSON shapes) and reports any exception that escaped; then the target's costly input is timed at
sizes n, 2n, 4n (best of 5) and the doubling ratios are reported: about 2 is linear, about 4 quadratic.
Needs the dev extra (hypothesis).
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from typing import Any

import typer

from egate.tools.bench.fuzz_targets import TARGETS, FuzzEnv, fuzz_env, strategy

SUPERLINEAR_RATIO = 3.0


def _fuzz(env: FuzzEnv, name: str, examples: int, seed: int) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    target = TARGETS[name]
    found: list[str] = []
    ran = 0

    @hseed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy(target, env))
    def run(data: bytes) -> None:
        nonlocal ran
        ran += 1
        try:
            target.run(env, data)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            found.append(f"{type(exc).__name__} at {where.filename}:{where.lineno} on {len(data)} bytes")
            if len(found) >= 20:
                raise

    started = time.perf_counter()
    with contextlib.suppress(Exception):  # the findings are already recorded
        run()
    return {"examples": ran, "seconds": round(time.perf_counter() - started, 2), "failures": sorted(set(found))}


def _growth(env: FuzzEnv, name: str, base: int) -> dict[str, Any]:
    target = TARGETS[name]
    seconds = []
    for size in (base, 2 * base, 4 * base):
        data = target.worst_case(env, size)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            target.run(env, data)
            best = min(best, time.perf_counter() - t0)
        seconds.append(best)
    ratios = [round(seconds[i + 1] / max(seconds[i], 1e-6), 2) for i in range(2)]
    return {
        "sizes": [base, 2 * base, 4 * base],
        "ms": [round(s * 1e3, 2) for s in seconds],
        "doubling_ratios": ratios,
        # Both doublings must exceed the ratio: one slow sample on a busy machine is noise, a quadratic
        # parser is slow at every size.
        "superlinear": min(ratios) > SUPERLINEAR_RATIO,
    }


def fuzz_command(
    examples: int = typer.Option(2000, "--examples", min=1, help="Fuzz inputs per target."),
    size: int = typer.Option(262_144, "--size", min=1024, help="Smallest input of the doubling check, in bytes."),
    target: list[str] = typer.Option([], "--target", help="Only these targets (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Hypothesis seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Fuzz every parser and handler of outside input; report escaped exceptions and cost growth."""
    names = target or sorted(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        typer.echo(f"unknown target {unknown[0]!r}: choose from {', '.join(sorted(TARGETS))}", err=True)
        raise typer.Exit(2)
    report: dict[str, Any] = {}
    with fuzz_env() as env:
        for name in names:
            report[name] = {"fuzz": _fuzz(env, name, examples, seed), "growth": _growth(env, name, size)}
    bad = any(r["fuzz"]["failures"] or r["growth"]["superlinear"] for r in report.values())
    if as_json:
        typer.echo(json.dumps({"ok": not bad, "targets": report}))
    else:
        for name, r in report.items():
            f, g = r["fuzz"], r["growth"]
            typer.echo(
                f"{name:>8}: {f['examples']} inputs in {f['seconds']} s, {len(f['failures'])} failures; "
                f"cost at {g['sizes']} bytes: {g['ms']} ms (x{g['doubling_ratios']})"
            )
            for failure in f["failures"]:
                typer.echo(f"          ! {failure}")
    raise typer.Exit(1 if bad else 0)


def register(app: typer.Typer) -> None:
    app.command("fuzz")(fuzz_command)
