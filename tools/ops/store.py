"""The ops database: outcomes, events, status changes, acks, seq gaps and rollouts, in SQLite or PostgreSQL.

One schema for both, kept in versioned migrations (table `schema_migrations`): `Store.open(url)` applies
the missing ones in order, each in its own transaction. URLs: a file path or `sqlite:///path` for SQLite
(the default, one machine), `postgresql://user:pass@host:port/db` for a fleet (psycopg 3).

Outcomes and events are stored exactly once by their message id (`INSERT ... ON CONFLICT DO NOTHING`),
so redeliveries (QoS 1 is at least once) cost nothing. Everything stored is what the gates publish:
no images or templates ever reach this database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Reasons that mean no usable face sample was taken (failure to acquire, ISO/IEC 19795-1).
FTA_REASONS = frozenset({"NO_FACE", "LOW_QUALITY", "CAPTURE_TIMEOUT", "MULTIPLE_FACES"})

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "messages, statuses, acks, gaps",
        [
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                site TEXT NOT NULL,
                gate TEXT NOT NULL,
                kind TEXT NOT NULL,
                seq BIGINT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                received DOUBLE PRECISION NOT NULL,
                event_type TEXT,
                decision TEXT,
                reasons TEXT,
                fta INTEGER,
                score DOUBLE PRECISION,
                decision_ms DOUBLE PRECISION,
                payload TEXT NOT NULL
            )""",
            "CREATE INDEX messages_gate_seq ON messages (site, gate, seq)",
            "CREATE INDEX messages_ts ON messages (ts)",
            """CREATE TABLE statuses (
                site TEXT NOT NULL,
                gate TEXT NOT NULL,
                state TEXT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                received DOUBLE PRECISION NOT NULL,
                payload TEXT NOT NULL,
                PRIMARY KEY (site, gate, ts, state)
            )""",
            """CREATE TABLE acks (
                site TEXT NOT NULL,
                gate TEXT NOT NULL,
                topic TEXT NOT NULL,
                ref TEXT NOT NULL,
                status TEXT NOT NULL,
                code TEXT,
                received DOUBLE PRECISION NOT NULL,
                payload TEXT NOT NULL
            )""",
            "CREATE INDEX acks_gate ON acks (site, gate, received)",
            """CREATE TABLE gaps (
                site TEXT NOT NULL,
                gate TEXT NOT NULL,
                first_seq BIGINT NOT NULL,
                last_seq BIGINT NOT NULL,
                detected DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (site, gate, first_seq)
            )""",
        ],
    ),
    (
        2,
        "rollouts: desired state on the ops side",
        [
            """CREATE TABLE rollouts (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                bundle_path TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                site TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                deadline DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE rollout_gates (
                rollout_id TEXT NOT NULL,
                site TEXT NOT NULL,
                gate TEXT NOT NULL,
                state TEXT NOT NULL,
                code TEXT,
                message TEXT,
                attempts INTEGER NOT NULL,
                updated DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (rollout_id, site, gate)
            )""",
            "CREATE INDEX rollout_gates_gate ON rollout_gates (site, gate, state)",
        ],
    ),
]


@dataclass(frozen=True)
class StoredMessage:
    """An outcome or event as the gate sent it (OutboxEnvelope), with the fields the reports use."""

    id: str
    site: str
    gate: str
    kind: str
    seq: int
    ts: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Gap:
    site: str
    gate: str
    first_seq: int
    last_seq: int


class StoreError(RuntimeError):
    pass


def _epoch(value: Any) -> float:
    from datetime import datetime

    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def outcome_columns(payload: dict[str, Any]) -> dict[str, Any]:
    """Report columns of an outcome record: decision, reasons, failure to acquire, score, time to decision."""
    reasons = [str(r) for r in payload.get("reasons") or []]
    scores = [c.get("score") for c in payload.get("comparisons") or [] if isinstance(c, dict)]
    score = next((float(s) for s in scores if isinstance(s, int | float)), None)
    timings = payload.get("timings_ms") or {}
    ms = timings.get("total") if isinstance(timings, dict) else None
    if ms is None and payload.get("started_at") and payload.get("ended_at"):
        ms = (_epoch(payload["ended_at"]) - _epoch(payload["started_at"])) * 1000.0
    return {
        "decision": str(payload.get("decision")) if payload.get("decision") is not None else None,
        "reasons": ",".join(reasons),
        "fta": int(any(r in FTA_REASONS for r in reasons)),
        "score": score,
        "decision_ms": float(ms) if isinstance(ms, int | float) else None,
    }


class Store:
    """A connection to the ops database; thread safe (one lock: the collector has one writer thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self.is_postgres = url.startswith(("postgresql://", "postgres://"))
        if self.is_postgres:
            import psycopg

            try:
                self._conn: Any = psycopg.connect(url, autocommit=False)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to {_redact(url)}: {exc}") from None
        else:
            path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    @classmethod
    def open(cls, url: str) -> Store:
        return cls(url)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.is_postgres else sql

    def _begin(self) -> None:
        if not self.is_postgres:
            self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT") if not self.is_postgres else self._conn.commit()

    def _rollback(self) -> None:
        if self.is_postgres:
            self._conn.rollback()
        else:
            self._conn.execute("ROLLBACK")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction; returns the rows (empty for writes)."""
        with self._lock:
            self._begin()
            try:
                cur = self._conn.execute(self._sql(sql), tuple(params))
                rows = cur.fetchall() if cur.description else []
                self._commit()
            except Exception:
                self._rollback()
                raise
        return [tuple(r) for r in rows]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.execute(sql, params)

    def schema_version(self) -> int:
        rows = self.query("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0] or 0)

    def migrate(self) -> list[int]:
        """Apply the migrations this database has not seen yet; returns their versions."""
        with self._lock:
            self._begin()
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)"
            )
            self._commit()
        applied: list[int] = []
        for version, name, statements in MIGRATIONS:
            with self._lock:
                self._begin()
                try:
                    if self.is_postgres:
                        # Two collectors starting together must not apply a migration twice.
                        self._conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                    seen = self._conn.execute(
                        self._sql("SELECT 1 FROM schema_migrations WHERE version = ?"), (version,)
                    ).fetchone()
                    if seen:
                        self._commit()
                        continue
                    for statement in statements:
                        self._conn.execute(statement)
                    self._conn.execute(
                        self._sql("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)"),
                        (version, name, time.time()),
                    )
                    self._commit()
                except Exception:
                    self._rollback()
                    raise
            applied.append(version)
        return applied

    # ------------------------------------------------------------------ writes (the collector)

    def store_batch(
        self,
        messages: Iterable[tuple[str, dict[str, Any]]],
        statuses: Iterable[tuple[str, str, dict[str, Any]]] = (),
        acks: Iterable[tuple[str, str, str, dict[str, Any]]] = (),
    ) -> tuple[int, int]:
        """Store one batch in one transaction. `messages`: (site, OutboxEnvelope dict); `statuses`:
        (site, gate, StatusPayload dict); `acks`: (site, gate, topic rest, ack dict).
        Returns (messages inserted, duplicates skipped)."""
        now = time.time()
        rows = []
        for site, env in messages:
            payload = env.get("payload") or {}
            cols: dict[str, Any] = {"decision": None, "reasons": None, "fta": None, "score": None, "decision_ms": None}
            event_type = None
            if env.get("kind") == "outcome":
                cols = outcome_columns(payload)
            else:
                event_type = str(payload.get("type", ""))
            rows.append(
                (
                    str(env["id"]),
                    site,
                    str(env["gate"]),
                    str(env["kind"]),
                    int(env["seq"]),
                    _epoch(env.get("ts")),
                    now,
                    event_type,
                    cols["decision"],
                    cols["reasons"],
                    cols["fta"],
                    cols["score"],
                    cols["decision_ms"],
                    json.dumps(payload, separators=(",", ":")),
                )
            )
        status_rows = [
            (site, gate, str(st.get("state")), _epoch(st.get("ts")), now, json.dumps(st, separators=(",", ":")))
            for site, gate, st in statuses
        ]
        ack_rows = [
            (
                site,
                gate,
                rest,
                str(ack.get("transfer_id") or ack.get("cmd_id") or ""),
                str(ack.get("status")),
                ack.get("code"),
                now,
                json.dumps(ack, separators=(",", ":")),
            )
            for site, gate, rest, ack in acks
        ]
        inserted = 0
        with self._lock:
            self._begin()
            try:
                if rows:
                    inserted = self._insert_messages(rows)
                if status_rows:
                    self._executemany(
                        "INSERT INTO statuses (site, gate, state, ts, received, payload) VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING",
                        status_rows,
                    )
                if ack_rows:
                    self._executemany(
                        "INSERT INTO acks (site, gate, topic, ref, status, code, received, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        ack_rows,
                    )
                self._commit()
            except Exception:
                self._rollback()
                raise
        return inserted, len(rows) - inserted

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.is_postgres:
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self._conn.executemany(sql, rows)

    def _insert_messages(self, rows: list[tuple[Any, ...]]) -> int:
        sql = (
            "INSERT INTO messages (id, site, gate, kind, seq, ts, received, event_type, decision, reasons, fta, "
            "score, decision_ms, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        )
        if self.is_postgres:
            # RETURNING counts exactly the rows that went in (executemany's rowcount is not reliable).
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql) + " RETURNING id", rows, returning=True)
                count = 0
                while True:
                    count += len(cur.fetchall())
                    if not cur.nextset():
                        break
                return count
        before = self._conn.total_changes
        self._conn.executemany(sql, rows)
        return int(self._conn.total_changes - before)

    # ------------------------------------------------------------------ seq gaps

    def find_gaps(self) -> list[Gap]:
        """Missing seq ranges per gate between the lowest and highest seq stored, less the ranges an
        `outbox_dropped` event of that gate explains (the gate deleted them unsent, and said so)."""
        rows = self.query(
            "SELECT site, gate, prev + 1, seq - 1 FROM ("
            " SELECT site, gate, seq, LAG(seq) OVER (PARTITION BY site, gate ORDER BY seq) AS prev"
            " FROM messages) AS s WHERE prev IS NOT NULL AND seq > prev + 1 ORDER BY site, gate, seq"
        )
        if not rows:
            return []
        explained: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for site, gate, payload in self.query(
            "SELECT site, gate, payload FROM messages WHERE kind = 'event' AND event_type = 'outbox_dropped'"
        ):
            details = json.loads(payload).get("details") or {}
            if "first_seq" in details and "last_seq" in details:
                explained.setdefault((site, gate), []).append((int(details["first_seq"]), int(details["last_seq"])))
        gaps = []
        for site, gate, first, last in rows:
            remaining = _subtract((int(first), int(last)), explained.get((site, gate), []))
            gaps += [Gap(site, gate, a, b) for a, b in remaining]
        return gaps

    def record_gaps(self, gaps: Iterable[Gap]) -> list[Gap]:
        """Remember gaps; returns those not recorded before (what the collector reports)."""
        new = []
        for gap in gaps:
            with self._lock:
                self._begin()
                try:
                    cur = self._conn.execute(
                        self._sql(
                            "INSERT INTO gaps (site, gate, first_seq, last_seq, detected) VALUES (?, ?, ?, ?, ?) "
                            "ON CONFLICT DO NOTHING"
                        ),
                        (gap.site, gap.gate, gap.first_seq, gap.last_seq, time.time()),
                    )
                    if cur.rowcount:
                        new.append(gap)
                    self._commit()
                except Exception:
                    self._rollback()
                    raise
        return new

    # ------------------------------------------------------------------ reads

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("messages", "statuses", "acks", "gaps"):
            out[table] = int(self.query(f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608 - fixed names
        return out

    def outcomes(self, *, since: float, gate: str | None = None, site: str | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT site, gate, seq, ts, decision, reasons, fta, score, decision_ms, id FROM messages "
            "WHERE kind = 'outcome' AND ts >= ?"
        )
        params: list[Any] = [since]
        if gate is not None:
            sql += " AND gate = ?"
            params.append(gate)
        if site is not None:
            sql += " AND site = ?"
            params.append(site)
        sql += " ORDER BY ts, site, gate, seq"
        keys = ("site", "gate", "seq", "ts", "decision", "reasons", "fta", "score", "decision_ms", "id")
        return [dict(zip(keys, row, strict=True)) for row in self.query(sql, params)]

    def events(self, *, since: float, site: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT site, gate, seq, ts, event_type, payload FROM messages WHERE kind = 'event' AND ts >= ?"
        params: list[Any] = [since]
        if site is not None:
            sql += " AND site = ?"
            params.append(site)
        rows = self.query(sql + " ORDER BY ts", params)
        return [
            {"site": s, "gate": g, "seq": q, "ts": t, "type": e, "payload": json.loads(p)} for s, g, q, t, e, p in rows
        ]


def _subtract(span: tuple[int, int], covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    parts = [span]
    for lo, hi in covered:
        nxt = []
        for a, b in parts:
            if hi < a or lo > b:
                nxt.append((a, b))
                continue
            if a < lo:
                nxt.append((a, lo - 1))
            if hi < b:
                nxt.append((hi + 1, b))
        parts = nxt
    return parts


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
