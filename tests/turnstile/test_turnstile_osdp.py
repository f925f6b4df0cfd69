"""The OSDP control panel against the simulated turnstile over a real PTY pair, secure channel on."""

from __future__ import annotations

import secrets

import pytest
from structlog.testing import capture_logs

from egate.drivers.turnstile.config import OsdpGateConfig
from egate.drivers.turnstile.cycle import OUT_PERMANENT_OFF, OUT_PERMANENT_ON, OUT_TEMPORARY_ON
from egate.drivers.turnstile.gates.osdp import OsdpGateController
from tests.support.turnstile_fixtures import DEADLINE_S, GateFactory, GatePair, wait_until

# Each test starts the OSDP simulator process on a PTY and waits on its timing (link silence, passage
# timeouts): seconds per test. The session-free rules are in test_turnstile_cycle.py (fast).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CYCLES = 300


def entry_opens(pair: GatePair) -> int:
    return sum(c.control_code == OUT_TEMPORARY_ON for c in pair.sim.commands_for(pair.config.io.entry_release_output))


def locked_physically(pair: GatePair) -> bool:
    return pair.sim.wait_for(lambda s: not s.entry_free and s.egress_free, DEADLINE_S)


def test_open_passage_then_locked(gate_pair: GatePair) -> None:
    pair = gate_pair
    assert locked_physically(pair)
    assert pair.gate.open_for_passage("d-1", 5.0)
    event = pair.events.wait_for("passage_completed", "d-1")
    assert event.version == 1 and event.at.tzinfo is not None
    assert locked_physically(pair)
    assert pair.sim.passages == 1
    assert entry_opens(pair) == 1
    last = pair.sim.commands_for(pair.config.io.entry_release_output)[-1]
    assert last.control_code == OUT_PERMANENT_OFF
    assert pair.events.kinds() == ["passage_completed"]
    status = pair.gate.status()
    assert status.link_state == "up" and status.gate_state == "locked" and status.link_security == "secure_channel"


def test_open_without_passage_times_out_and_locks(gate_factory: GateFactory) -> None:
    pair = gate_factory(walk=False)
    assert pair.gate.open_for_passage("d-2", 0.3)
    assert pair.sim.entry_free
    pair.events.wait_for("passage_timed_out", "d-2")
    assert locked_physically(pair)
    assert pair.events.kinds() == ["passage_timed_out"]


def test_retry_never_opens_twice(gate_factory: GateFactory) -> None:
    pair = gate_factory(walk=False)
    assert pair.gate.open_for_passage("d-3", 5.0)
    assert pair.gate.open_for_passage("d-3", 5.0)  # retry: same answer, nothing sent
    assert pair.sim.walk_through()
    pair.events.wait_for("passage_completed", "d-3")
    assert pair.gate.open_for_passage("d-3", 5.0)  # a late retry after the passage
    assert locked_physically(pair)
    assert entry_opens(pair) == 1
    assert pair.sim.passages == 1
    assert pair.gate.open_for_passage("d-4", 5.0)  # a new decision does open
    assert entry_opens(pair) == 2


def test_tailgate_during_passage(gate_factory: GateFactory) -> None:
    pair = gate_factory(walk=False)
    assert pair.gate.open_for_passage("d-5", 5.0)
    assert pair.sim.walk_through(tailgater=True)
    tailgate = pair.events.wait_for("tailgate")
    assert tailgate.decision_id == "d-5"
    pair.events.wait_for("passage_completed", "d-5")
    assert locked_physically(pair)


def test_forced_door(gate_pair: GatePair) -> None:
    gate_pair.sim.force_door()
    event = gate_pair.events.wait_for("door_forced")
    assert event.decision_id is None
    assert not gate_pair.sim.entry_free  # forcing is reported; nothing was released
    assert "passage_completed" not in gate_pair.events.kinds()


def test_emergency_releases_everything_and_refuses_software(gate_factory: GateFactory) -> None:
    pair = gate_factory(walk=False)
    entry = pair.config.io.entry_release_output
    assert pair.gate.open_for_passage("d-6", 5.0)
    pair.sim.set_emergency(True)
    on = pair.events.wait_for("emergency_on")
    assert on.decision_id == "d-6"  # the pending passage is cancelled by the emergency
    assert pair.sim.entry_free and pair.sim.egress_free
    sent_before = len(pair.sim.history)
    with capture_logs() as logs:
        assert not pair.gate.open_for_passage("d-7", 5.0)
        assert not pair.gate.lock()
    refused = [e for e in logs if e["event"] == "gate_command_refused"]
    assert [e["reason"] for e in refused] == ["emergency_input_active"] * 2
    assert pair.gate.status().emergency is True
    assert pair.gate.emergency_release()  # agreeing with the emergency is allowed (a no-op)
    pair.gate.close()  # even stopping the daemon must not relock against the emergency
    relocks = [
        c for c in pair.sim.history[sent_before:] if c.output_no == entry and c.control_code == OUT_PERMANENT_OFF
    ]
    assert relocks == []
    assert pair.sim.entry_free


def test_emergency_off_returns_to_locked_service(gate_factory: GateFactory) -> None:
    pair = gate_factory()
    entry = pair.config.io.entry_release_output
    pair.sim.set_emergency(True)
    pair.events.wait_for("emergency_on")
    assert pair.sim.entry_free and pair.sim.egress_free  # released by the controller's own input...
    assert not pair.sim.output_on(entry)  # ...not by a latched output that would outlive it
    pair.sim.set_emergency(False)
    off = pair.events.wait_for("emergency_off")
    assert off.decision_id is None
    assert locked_physically(pair)
    assert pair.gate.open_for_passage("d-8", 5.0)
    pair.events.wait_for("passage_completed", "d-8")


def test_emergency_ending_after_the_panel_is_gone_leaves_the_entry_locked(gate_factory: GateFactory) -> None:
    pair = gate_factory()
    pair.sim.set_emergency(True)
    pair.events.wait_for("emergency_on")
    pair.gate.close()  # the panel is gone while the emergency lasts
    assert pair.sim.entry_free and pair.sim.egress_free  # emergency egress still works
    pair.sim.set_emergency(False)
    assert locked_physically(pair)  # entry locked, egress free: nothing was left latched open


def test_software_emergency_release_until_lock(gate_pair: GatePair) -> None:
    pair = gate_pair
    assert pair.gate.emergency_release()
    assert pair.sim.wait_for(lambda s: s.entry_free and s.egress_free, DEADLINE_S)
    assert not pair.gate.open_for_passage("d-9", 5.0)
    assert pair.gate.lock()
    assert locked_physically(pair)


def test_wrong_scbk_refused_and_reported(gate_factory: GateFactory) -> None:
    pair = gate_factory(sim_scbk=secrets.token_bytes(16), wait=False)
    event = pair.events.wait_for("secure_channel_failed")
    assert "SCBK" in event.detail
    assert pair.gate.link_state != "up"
    assert pair.gate.status().link_auth_failed is True
    assert not pair.gate.open_for_passage("d-10", 5.0)
    assert pair.sim.history == []  # the controller obeyed nothing
    assert not pair.sim.online
    assert pair.events.kinds().count("secure_channel_failed") == 1


def test_cable_pulled_goes_safe_and_recovers(gate_factory: GateFactory) -> None:
    pair = gate_factory(walk=False)
    assert pair.gate.open_for_passage("d-11", 8.0)
    assert pair.sim.entry_free
    pair.sim.unplug()
    lost = pair.events.wait_for("link_lost")
    assert lost.decision_id == "d-11"  # the passage it cancels
    assert pair.gate.link_state == "down"
    assert pair.gate.status().gate_state == "safe"
    assert locked_physically(pair)  # the controller's own fail-safe
    assert not pair.gate.open_for_passage("d-12", 5.0)
    assert not pair.gate.set_guidance("proceed")
    pair.sim.plug()
    pair.events.wait_for("link_restored")
    pair.wait_up()
    assert locked_physically(pair)
    pair.sim.walk_when_released = True
    assert pair.gate.open_for_passage("d-13", 5.0)
    pair.events.wait_for("passage_completed", "d-13")
    kinds = pair.events.kinds()
    assert kinds.count("link_lost") == 1 and kinds.count("link_restored") == 1
    assert "passage_timed_out" not in kinds  # d-11 ended once, with link_lost


def test_silent_line_detected_and_recovered(gate_pair: GatePair) -> None:
    gate_pair.sim.mute(True)
    gate_pair.events.wait_for("link_lost")
    assert gate_pair.gate.status().gate_state == "safe"
    gate_pair.sim.mute(False)
    gate_pair.events.wait_for("link_restored")


def test_close_leaves_gate_safe(gate_factory: GateFactory) -> None:
    pair = gate_factory(walk=False)
    assert pair.gate.open_for_passage("d-14", 8.0)
    assert pair.sim.entry_free
    pair.gate.close()
    assert pair.gate.link_state == "closed"
    last = pair.sim.commands_for(pair.config.io.entry_release_output)[-1]
    assert last.control_code == OUT_PERMANENT_OFF  # sent by close(), before the link went
    assert locked_physically(pair)
    assert not pair.gate.open_for_passage("d-15", 5.0)


def test_guidance_outputs(gate_pair: GatePair) -> None:
    io = gate_pair.config.io
    assert io.guidance_green_output is not None and io.buzzer_output is not None
    assert gate_pair.gate.set_guidance("proceed")
    assert gate_pair.sim.wait_for(lambda s: s.output_on(io.guidance_green_output or 0), DEADLINE_S)
    assert gate_pair.gate.set_guidance("alarm")
    assert gate_pair.sim.wait_for(
        lambda s: s.output_on(io.buzzer_output or 0) and not s.output_on(io.guidance_green_output or 0), DEADLINE_S
    )
    assert gate_pair.gate.set_guidance("off")
    assert gate_pair.sim.wait_for(lambda s: not s.output_on(io.buzzer_output or 0), DEADLINE_S)


def test_install_mode_hands_over_the_key_and_warns(gate_factory: GateFactory) -> None:
    with capture_logs() as logs:
        pair = gate_factory(sim_scbk=None, sim_install_mode=True, install_mode=True)
    assert any(e["event"] == "turnstile_install_mode_on" and e["log_level"] == "warning" for e in logs)
    assert pair.sim.wait_for(lambda s: s.keysets == [pair.scbk], DEADLINE_S)
    assert pair.sim.scbk == pair.scbk
    assert pair.gate.open_for_passage("d-16", 5.0)
    pair.events.wait_for("passage_completed", "d-16")


def test_scbk_must_be_sixteen_bytes() -> None:
    with pytest.raises(ValueError, match="SCBK must be 16 bytes"):
        OsdpGateController(OsdpGateConfig(url="loop://"), b"short", lambda e: None)
    with pytest.raises(ValueError, match="credential"):
        OsdpGateController(OsdpGateConfig(url="loop://"), None, lambda e: None)


def test_unreachable_port_stays_connecting_and_closes(tmp_path: object) -> None:
    gate = OsdpGateController(OsdpGateConfig(url="/nonexistent/ttyUSB9"), bytes(16), lambda e: None)
    gate.start()
    wait_until(lambda: gate.status().serial.last_error != "", what="open error noted")
    assert gate.link_state == "connecting"
    assert "ttyUSB9" in gate.status().serial.last_error
    assert not gate.open_for_passage("d-17", 5.0)
    gate.close()
    assert gate.link_state == "closed"


@pytest.mark.timeout(600)  # ~15 s on an idle machine; minutes when every core is taken
def test_open_lock_cycles_without_missed_or_duplicated_events(gate_factory: GateFactory) -> None:
    """300 open/lock cycles; every 15th one a traveller walks through (a walk costs ~6 input
    reports at the 50 ms OSDP poll, so walking them all would take minutes). Each decision opens the
    entry exactly once and each walked decision yields exactly one passage_completed; the link never
    drops (`egate bench gate --soak` runs the same for minutes with every core busy)."""
    pair = gate_factory(walk=False, time_scale=0.005)
    walked: list[str] = []
    for i in range(CYCLES):
        decision = f"c-{i}"
        assert pair.gate.open_for_passage(decision, 5.0), (pair.gate.status(), pair.sim.refresh_gap_max_s)
        if i % 15 == 0:
            assert pair.sim.walk_through()
            pair.events.wait_for("passage_completed", decision)
            walked.append(decision)
        else:
            assert pair.gate.lock()
    assert locked_physically(pair)
    assert entry_opens(pair) == CYCLES
    completed = [e.decision_id for e in pair.events.of("passage_completed")]
    assert completed == walked  # none missed, none duplicated, in order
    assert pair.events.kinds() == ["passage_completed"] * len(walked)  # nothing spurious: no link_lost
    assert pair.sim.passages == len(walked) == CYCLES // 15
    counters = pair.gate.status().counters
    assert counters["commands_unacknowledged"] == 0 and counters["links_lost"] == 0
    exits = [c for c in pair.sim.commands_for(pair.config.io.exit_release_output) if c.control_code != OUT_PERMANENT_ON]
    assert exits == []  # egress was never locked


def test_stuck_refresh_is_a_controller_fault(gate_pair: GatePair) -> None:
    """Fault injection: hold libosdp's lock as a refresh stuck inside the library would. The
    worker must not block on it; it reports the link lost, and the controller relocks itself."""
    pair = gate_pair
    with pair.gate._osdp_lock:
        lost = pair.events.wait_for("link_lost")
        assert "refresh stalled" in lost.detail
        assert locked_physically(pair)
    pair.events.wait_for("link_restored")
    assert pair.gate.open_for_passage("d-18", 5.0)
    pair.events.wait_for("passage_completed", "d-18")
