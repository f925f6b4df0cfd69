"""Fleet operations on mosquitto: the outcome collector (SQLite, exactly once, gaps), `egate ops outcomes`,
and rollouts (parallel, offline gates retried, rejections reported, resumed by the collector)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from egate.tools.ops.client import OpsClient
from egate.tools.ops.collect import Collector
from egate.tools.ops.rollout import RolloutResumer, RolloutRunner, RolloutState, expand_gate_spec
from egate.tools.ops.store import MIGRATIONS, Store
from egate.tools.sim.fleet import SimGate, make_sim_gate, synthetic_outcome
from tests.support.broker import Mosquitto, wait_until

ROOT = Path(__file__).resolve().parents[2]
SITE = "site-t"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as mosq:
        yield mosq


def _gates(tmp: Path, broker: Mosquitto, n: int, start: bool = True) -> list[SimGate]:
    gates = [make_sim_gate(tmp / f"g{i}", SITE, f"gate-{i:02d}", broker.host, broker.port) for i in range(n)]
    if start:
        for g in gates:
            g.start()
        for g in gates:
            assert g.link.wait_connected(20)
    return gates


def _collector(broker: Mosquitto, store: Store, client_id: str = "collector-test") -> Collector:
    client = OpsClient(
        broker.host,
        broker.port,
        client_id=client_id,
        session_expiry_s=3600,
        manual_ack=True,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )
    collector = Collector(client, store, gap_check_s=3600)
    collector.start()
    return collector


def test_collector_stores_every_outcome_exactly_once_across_its_own_restart(tmp_path: Path, broker: Mosquitto) -> None:
    store = Store.open(str(tmp_path / "ops.sqlite"))
    assert store.schema_version() == MIGRATIONS[-1][0]
    gates = _gates(tmp_path, broker, 3)
    rng = random.Random(7)
    collector = _collector(broker, store)
    try:
        for g in gates:
            for _ in range(10):
                g.outbox.append("outcome", synthetic_outcome(g.gate, rng))
        assert collector.wait_stored(lambda s: s.inserted >= 30, 30), collector.stats
        collector.close()
        # While the collector is away its persistent session queues at the broker.
        for g in gates:
            for _ in range(10):
                g.outbox.append("outcome", synthetic_outcome(g.gate, rng))
        wait_until(lambda: all(g.outbox.depth() == 0 for g in gates), 30, "gates delivered to the broker")
        collector = _collector(broker, store)
        assert collector.wait_stored(lambda s: s.inserted >= 30, 30), collector.stats
        rows = store.query("SELECT gate, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM messages GROUP BY gate")
        assert sorted(rows) == [(g.gate, 20, 20, 1, 20) for g in gates]
        # A redelivered copy (same id) is counted as a duplicate and not stored twice.
        env = json.loads(store.query("SELECT payload FROM messages LIMIT 1")[0][0])
        row = store.query("SELECT id, seq, gate FROM messages LIMIT 1")[0]
        envelope = {
            "v": 1,
            "id": row[0],
            "seq": row[1],
            "gate": row[2],
            "kind": "outcome",
            "ts": "2026-01-01T00:00:00+00:00",
            "payload": env,
        }
        collector.client.publish(f"egate/v1/{SITE}/{row[2]}/outcome", json.dumps(envelope).encode())
        assert collector.wait_stored(lambda s: s.duplicates >= 1, 20)
        assert store.counts()["messages"] == 60
        assert collector.check_gaps() == []
        statuses = store.query("SELECT DISTINCT gate FROM statuses WHERE state = 'online'")
        assert len(statuses) == 3
    finally:
        collector.close()
        for g in gates:
            g.close()
        store.close()


def test_seq_gaps_are_reported_unless_outbox_dropped_explains_them(tmp_path: Path, broker: Mosquitto) -> None:
    store = Store.open(str(tmp_path / "ops.sqlite"))
    collector = _collector(broker, store)
    try:

        def send(gate: str, seq: int, kind: str = "outcome", payload: dict | None = None) -> None:
            envelope = {
                "v": 1,
                "id": str(uuid.uuid4()),
                "seq": seq,
                "gate": gate,
                "kind": kind,
                "ts": "2026-01-01T00:00:00+00:00",
                "payload": payload or {"decision": "accept"},
            }
            collector.client.publish(f"egate/v1/{SITE}/{gate}/{kind}", json.dumps(envelope).encode())

        for seq in (1, 2, 3, 7, 8):  # 4..6 never arrive
            send("gate-a", seq)
        for seq in (1, 2, 6):  # 3..5 were dropped by the gate's full outbox, and it said so
            send("gate-b", seq)
        send("gate-b", 7, "event", {"type": "outbox_dropped", "details": {"first_seq": 3, "last_seq": 5}})
        assert collector.wait_stored(lambda s: s.inserted >= 9, 20)
        gaps = collector.check_gaps()
        assert [(g.gate, g.first_seq, g.last_seq) for g in gaps] == [("gate-a", 4, 6)]
        assert collector.check_gaps() == []  # reported once
    finally:
        collector.close()
        store.close()


@pytest.mark.slow  # a second of subprocess start-up or network timeouts per case
def test_outcomes_command_lists_a_gates_outcomes(tmp_path: Path) -> None:
    db = tmp_path / "ops.sqlite"
    store = Store.open(str(db))
    rng = random.Random(1)
    envelopes = []
    for gate in ("gate-01", "gate-02"):
        for seq in range(1, 4):
            envelopes.append(
                (
                    SITE,
                    {
                        "id": str(uuid.uuid4()),
                        "seq": seq,
                        "gate": gate,
                        "kind": "outcome",
                        "ts": "2099-01-01T00:00:00+00:00",
                        "payload": synthetic_outcome(gate, rng),
                    },
                )
            )
    envelopes.append(
        (
            SITE,
            {
                "id": "old",
                "seq": 4,
                "gate": "gate-01",
                "kind": "outcome",
                "ts": "2001-01-01T00:00:00+00:00",
                "payload": synthetic_outcome("gate-01", rng),
            },
        )
    )
    assert store.store_batch(envelopes) == (7, 0)
    assert store.store_batch(envelopes[:2]) == (0, 2)
    store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "egate.tools.cli",
            "ops",
            "outcomes",
            "--gate",
            "gate-01",
            "--since",
            "1h",
            "--db",
            str(db),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert all(r["gate"] == "gate-01" and r["decision"] in ("accept", "refer") for r in rows)


def test_gate_spec_expansion() -> None:
    known = ["gate-01", "gate-02", "gate-11", "kiosk-1"]
    assert expand_gate_spec("gate-{08..10},gate-1*,x", known) == ["gate-08", "gate-09", "gate-10", "gate-11", "x"]


@pytest.mark.slow
def test_rollout_reaches_online_and_late_gates_and_reports_rejections(tmp_path: Path, broker: Mosquitto) -> None:
    bundle = tmp_path / "gallery.bundle"
    bundle.write_bytes(os.urandom(300_000))
    store = Store.open(str(tmp_path / "ops.sqlite"))
    gates = _gates(tmp_path, broker, 4)
    gates[1].reject_code = "stale_version"
    late = make_sim_gate(tmp_path / "late", SITE, "gate-late", broker.host, broker.port)
    gone = make_sim_gate(tmp_path / "gone", SITE, "gate-gone", broker.host, broker.port)
    client = OpsClient(broker.host, broker.port)
    client.connect()
    state = RolloutState(store)
    names = [g.gate for g in gates] + ["gate-late", "gate-gone"]
    plan, progress = state.create_or_resume("gallery", bundle, bundle.read_bytes(), SITE, names, 60.0)
    changes: list[tuple[str, str]] = []
    runner = RolloutRunner(
        client,
        state,
        plan,
        bundle.read_bytes(),
        progress,
        concurrency=3,
        chunk_bytes=64 * 1024,
        offline_after_s=1.0,
        retry_min_s=30.0,
        on_change=lambda g: changes.append((g.gate, g.state)),
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(runner.run()))
    thread.start()
    try:
        wait_until(lambda: ("gate-late", "offline") in changes, 30, "the late gate found offline")
        late.start()  # its `online` status wakes the rollout long before the 30 s backoff
        wait_until(lambda: ("gate-late", "applied") in changes, 30, "the late gate gets the bundle")
        wait_until(
            lambda: sum(1 for g in runner.gates.values() if g.state in ("applied", "rejected")) == 5,
            30,
            "all reachable gates answered",
        )
        runner.stop()
        thread.join(30)
        assert result["applied"] == 4
        assert result["rejected"] == {"gate-01": "stale_version"}
        assert result["pending"] == ["gate-gone"]
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        assert all(g.applied == [digest] for g in [gates[0], gates[2], gates[3], late])
        # The state is on disk: a resumed rollout only has the pending gate left.
        assert {g: p.state for g, p in state.gates(plan.id).items() if p.state == "pending"} == {"gate-gone": "pending"}

        # The deadline passed; the gate comes online later and the collector's resumer pushes it.
        resumer = RolloutResumer(
            store, conn_factory=lambda: OpsClient(broker.host, broker.port), offline_after_s=5.0, chunk_bytes=64 * 1024
        )
        collector = _collector(broker, store, "collector-rollout")
        collector.add_status_listener(resumer.gate_status)
        try:
            gone.start()
            wait_until(lambda: "gate-gone" in [p[1] for p in resumer.pushed], 30, "the resumer pushed the gate")
            assert resumer.pushed[-1][2] == "applied"
            assert gone.applied == [digest]
            assert state.gates(plan.id)["gate-gone"].state == "applied"
        finally:
            collector.close()
            resumer.close()
    finally:
        runner.stop()
        thread.join(30)
        client.close()
        for g in [*gates, late, gone]:
            g.close()
        store.close()


def _rollout_cli(db: Path, broker: Mosquitto, bundle: Path, gates: str, deadline: float) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "egate.tools.cli",
            "ops",
            "rollout",
            str(bundle),
            "--site",
            SITE,
            "--gates",
            gates,
            "--deadline",
            str(deadline),
            "--offline-after",
            "1",
            "--chunk-bytes",
            "65536",
            "--db",
            str(db),
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.slow
def test_rollout_command_reports_and_a_later_rollout_delivers_the_earlier_one(
    tmp_path: Path, broker: Mosquitto
) -> None:
    first, second = tmp_path / "a.bundle", tmp_path / "b.bundle"
    first.write_bytes(os.urandom(150_000))
    second.write_bytes(os.urandom(90_000))
    db = tmp_path / "ops.sqlite"
    gates = _gates(tmp_path, broker, 2)
    late = make_sim_gate(tmp_path / "late", SITE, "gate-02", broker.host, broker.port)
    try:
        code, lines = _rollout_cli(db, broker, first, "gate-{00..02}", deadline=3)
        assert code == 3  # one gate still pending at the deadline
        report = lines[-1]
        assert report["event"] == "report"
        assert (report["applied"], report["rejected"], report["pending"]) == (2, {}, ["gate-02"])
        assert {(line["gate"], line["state"]) for line in lines[:-1]} >= {
            ("gate-00", "applied"),
            ("gate-02", "offline"),
        }

        late.start()
        assert late.link.wait_connected(20)
        # A second rollout to the late gate: its `online` status also brings the first bundle.
        code, lines = _rollout_cli(db, broker, second, "gate-02", deadline=30)
        assert code == 0 and lines[-1]["applied"] == 1
        want = {hashlib.sha256(first.read_bytes()).hexdigest(), hashlib.sha256(second.read_bytes()).hexdigest()}
        assert set(late.applied) == want
        with Store.open(str(db)) as store:
            states = store.query("SELECT gate, state FROM rollout_gates WHERE gate = 'gate-02'")
        assert [s for _, s in states] == ["applied", "applied"]
    finally:
        for g in [*gates, late]:
            g.close()


def test_chunk_encoder_writes_what_the_gate_reads_as_bundle_chunks() -> None:
    from egate.edge.uplink.messages import BundleChunk
    from egate.tools.ops.client import chunk_encoder

    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    encode = chunk_encoder(
        transfer_id="t" * 32, kind="gallery", count=4, chunk_bytes=300, total_bytes=1000, sha256=digest
    )
    pieces = [data[i * 300 : (i + 1) * 300] for i in range(4)]
    chunks = [BundleChunk.model_validate_json(encode(i, piece)) for i, piece in enumerate(pieces)]
    assert [c.data for c in chunks] == pieces and [c.index for c in chunks] == [0, 1, 2, 3]
    assert {(c.transfer_id, c.count, c.total_bytes, c.sha256) for c in chunks} == {("t" * 32, 4, 1000, digest)}
    with pytest.raises(ValueError):
        encode(3, pieces[0])  # the last chunk has 100 bytes, not 300
    with pytest.raises(ValueError):
        chunk_encoder(transfer_id="t" * 32, kind="ack", count=4, chunk_bytes=300, total_bytes=1000, sha256=digest)
