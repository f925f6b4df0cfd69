"""Which outbox message does the broker keep refusing? The link's forwarder asks this tracker.

Brokers refuse a publish in two ways: a failing PUBACK (MQTT 5, e.g. mosquitto's 0x87 on a topic-ACL
denial), which names the message; or closing the connection (RabbitMQ, and any MQTT 3.1.1 broker),
which names nothing, and paho re-sends every unacknowledged message after the reconnect, so the same
refusal repeats forever and nothing behind it moves.

For the silent kind the tracker notices connections lost twice in a row with messages in flight and
nothing acknowledged in between, then switches to probing: one message in flight at a time, so a
connection closed during it convicts exactly that message. A message refused `strikes_to_park` times
in a row is parked: it stays in the outbox (nothing decided is lost), the traffic behind it flows,
and it is tried again after `retry_s`, doubling per new refusal up to `retry_max_s` (the ACL may have
been fixed; and a broker that crashes connections for other reasons - RabbitMQ 3.10 drops an MQTT
connection when a queue nacks a publish - looks the same from here, so the first retry comes soon). An ordinary outage does not
park anything: the re-sent messages are acknowledged after the reconnect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Parked:
    seq: int
    why: str


class RefusalTracker:
    def __init__(
        self,
        *,
        strikes_to_park: int = 3,
        retry_s: float = 30.0,
        retry_max_s: float = 600.0,
        loops_to_probe: int = 2,
        probe_acks_to_end: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._strikes_to_park = strikes_to_park
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        self._parkings: dict[int, int] = {}  # seq -> times parked
        self._loops_to_probe = loops_to_probe
        self._probe_acks_to_end = probe_acks_to_end
        self._clock = clock
        self._strikes: dict[int, int] = {}
        self._parked: dict[int, float] = {}  # seq -> when to try again
        self._retrying: set[int] = set()  # un-parked for one more try, still counted as refused
        self._loops = 0
        self._probe_acks = 0
        self.probing = False
        self.last_parked: Parked | None = None

    @property
    def parked_count(self) -> int:
        return len(self._parked) + len(self._retrying)

    def is_parked(self, seq: int) -> bool:
        return seq in self._parked

    def window(self, normal: int) -> int:
        return 1 if self.probing else normal

    def connection_lost(self, inflight: Iterable[int]) -> bool:
        """The connection dropped with `inflight` unacknowledged. True: replace the paho client (its
        queue would re-send a batch that hides the culprit, or a parked message, forever)."""
        seqs = sorted(set(inflight))
        if not seqs:
            return False
        if self.probing:
            if len(seqs) == 1:
                return self._strike(seqs[0], "connection closed while it was the only message in flight")
            return False
        self._loops += 1
        if self._loops >= self._loops_to_probe:
            self.probing = True
            self._probe_acks = 0
            return True
        return False

    def refused(self, seq: int, why: str, *, at_once: bool = False) -> bool:
        """A failing PUBACK for `seq` (`at_once`: a definite answer such as "not authorised", parked on
        the first one). True when it is now parked."""
        if at_once:
            self._strikes[seq] = self._strikes_to_park - 1
        return self._strike(seq, why)

    def acked(self, seqs: Iterable[int]) -> bool:
        """PUBACKs arrived. True when a parked message got through (the alarm may clear)."""
        released = False
        for seq in seqs:
            self._loops = 0
            self._strikes.pop(seq, None)
            self._parkings.pop(seq, None)
            if self._parked.pop(seq, None) is not None or seq in self._retrying:
                self._retrying.discard(seq)
                released = True
            if self.probing:
                self._probe_acks += 1
                if self._probe_acks >= self._probe_acks_to_end:
                    self.probing = False
        if released and not self.parked_count:
            self.last_parked = None
        return released

    def due(self, inflight: Iterable[int]) -> int | None:
        """A parked message whose retry time came (oldest first), un-parked for one more try."""
        now = self._clock()
        busy = set(inflight)
        ready = sorted(seq for seq, at in self._parked.items() if at <= now and seq not in busy)
        if not ready:
            return None
        seq = ready[0]
        del self._parked[seq]
        self._retrying.add(seq)
        self._strikes[seq] = self._strikes_to_park - 1  # one more refusal parks it again
        self.probing = True  # a close during the retry must convict it, not its neighbours
        self._probe_acks = 0
        return seq

    def _strike(self, seq: int, why: str) -> bool:
        self._strikes[seq] = self._strikes.get(seq, 0) + 1
        if self._strikes[seq] < self._strikes_to_park:
            return False
        del self._strikes[seq]
        self._retrying.discard(seq)
        times = self._parkings.get(seq, 0)
        self._parkings[seq] = times + 1
        self._parked[seq] = self._clock() + min(self._retry_max_s, self._retry_s * 2**times)
        self.last_parked = Parked(seq, why)
        return True
