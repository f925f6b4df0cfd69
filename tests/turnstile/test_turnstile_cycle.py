"""The door cycle's safety table and the config's checks (pure logic, no I/O)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from egate.drivers.turnstile.config import OsdpGateConfig, TurnstileIoMap
from egate.drivers.turnstile.cycle import (
    MAX_TIMER_COUNT,
    OUT_PERMANENT_OFF,
    OUT_PERMANENT_ON,
    OUT_TEMPORARY_ON,
    RELEASE_LEASE_RENEW_S,
    DoorCycle,
    backstop_timer_count,
)

IO = TurnstileIoMap()  # sensors 0,1; door 2; tailgate 3; emergency 4; entry out 0; exit out 1


def report(*active: int) -> bytes:
    return bytes(1 if i in active else 0 for i in range(5))


def in_service() -> DoorCycle:
    cycle = DoorCycle(IO)
    cycle.link_up()
    cycle.on_inputs(report(), 0.0)  # baseline
    return cycle


def test_open_is_spent_by_its_first_call() -> None:
    cycle = in_service()
    first = cycle.request_open("d1", 5.0, 0.0)
    assert first.accepted
    assert [o.control_code for o in first.actions.outputs] == [OUT_TEMPORARY_ON]
    retry = cycle.request_open("d1", 5.0, 0.1)
    assert retry.accepted and retry.actions.outputs == []  # nothing sent twice
    cycle.request_lock()
    again = cycle.request_open("d1", 5.0, 1.0)
    assert again.actions.outputs == [] and again.reason == "decision_already_used"


def test_refused_decision_stays_refused() -> None:
    cycle = DoorCycle(IO)  # link never came up
    assert cycle.request_open("d1", 5.0, 0.0).reason == "link_down"
    cycle.link_up()
    answer = cycle.request_open("d1", 5.0, 0.0)
    assert not answer.accepted and answer.actions.outputs == []


def test_second_decision_refused_while_one_is_pending() -> None:
    cycle = in_service()
    assert cycle.request_open("d1", 5.0, 0.0).accepted
    assert cycle.request_open("d2", 5.0, 0.0).reason == "another_passage_pending"


def test_passage_needs_every_sensor_then_clear() -> None:
    cycle = in_service()
    cycle.request_open("d1", 5.0, 0.0)
    assert cycle.on_inputs(report(0), 0.1).events == []
    assert cycle.on_inputs(report(0, 1), 0.2).events == []
    assert cycle.on_inputs(report(1), 0.3).events == []
    done = cycle.on_inputs(report(), 0.4)
    assert [(e.kind, e.decision_id) for e in done.events] == [("passage_completed", "d1")]
    assert [(o.output_no, o.control_code) for o in done.outputs] == [(0, OUT_PERMANENT_OFF)]
    assert cycle.state == "locked"


def test_traveller_turning_back_is_not_a_passage() -> None:
    cycle = in_service()
    cycle.request_open("d1", 5.0, 0.0)
    cycle.on_inputs(report(0), 0.1)
    back = cycle.on_inputs(report(), 0.2)
    assert [e.kind for e in back.events] == ["passage_timed_out"]


def test_timeout_to_start_and_to_finish() -> None:
    cycle = in_service()
    cycle.request_open("d1", 2.0, 0.0)
    assert cycle.on_tick(1.9).events == []
    assert [e.kind for e in cycle.on_tick(2.0).events] == ["passage_timed_out"]
    cycle.request_open("d2", 2.0, 10.0)
    cycle.on_inputs(report(0), 11.0)  # entered at 11 s: the clock restarts
    assert cycle.on_tick(12.5).events == []
    late = cycle.on_tick(13.0)
    assert [(e.kind, e.decision_id) for e in late.events] == [("passage_timed_out", "d2")]


def test_emergency_input_wins_and_cancels_the_passage() -> None:
    cycle = in_service()
    cycle.request_open("d1", 5.0, 0.0)
    on = cycle.on_inputs(report(4), 0.1)
    assert [(e.kind, e.decision_id) for e in on.events] == [("emergency_on", "d1")]
    # Egress free; the entry is the controller's to release: nothing latches it open, so it is
    # locked again when the input clears even if egate is gone by then.
    assert [(o.output_no, o.control_code) for o in on.outputs] == [(1, OUT_PERMANENT_ON)]
    assert cycle.request_lock()[0] is False
    assert cycle.request_open("d2", 5.0, 0.2).reason == "emergency_input_active"
    assert [o.output_no for o in cycle.safe_outputs()] == [1]  # close() must not relock against it
    assert cycle.on_inputs(report(4, 2, 0), 0.3).events == []  # everything is free: no alarms
    off = cycle.on_inputs(report(), 0.4)
    assert [e.kind for e in off.events] == ["emergency_off"]
    assert cycle.state == "locked"


def test_software_emergency_release_is_a_renewed_lease() -> None:
    cycle = in_service()
    ok, _, actions = cycle.request_emergency_release(100.0)
    assert ok
    entry = [o for o in actions.outputs if o.output_no == 0]
    assert [(o.control_code, o.timer_count) for o in entry] == [(OUT_TEMPORARY_ON, MAX_TIMER_COUNT)]
    assert cycle.next_deadline() == 100.0 + RELEASE_LEASE_RENEW_S
    assert cycle.on_tick(100.0 + RELEASE_LEASE_RENEW_S - 0.1).outputs == []
    renewed = cycle.on_tick(100.0 + RELEASE_LEASE_RENEW_S)
    assert [(o.output_no, o.control_code) for o in renewed.outputs] == [(0, OUT_TEMPORARY_ON), (1, OUT_PERMANENT_ON)]
    # the lease outlives the renewal period, so a live daemon never lets it lapse
    assert MAX_TIMER_COUNT / 10.0 > 2 * RELEASE_LEASE_RENEW_S
    assert cycle.request_lock()[0]
    assert cycle.on_tick(1000.0).outputs == []  # no renewal after the order ended


def test_alarms_present_at_reconnect_are_reported() -> None:
    cycle = DoorCycle(IO)
    cycle.link_up()
    assert [e.kind for e in cycle.on_inputs(report(4), 0.0).events] == ["emergency_on"]
    cycle = DoorCycle(IO)
    cycle.link_up()
    assert [e.kind for e in cycle.on_inputs(report(2), 0.0).events] == ["door_forced"]
    cycle.link_down("cable")
    cycle.link_up()
    assert cycle.on_inputs(report(), 0.0).events == []  # a quiet baseline is no news


def test_door_forced_only_when_locked() -> None:
    cycle = in_service()
    assert [e.kind for e in cycle.on_inputs(report(2), 0.1).events] == ["door_forced"]
    cycle.on_inputs(report(), 0.2)
    cycle.request_open("d1", 5.0, 0.3)
    assert cycle.on_inputs(report(2), 0.4).events == []


def test_intrusion_on_passage_sensor_while_locked() -> None:
    cycle = in_service()
    events = cycle.on_inputs(report(0), 0.1).events
    assert [e.kind for e in events] == ["tailgate"]


def test_link_loss_cancels_pending_and_inputs_become_unknown() -> None:
    cycle = in_service()
    cycle.request_open("d1", 5.0, 0.0)
    lost = cycle.link_down("cable")
    assert [(e.kind, e.decision_id) for e in lost.events] == [("link_lost", "d1")]
    assert cycle.link_down("again").events == []  # one event per loss
    assert cycle.inputs is None and cycle.state == "safe"
    assert cycle.request_lock()[1] == "link_down"


def test_inverted_input_reads_zero_as_active() -> None:
    cycle = DoorCycle(TurnstileIoMap(inverted_inputs=[4]))
    cycle.link_up()
    assert [e.kind for e in cycle.on_inputs(bytes(5), 0.0).events] == ["emergency_on"]


def test_backstop_timer_fits_the_binding() -> None:
    assert backstop_timer_count(0.3) == 16
    assert backstop_timer_count(12.0) == 250
    assert backstop_timer_count(1000.0) == 255


def test_config_rejects_shared_numbers_and_unsafe_combinations() -> None:
    with pytest.raises(ValidationError, match="output numbers must be distinct"):
        TurnstileIoMap(exit_release_output=0)
    with pytest.raises(ValidationError, match="input numbers must be distinct"):
        TurnstileIoMap(emergency_input=0)
    with pytest.raises(ValidationError, match="not mapped inputs"):
        TurnstileIoMap(inverted_inputs=[9])
    with pytest.raises(ValidationError, match="install_mode needs"):
        OsdpGateConfig(install_mode=True, secure_channel=False)
    with pytest.raises(ValidationError, match="reconnect_max_s"):
        OsdpGateConfig(reconnect_initial_s=5.0, reconnect_max_s=1.0)
    with pytest.raises(ValidationError):
        OsdpGateConfig(passage_timeout_s=30.0)
    with pytest.raises(ValidationError):
        OsdpGateConfig(colour="red")  # type: ignore[call-arg]
    assert OsdpGateConfig().secure_channel and not OsdpGateConfig().install_mode
