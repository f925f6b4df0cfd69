"""The ops database on SQLite and PostgreSQL: migrations once, exactly once by id, explained gaps."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from egate.tools.ops.store import MIGRATIONS, Store


def _env(gate: str, seq: int, kind: str = "outcome", payload: dict | None = None) -> tuple[str, dict]:
    return (
        "site-s",
        {
            "id": str(uuid.uuid4()),
            "seq": seq,
            "gate": gate,
            "kind": kind,
            "ts": "2026-01-02T03:04:05+00:00",
            "payload": payload
            or {
                "decision": "accept",
                "reasons": ["MATCH"],
                "comparisons": [{"score": 0.7}],
                "timings_ms": {"total": 1500.0},
            },
        },
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ops.sqlite")
    postgres = request.getfixturevalue("postgres")
    return postgres.new_database(f"t_{uuid.uuid4().hex[:12]}")


def test_store_migrates_once_and_stores_exactly_once(store_url: str) -> None:
    with Store.open(store_url) as store:
        assert store.schema_version() == MIGRATIONS[-1][0]
        batch = [_env("gate-1", n) for n in range(1, 6)]
        assert store.store_batch(batch) == (5, 0)
        assert store.store_batch([*batch[2:], _env("gate-1", 6)]) == (1, 3)
        rows = store.outcomes(since=0, gate="gate-1")
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert rows[0]["decision"] == "accept" and rows[0]["score"] == 0.7 and rows[0]["decision_ms"] == 1500.0
    with Store.open(store_url) as again:  # a second open applies nothing
        assert again.migrate() == []
        assert again.counts()["messages"] == 6


def test_store_finds_unexplained_gaps(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.store_batch([_env("gate-1", n) for n in (1, 2, 5, 9)])
        dropped = {"type": "outbox_dropped", "details": {"first_seq": 6, "last_seq": 8}}
        store.store_batch([_env("gate-1", 10, "event", dropped)])
        gaps = [(g.gate, g.first_seq, g.last_seq) for g in store.find_gaps()]
        assert gaps == [("gate-1", 3, 4)]
        assert [g.first_seq for g in store.record_gaps(store.find_gaps())] == [3]
        assert store.record_gaps(store.find_gaps()) == []
