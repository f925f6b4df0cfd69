"""`egate ops collect` and `egate ops outcomes`: every outcome, event, status change and ack into a database.

The collector holds a persistent broker session (fixed client id; MQTT 5 session expiry, or
clean_session=false on 3.1.1 brokers such as RabbitMQ, where the session's queue must be a quorum
queue to outlive a node), so messages published while it is away wait at the broker. It acknowledges
each QoS 1 message only after the batch holding it is committed (paho manual ack): a crash between
receive and commit means a redelivery, never a loss, and the message id makes the second copy a no-op.

Every `gap_check_s` it looks for holes in each gate's `seq` and reports new ones (unless an
`outbox_dropped` event of that gate explains them). When a gate shows up online and an unfinished
rollout targets it, the collector hands it to the rollout code (tools/ops/rollout.py).
"""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
import structlog
import typer

from egate.edge.uplink.topics import split_topic
from egate.tools.ops.broker_options import BrokerConn, broker_options
from egate.tools.ops.client import OpsClient, OpsError
from egate.tools.ops.link import _JSON, _fail
from egate.tools.ops.store import Gap, Store, StoreError

log = structlog.get_logger(__name__)

DEFAULT_DB = "egate-ops.sqlite"
_DB = typer.Option(DEFAULT_DB, "--db", envvar="EGATE_OPS_DB", help="SQLite file or postgresql:// URL.")

TOPICS = ("outcome", "event", "status", "bundle/ack", "cmd/ack")


@dataclass
class CollectorStats:
    received: int = 0
    inserted: int = 0
    duplicates: int = 0
    statuses: int = 0
    acks: int = 0
    invalid: int = 0
    batches: int = 0
    gaps: int = 0
    first_insert_at: float | None = None  # monotonic
    last_insert_at: float | None = None

    @property
    def rows_per_s(self) -> float | None:
        """New rows stored per second between the first and the last insert."""
        if self.first_insert_at is None or self.last_insert_at is None:
            return None
        span = self.last_insert_at - self.first_insert_at
        return round(self.inserted / span, 1) if span > 0 else None


StatusListener = Callable[[str, str, str], None]
"""`listener(site, gate, state)` when a gate's status arrives (`online`, `offline`, `stopped`)."""


class Collector:
    """Subscribes, batches, stores, acknowledges. `start()`, then `close()`."""

    def __init__(
        self,
        client: OpsClient,
        store: Store,
        *,
        prefix: str = "egate/v1",
        site: str = "+",
        batch_max: int = 1000,
        batch_wait_s: float = 0.05,
        gap_check_s: float = 10.0,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.prefix = prefix
        self.site = site
        self.stats = CollectorStats()
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_s
        self._gap_check_s = gap_check_s
        self._on_gap = on_gap
        self._inbox: queue.SimpleQueue[mqtt.MQTTMessage | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._status_listeners: list[StatusListener] = []
        self._stored = threading.Condition()
        self.error: BaseException | None = None

    def add_status_listener(self, listener: StatusListener) -> None:
        self._status_listeners.append(listener)

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="egate-collector-writer", daemon=True)
        self._writer.start()
        filters = [f"{self.prefix}/{self.site}/+/{rest}" for rest in TOPICS]
        # Callbacks first: a resumed session delivers the queued messages right after CONNACK.
        for topic_filter in filters:
            self.client.add_callback(topic_filter, self._inbox.put)
        if not self.client.connected:
            self.client.connect(timeout=30)
        for topic_filter in filters:
            self.client.subscribe(topic_filter, None)

    def close(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._writer is not None:
            self._writer.join(timeout=10)
        self.client.close()

    def wait_stored(self, predicate: Callable[[CollectorStats], bool], timeout: float) -> bool:
        """Wait until `predicate(stats)` holds (tests and the bench synchronise on this)."""
        with self._stored:
            return self._stored.wait_for(lambda: predicate(self.stats) or self.error is not None, timeout)

    # ------------------------------------------------------------------ writer thread

    def _write_loop(self) -> None:
        next_gap_check = time.monotonic() + self._gap_check_s
        while not self._stop.is_set():
            batch = self._take_batch()
            if batch:
                try:
                    self._store(batch)
                except Exception as exc:  # the database is down: keep the messages unacknowledged
                    log.error("collector_store_failed", error=str(exc), batch=len(batch))
                    self.error = exc
                    with self._stored:
                        self._stored.notify_all()
                    return
            if time.monotonic() >= next_gap_check:
                next_gap_check = time.monotonic() + self._gap_check_s
                self.check_gaps()

    def _take_batch(self) -> list[mqtt.MQTTMessage]:
        try:
            first = self._inbox.get(timeout=0.5)
        except queue.Empty:
            return []
        if first is None:
            return []
        batch = [first]
        # Take what is already queued; wait (briefly) only while more keeps coming.
        deadline = time.monotonic() + self._batch_wait_s
        while len(batch) < self._batch_max:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                if time.monotonic() >= deadline or len(batch) < 2:
                    break
                try:
                    item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if item is None:
                self._stop.set()
                break
            batch.append(item)
        return batch

    def _store(self, batch: list[mqtt.MQTTMessage]) -> None:
        messages: list[tuple[str, dict[str, Any]]] = []
        statuses: list[tuple[str, str, dict[str, Any]]] = []
        acks: list[tuple[str, str, str, dict[str, Any]]] = []
        for message in batch:
            parts = split_topic(self.prefix, message.topic)
            try:
                value = json.loads(message.payload)
                if parts is None or not isinstance(value, dict):
                    raise ValueError("not an egate topic or not a JSON object")
                site, gate, rest = parts
                if rest in ("outcome", "event"):
                    if not isinstance(value.get("id"), str) or not isinstance(value.get("seq"), int):
                        raise ValueError("envelope without id or seq")
                    messages.append((site, value))
                elif rest == "status":
                    statuses.append((site, gate, value))
                else:
                    acks.append((site, gate, rest, value))
            except ValueError as exc:
                self.stats.invalid += 1
                log.warning("collector_invalid_message", topic=message.topic, error=str(exc)[:200])
        inserted, duplicates = self.store.store_batch(messages, statuses, acks)
        for message in batch:
            if message.qos > 0:
                self.client.ack(message)
        with self._stored:
            now = time.monotonic()
            if inserted and self.stats.first_insert_at is None:
                self.stats.first_insert_at = now
            if inserted:
                self.stats.last_insert_at = now
            self.stats.received += len(batch)
            self.stats.inserted += inserted
            self.stats.duplicates += duplicates
            self.stats.statuses += len(statuses)
            self.stats.acks += len(acks)
            self.stats.batches += 1
            self._stored.notify_all()
        for site, gate, status in statuses:
            for listener in self._status_listeners:
                try:
                    listener(site, gate, str(status.get("state")))
                except Exception as exc:
                    log.error("collector_status_listener_failed", error=str(exc))

    def check_gaps(self) -> list[Gap]:
        new = self.store.record_gaps(self.store.find_gaps())
        for gap in new:
            self.stats.gaps += 1
            log.warning("seq_gap", site=gap.site, gate=gap.gate, first_seq=gap.first_seq, last_seq=gap.last_seq)
            if self._on_gap is not None:
                self._on_gap(gap)
        return new


# ---------------------------------------------------------------- CLI helpers


def parse_since(text: str, now: float | None = None) -> float:
    """`1h`, `30m`, `7d`, `90s` ago, or an ISO date/time; returns epoch seconds."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        factor = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
        return now - float(match.group(1)) * factor
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use 1h, 30m, 7d or an ISO date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


# ---------------------------------------------------------------- commands


@broker_options
def collect_command(
    db: str = _DB,
    site: str = typer.Option("+", "--site", help="Site to collect (default: every site)."),
    client_id: str = typer.Option(
        "egate-collector", "--client-id", help="Fixed client id: the broker keeps this session while away."
    ),
    session_expiry: int = typer.Option(7 * 86400, "--session-expiry", help="MQTT 5 session expiry (s)."),
    count: int = typer.Option(0, "--count", help="Stop after storing this many new outcomes+events (0: run on)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Stop after this many seconds (0: no limit)."),
    rollouts: bool = typer.Option(True, "--rollouts/--no-rollouts", help="Push pending rollouts to gates seen online."),
    as_json: bool = _JSON,
    *,
    conn: BrokerConn,
) -> None:
    """Store every outcome, event, status and ack into the ops database (SQLite or PostgreSQL)."""
    try:
        store = Store.open(db)
    except (StoreError, OSError) as exc:
        _fail(str(exc), as_json)
        return

    def emit(line: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        else:
            typer.echo(" ".join(f"{k}={v}" for k, v in line.items()))

    client = conn.client(
        client_id=client_id,
        session_expiry_s=session_expiry,
        manual_ack=True,
        reconnect_max_s=2.0,
    )
    collector = Collector(
        client,
        store,
        prefix=conn.prefix,
        site=site,
        on_gap=lambda g: emit(
            {"event": "seq_gap", "site": g.site, "gate": g.gate, "first_seq": g.first_seq, "last_seq": g.last_seq}
        ),
    )
    resumer = None
    if rollouts:
        from egate.tools.ops.rollout import RolloutResumer

        resumer = RolloutResumer(store, conn_factory=conn.client, emit=emit)
        collector.add_status_listener(resumer.gate_status)
    try:
        collector.start()
    except OpsError as exc:
        _fail(str(exc), as_json)
        return
    emit({"event": "collecting", "db": _redacted(db), "site": site, "client_id": client_id})
    deadline = time.monotonic() + timeout if timeout > 0 else None
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            done = collector.wait_stored(
                lambda s: count > 0 and s.inserted >= count, timeout=min(5.0, left) if left is not None else 5.0
            )
            if collector.error is not None:
                _fail(f"database error: {collector.error}", as_json)
            if done and count > 0:
                break
    except KeyboardInterrupt:
        pass
    finally:
        collector.check_gaps()
        collector.close()
        if resumer is not None:
            resumer.close()
    s = collector.stats
    emit(
        {
            "event": "stopped",
            "received": s.received,
            "inserted": s.inserted,
            "duplicates": s.duplicates,
            "statuses": s.statuses,
            "acks": s.acks,
            "invalid": s.invalid,
            "gaps": s.gaps,
            "rows_per_s": s.rows_per_s,
        }
    )
    store.close()


def _redacted(db: str) -> str:
    from egate.tools.ops.store import _redact

    return _redact(db)


def outcomes_command(
    gate: str | None = typer.Option(None, "--gate", help="Only this gate."),
    site: str | None = typer.Option(None, "--site", help="Only this site."),
    since: str = typer.Option("1h", "--since", help="How far back: 1h, 30m, 7d or an ISO date."),
    db: str = _DB,
    as_json: bool = _JSON,
) -> None:
    """List stored outcomes (newest last)."""
    try:
        store = Store.open(db)
    except (StoreError, OSError) as exc:
        _fail(str(exc), as_json)
        return
    with store:
        rows = store.outcomes(since=parse_since(since), gate=gate, site=site)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} outcomes since {since}")
    for column in ("time (timezone.utc)", "site", "gate", "seq", "decision", "reasons", "score", "ms"):
        table.add_column(column)
    for r in rows:
        when = datetime.fromtimestamp(r["ts"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        score = f"{r['score']:.3f}" if r["score"] is not None else ""
        ms = f"{r['decision_ms']:.0f}" if r["decision_ms"] is not None else ""
        table.add_row(when, r["site"], r["gate"], str(r["seq"]), str(r["decision"]), r["reasons"] or "", score, ms)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add `collect` and `outcomes` to the `ops` group."""
    app.command("collect")(collect_command)
    app.command("outcomes")(outcomes_command)
