"""The on-disk outbox alone: commit, order, ids, restart, limits, alarm and full policies."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from egate.edge.settings.link import OutboxConfig
from egate.edge.uplink.messages import EventPayload, OutboxEnvelope
from egate.edge.uplink.outbox import Outbox, OutboxFull


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_append_is_committed_with_uuid7_and_sequence(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, OutboxConfig(), "gate-07") as outbox:
        items = [outbox.append("outcome", {"n": i}) for i in range(5)]
        # Another connection sees the rows at once: append returned only after COMMIT.
        other = sqlite3.connect(path)
        assert other.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 5
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        other.close()
    assert [item.seq for item in items] == [1, 2, 3, 4, 5]
    ids = [uuid.UUID(item.id) for item in items]
    assert all(u.version == 7 for u in ids)
    assert len(set(ids)) == 5
    env = OutboxEnvelope.model_validate_json(items[2].body)
    assert (env.seq, env.gate, env.kind, env.payload) == (3, "gate-07", "outcome", {"n": 2})


def test_order_ack_and_restart_keep_sequence(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, OutboxConfig(), "gate-07")
    for i in range(10):
        outbox.append("outcome", {"n": i})
    first = outbox.peek(0, 4)
    assert [i.seq for i in first] == [1, 2, 3, 4]
    assert [i.seq for i in outbox.peek(4, 100)] == list(range(5, 11))
    assert outbox.ack([1, 2, 3, 4]) == 4
    assert outbox.ack([4]) == 0  # a second PUBACK for the same message changes nothing
    outbox.ack(list(range(5, 11)))
    assert outbox.depth() == 0
    outbox.close()

    reopened = Outbox(path, OutboxConfig(), "gate-07")
    # Sequence numbers are never reused, even after every row was deleted (ops dedupes on them).
    assert reopened.append("event", {"type": "tailgate"}).seq == 11
    reopened.close()


def test_unacked_items_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, OutboxConfig(), "gate-07")
    ids = [outbox.append("outcome", {"n": i}).id for i in range(20)]
    outbox.ack([1, 2])
    outbox.close()
    reopened = Outbox(path, OutboxConfig(), "gate-07")
    assert reopened.depth() == 18
    assert [i.id for i in reopened.peek(0, 100)] == ids[2:]
    reopened.close()


def test_events_are_validated(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", OutboxConfig(), "g") as outbox:
        with pytest.raises(ValueError, match="type"):
            outbox.append("event", {"type": "no-such-event"})
        with pytest.raises(ValueError, match="outcome"):
            outbox.append("selfie", {})


def _events(outbox: Outbox) -> list[dict[str, object]]:
    found = []
    for item in outbox.peek(0, 100_000):
        if item.kind == "event":
            found.append(json.loads(item.body)["payload"])
    return found


def test_alarm_at_80_percent_once(tmp_path: Path) -> None:
    alarms: list[EventPayload] = []
    cfg = OutboxConfig(max_messages=100)
    with Outbox(tmp_path / "o.sqlite", cfg, "g") as outbox:
        outbox.add_alarm_listener(alarms.append)
        for i in range(79):
            outbox.append("outcome", {"n": i})
        assert alarms == []
        outbox.append("outcome", {"n": 79})
        assert [a.type for a in alarms] == ["outbox_nearly_full"]
        for i in range(5):
            outbox.append("outcome", {"n": 100 + i})
        assert len(alarms) == 1  # not one per message
        events = _events(outbox)
        assert [e["type"] for e in events] == ["outbox_nearly_full"]
        assert events[0]["details"]["max_messages"] == 100  # type: ignore[index]
        # Drained below 70%: the alarm re-arms and fires again on the next crossing.
        outbox.ack([item.seq for item in outbox.peek(0, 40)])
        assert not outbox.stats().alarm_active
        while outbox.depth() < 80:
            outbox.append("outcome", {"n": 0})
        assert [a.type for a in alarms] == ["outbox_nearly_full", "outbox_nearly_full"]


def test_full_refuse_new_raises_and_says_so(tmp_path: Path) -> None:
    cfg = OutboxConfig(max_messages=100, full_policy="refuse_new")
    alarms: list[EventPayload] = []
    with Outbox(tmp_path / "o.sqlite", cfg, "g") as outbox:
        outbox.add_alarm_listener(alarms.append)
        while outbox.depth() < 100:
            outbox.append("outcome", {"n": 1})
        kept = [i.id for i in outbox.peek(0, 1000)]
        with pytest.raises(OutboxFull, match=r"outbox\.max_messages=100"):
            outbox.append("outcome", {"n": 2})
        with pytest.raises(OutboxFull):
            outbox.append("outcome", {"n": 3})
        # Nothing already queued was dropped; one outbox_full event explains the stop.
        after = [i.id for i in outbox.peek(0, 1000)]
        assert after[: len(kept)] == kept
        assert [e["type"] for e in _events(outbox)] == ["outbox_nearly_full", "outbox_full"]
        assert [a.type for a in alarms] == ["outbox_nearly_full", "outbox_full"]
        assert outbox.stats().refused_total == 2


def test_full_drop_oldest_logs_the_gap(tmp_path: Path) -> None:
    cfg = OutboxConfig(max_messages=200, full_policy="drop_oldest")
    with Outbox(tmp_path / "o.sqlite", cfg, "g") as outbox:
        for i in range(400):
            outbox.append("outcome", {"n": i})
        assert outbox.depth() <= 200
        dropped = [e for e in _events(outbox) if e["type"] == "outbox_dropped"]
        assert dropped, "every drop is announced to ops"
        total = sum(int(e["details"]["count"]) for e in dropped)  # type: ignore[index]
        assert total == outbox.stats().dropped_total
        # Every sequence number is either still queued or inside an announced dropped range.
        queued = {i.seq for i in outbox.peek(0, 10_000)}
        announced = set()
        for e in dropped:
            d = e["details"]
            announced |= set(range(int(d["first_seq"]), int(d["last_seq"]) + 1))  # type: ignore[index]
        assert set(range(1, outbox.last_seq() + 1)) <= queued | announced


def test_age_bound(tmp_path: Path) -> None:
    clock = Clock()
    cfg = OutboxConfig(max_age_s=1000, full_policy="refuse_new")
    with Outbox(tmp_path / "o.sqlite", cfg, "g", clock=clock) as outbox:
        outbox.append("outcome", {"n": 0})
        clock.now += 500
        assert outbox.oldest_age_s() == pytest.approx(500)
        outbox.append("outcome", {"n": 1})
        assert not outbox.stats().alarm_active
        clock.now += 310  # oldest is 81% of max age
        outbox.append("outcome", {"n": 2})
        assert outbox.stats().alarm_active
        clock.now += 200
        with pytest.raises(OutboxFull, match="max_age_s=1000"):
            outbox.append("outcome", {"n": 3})
