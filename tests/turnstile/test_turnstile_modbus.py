"""The Modbus RTU gate driver against pymodbus's own server on a PTY pair (tools/sim/modbus_gate.py).

The same safety rules as the OSDP driver, asserted on the simulated relays: the entry opens only for
an accepted decision and once per decision id, relocks at the end of the passage and at its
timeout, goes to its safe state on link loss (in software, and by the module's own watchdog), and
the emergency loop frees everything while egate refuses every request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from egate.drivers.turnstile.gates.modbus import ModbusGateConfig, ModbusGateController
from egate.tools.sim.modbus_gate import ModbusGateSimulator, socat_available
from tests.support.turnstile_fixtures import EventRecorder, wait_until

pytestmark = pytest.mark.skipif(not socat_available(), reason="socat missing: make setup installs it")

DEADLINE_S = 15.0


@pytest.fixture
def sim() -> Iterator[ModbusGateSimulator]:
    # PTYs refuse parity settings (termios EINVAL): the line runs 8N1 here, 8E1 by default on RS-485.
    with ModbusGateSimulator(baud=115200, parity="N") as simulator:
        yield simulator


def _gate(sim: ModbusGateSimulator, events: EventRecorder, **changes: object) -> ModbusGateController:
    config = ModbusGateConfig.model_validate(
        {
            "url": sim.path,
            "baud": 115200,
            "parity": "N",
            "poll_interval_s": 0.02,
            "response_timeout_s": 0.3,
            "link_loss_polls": 3,
            "watchdog_register": sim.watchdog_register,
            "watchdog_ms": 400,
            **changes,
        }
    )
    gate = ModbusGateController(config, events)
    gate.start()
    wait_until(lambda: gate.link_state == "up", DEADLINE_S, "the Modbus link to come up")
    return gate


def test_opens_once_for_a_decision_and_relocks_after_the_passage(sim: ModbusGateSimulator) -> None:
    events = EventRecorder()
    gate = _gate(sim, events)
    try:
        assert not sim.entry_free() and sim.egress_free(), "in service: entry locked, egress free"
        assert gate.open_for_passage("txn-1", 5.0)
        assert sim.entry_free()
        assert gate.open_for_passage("txn-1", 5.0) is True  # a retry: no second release is written
        assert sum(1 for n, on in sim.coil_writes if n == sim.io.entry_release_output and on) == 1
        sim.walk_through()
        done = events.wait_for("passage_completed", "txn-1", DEADLINE_S)
        assert done.decision_id == "txn-1"
        assert sim.wait_for(lambda s: not s.entry_free(), DEADLINE_S)
        assert gate.open_for_passage("txn-2", 5.0) and gate.lock()
        assert sim.wait_for(lambda s: not s.entry_free(), DEADLINE_S)
    finally:
        gate.close()
    assert not sim.entry_free() and sim.egress_free(), "close() leaves the safe state"


def test_passage_timeout_relocks_and_reports(sim: ModbusGateSimulator) -> None:
    events = EventRecorder()
    gate = _gate(sim, events)
    try:
        assert gate.open_for_passage("txn-late", 0.3)
        timed_out = events.wait_for("passage_timed_out", "txn-late", DEADLINE_S)
        assert "did not start" in timed_out.detail
        assert sim.wait_for(lambda s: not s.entry_free(), DEADLINE_S)
    finally:
        gate.close()


def test_sensor_while_locked_is_an_intrusion_and_door_forced_is_reported(sim: ModbusGateSimulator) -> None:
    events = EventRecorder()
    gate = _gate(sim, events)
    try:
        sim.set_input(sim.io.passage_sensor_inputs[0], True)
        events.wait_for("tailgate", timeout=DEADLINE_S)
        assert sim.io.door_position_input is not None
        sim.set_input(sim.io.door_position_input, True)
        events.wait_for("door_forced", timeout=DEADLINE_S)
        assert not sim.entry_free()
    finally:
        gate.close()


def test_emergency_frees_everything_and_egate_refuses_until_it_clears(sim: ModbusGateSimulator) -> None:
    events = EventRecorder()
    gate = _gate(sim, events)
    try:
        assert gate.open_for_passage("txn-e", 5.0)
        sim.set_emergency(True)
        on = events.wait_for("emergency_on", timeout=DEADLINE_S)
        assert on.decision_id == "txn-e", "the emergency cancels the pending passage"
        assert sim.entry_free() and sim.egress_free()
        assert gate.open_for_passage("txn-f", 5.0) is False
        assert gate.lock() is False, "software never locks against the emergency loop"
        assert sim.entry_free()
        sim.set_emergency(False)
        events.wait_for("emergency_off", timeout=DEADLINE_S)
        assert sim.wait_for(lambda s: not s.entry_free() and s.egress_free(), DEADLINE_S)
    finally:
        gate.close()


def test_link_loss_goes_safe_in_software_and_in_the_module(sim: ModbusGateSimulator) -> None:
    events = EventRecorder()
    gate = _gate(sim, events)
    try:
        assert gate.open_for_passage("txn-cut", 8.0)
        assert sim.entry_free()
        trips = sim.watchdog_trips
        seen = len(events.events)
        sim.unplug()  # the line is cut while the entry is released
        lost = events.wait_for("link_lost", timeout=DEADLINE_S)
        assert lost.decision_id == "txn-cut" and gate.link_state == "down"
        assert gate.open_for_passage("txn-during", 5.0) is False
        # The module heard nothing for watchdog_ms: it drops the entry by itself.
        assert sim.wait_for(lambda s: not s.entry_free() and s.egress_free(), DEADLINE_S)
        assert sim.watchdog_trips == trips + 1
        sim.plug()
        events.wait_for("link_restored", timeout=DEADLINE_S, after=seen)
        assert not sim.entry_free() and sim.egress_free()
        assert gate.open_for_passage("txn-after", 5.0)
    finally:
        gate.close()


def test_watchdog_locks_the_entry_when_egate_dies_mid_passage(sim: ModbusGateSimulator) -> None:
    events = EventRecorder()
    gate = _gate(sim, events)
    assert gate.open_for_passage("txn-dies", 8.0)
    assert sim.entry_free()
    # Stop polling without any goodbye, as a killed daemon would: the module alone must relock.
    gate._stop.set()
    assert sim.wait_for(lambda s: not s.entry_free() and s.egress_free(), DEADLINE_S)
    assert sim.watchdog_trips >= 1


def test_config_refuses_what_the_line_cannot_do() -> None:
    with pytest.raises(ValueError, match="device_id"):
        ModbusGateConfig.model_validate({"device_id": 0})
    with pytest.raises(ValueError, match="passage_timeout_s"):
        ModbusGateConfig.model_validate({"passage_timeout_s": 30})
    with pytest.raises(ValueError, match="parity"):
        ModbusGateConfig.model_validate({"parity": "X"})
