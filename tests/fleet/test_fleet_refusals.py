"""egate.edge.uplink.publish_refusals: an outage parks nothing; a message refused again and again is convicted alone."""

from __future__ import annotations

from egate.edge.uplink.publish_refusals import RefusalTracker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_parks_nothing() -> None:
    tracker = RefusalTracker()
    for _ in range(10):
        assert tracker.connection_lost([4, 5, 6]) is False or tracker.probing
        tracker.acked([4, 5, 6])  # re-sent after the reconnect and accepted
    assert tracker.parked_count == 0


def test_silent_refusals_are_probed_one_at_a_time_and_only_the_culprit_is_parked() -> None:
    clock = Clock()
    tracker = RefusalTracker(strikes_to_park=3, retry_s=600, retry_max_s=600, clock=clock)
    # The broker closes the connection whenever seq 7 arrives; 5 and 6 lose their PUBACKs too.
    assert tracker.connection_lost([5, 6, 7, 8]) is False
    assert tracker.connection_lost([5, 6, 7, 8]) is True  # renew the client and probe
    assert tracker.probing and tracker.window(20) == 1
    tracker.acked([5])
    tracker.acked([6])
    assert tracker.connection_lost([7]) is False
    assert tracker.connection_lost([7]) is False
    assert tracker.connection_lost([7]) is True  # parked: drop it from paho's queue
    assert tracker.is_parked(7) and not tracker.is_parked(6)
    assert tracker.last_parked is not None and tracker.last_parked.seq == 7
    tracker.acked([8, 9, 10, 11, 12])
    assert not tracker.probing
    assert tracker.due([]) is None
    clock.now = 601
    assert tracker.due([]) == 7  # tried again; one more refusal parks it again
    assert tracker.connection_lost([7]) is True and tracker.is_parked(7)
    clock.now = 1202
    assert tracker.due([]) == 7
    assert tracker.connection_lost([7]) is True  # parked a third time
    clock.now = 1202 + 599
    assert tracker.due([]) is None  # capped at retry_max_s
    clock.now = 1202 + 601
    assert tracker.due([]) == 7
    assert tracker.acked([7]) is True  # the ACL was fixed
    assert tracker.parked_count == 0 and tracker.last_parked is None


def test_not_authorised_puback_parks_at_once() -> None:
    tracker = RefusalTracker(strikes_to_park=3)
    assert tracker.refused(3, "PUBACK Quota exceeded") is False
    assert tracker.refused(4, "PUBACK Not authorized", at_once=True) is True
    assert tracker.is_parked(4) and not tracker.is_parked(3)


def test_retry_delay_doubles_per_parking() -> None:
    clock = Clock()
    tracker = RefusalTracker(strikes_to_park=1, retry_s=30, retry_max_s=100, clock=clock)
    tracker.probing = True
    waits = []
    for _ in range(4):
        start = clock.now
        assert tracker.connection_lost([3]) is True
        while tracker.due([]) is None:
            clock.now += 1
        waits.append(clock.now - start)
    assert waits == [30, 60, 100, 100]
