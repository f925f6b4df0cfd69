"""Fuzzing every input from outside (MRZ, BCBP, serial framing, chunk messages, commands, bundles, control
requests) through the real code: no uncaught exception, and no cost that grows faster than the input.

The budget is small and fixed so `make test` stays fast; `egate bench fuzz` runs the same targets longer.
Growth is checked by counting calls (Python and C) for an input and one twice its size, not by timing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from egate.tools.bench.fuzz_targets import TARGETS, FuzzEnv, fuzz_env, strategy

BUDGET = 120  # examples per target


@pytest.fixture(scope="module")
def env() -> Iterator[FuzzEnv]:
    with fuzz_env() as e:
        yield e


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_no_input_escapes_as_an_exception(env: FuzzEnv, name: str) -> None:
    target = TARGETS[name]

    @settings(
        max_examples=BUDGET,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy(target, env))
    def run(data: bytes) -> None:
        target.run(env, data)

    for seed in target.seeds(env):
        target.run(env, seed)
    run()


def _calls(fn: Any) -> int:
    count = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_cost_grows_no_faster_than_the_input(env: FuzzEnv, name: str) -> None:
    target = TARGETS[name]
    size = 16_384
    small = _calls(lambda: target.run(env, target.worst_case(env, size)))
    large = _calls(lambda: target.run(env, target.worst_case(env, 2 * size)))
    # Linear work doubles (plus a constant); quadratic work would quadruple.
    assert large <= 2.5 * small + 200, (name, small, large)
