"""Fixtures for the turnstile tests: a real OSDP control panel against the simulated controller
over a real PTY pair, with a fresh random SCBK per test."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from egate.drivers.turnstile.base import GateEvent, GateEventKind
from egate.drivers.turnstile.config import OsdpGateConfig
from egate.drivers.turnstile.gates.osdp import OsdpGateController
from egate.tools.sim.osdp_gate import TurnstileSimulator

DEADLINE_S = 10.0  # generous: 8 helpers share 2 cores; waits return as soon as the event arrives


class EventRecorder:
    """Collects GateEvents from the driver's thread; tests wait on them with a deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[GateEvent] = []
        self.arrivals: list[float] = []  # time.monotonic() of each event's arrival

    def __call__(self, event: GateEvent) -> None:
        with self._cond:
            self.events.append(event)
            self.arrivals.append(time.monotonic())
            self._cond.notify_all()

    def kinds(self) -> list[str]:
        with self._cond:
            return [e.kind for e in self.events]

    def of(self, kind: GateEventKind) -> list[GateEvent]:
        with self._cond:
            return [e for e in self.events if e.kind == kind]

    def wait_for(
        self, kind: GateEventKind, decision_id: str | None = None, timeout: float = DEADLINE_S, after: int = 0
    ) -> GateEvent:
        """The first event of `kind` (and decision) at index >= `after`; fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if event.kind == kind and (decision_id is None or event.decision_id == decision_id):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind} event within {timeout} s; got {self.kinds()}")
                self._cond.wait(left)


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE_S, what: str = "condition") -> None:
    """Poll a cheap predicate until it holds; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.005)


@dataclass
class GatePair:
    gate: OsdpGateController
    sim: TurnstileSimulator
    events: EventRecorder
    config: OsdpGateConfig
    scbk: bytes
    closers: list[Callable[[], None]] = field(default_factory=list)

    def wait_up(self, timeout: float = DEADLINE_S) -> None:
        wait_until(lambda: self.gate.link_state == "up", timeout, "gate link up")
        # the simulated controller's baseline report has reached the panel
        wait_until(lambda: self.gate.status().inputs is not None, timeout, "baseline input report")


def make_config(url: str, **overrides: Any) -> OsdpGateConfig:
    values: dict[str, Any] = {
        "url": url,
        "passage_timeout_s": 5.0,
        "command_timeout_s": 2.0,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
        "osdp_log_level": "warning",  # libosdp's retries show in a failure's output
    }
    values.update(overrides)
    return OsdpGateConfig(**values)


GateFactory = Callable[..., GatePair]


@pytest.fixture
def gate_factory(tmp_path: Path) -> Iterator[GateFactory]:
    """make(sim_scbk=..., time_scale=..., walk=..., wait=True, **config overrides) -> GatePair."""
    made: list[GatePair] = []

    def make(
        *,
        sim_scbk: bytes | str | None = "same",
        cp_scbk: bytes | str | None = "random",
        time_scale: float = 0.02,
        walk: bool = True,
        wait: bool = True,
        sim_install_mode: bool = False,
        **overrides: Any,
    ) -> GatePair:
        scbk = secrets.token_bytes(16) if cp_scbk == "random" else cp_scbk
        assert not isinstance(scbk, str)
        pd_key = scbk if sim_scbk == "same" else sim_scbk
        assert not isinstance(pd_key, str)
        link = tmp_path / f"gate{len(made)}"
        config = make_config(str(link), **overrides)
        sim = TurnstileSimulator(
            scbk=pd_key,
            address=config.address,
            io=config.io,
            time_scale=time_scale,
            link_path=link,
            install_mode=sim_install_mode,
            walk_when_released=walk,
            seed=len(made),
        )
        sim.start()
        events = EventRecorder()
        gate = OsdpGateController(config, scbk, events)
        pair = GatePair(gate, sim, events, config, scbk if scbk is not None else b"")
        made.append(pair)
        gate.start()
        if wait:
            pair.wait_up()
        return pair

    yield make
    for pair in made:
        pair.gate.close()
        pair.sim.close()


@pytest.fixture
def gate_pair(gate_factory: GateFactory) -> GatePair:
    """A connected control panel + simulated turnstile (time scale 0.02: a passage takes 40-80 ms)."""
    return gate_factory()
