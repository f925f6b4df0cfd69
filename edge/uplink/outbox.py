"""On-disk store-and-forward queue for outcomes and events (SQLite, WAL, `synchronous=FULL`).

`append()` returns only after the message is committed to disk, so the lane may act on a decision
knowing it cannot be lost by a crash or power cut. The link forwards items in `seq` order at QoS 1
and calls `ack()` with the sequence numbers the broker acknowledged (PUBACK); only then are they deleted.

Every message gets a UUIDv7 (time ordered, RFC 9562 section 5.7) and a per-gate sequence number
(SQLite AUTOINCREMENT: never reused, even after deletion), so ops can dedupe at-least-once delivery
and see gaps. The queue is bounded by count, bytes and age; crossing `alarm_ratio` queues an
`outbox_nearly_full` event, and the `full_policy` decides, loudly, what happens when full.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog
import uuid6

from egate.edge.settings.link import OutboxConfig
from egate.edge.uplink.messages import EventPayload, OutboxEnvelope

log = structlog.get_logger(__name__)

OutboxKind = Literal["outcome", "event"]
_KINDS = ("outcome", "event")
_SCHEMA_VERSION = 1
# Re-arm the nearly-full alarm only after the fill level fell this far below the threshold,
# so a queue hovering at the threshold does not raise an alarm per message.
_ALARM_HYSTERESIS = 0.1
# drop_oldest removes this share of the queue at once, so a full queue logs one drop event per
# batch instead of one per new message. Drop announcements themselves are `protected`: never dropped,
# so ops always learns of every gap.
_DROP_BATCH_RATIO = 0.1
# A write probe after a failed commit: as large as a big outcome record, so a disk that takes the probe
# takes the next decision too.
_PROBE_BYTES = 16 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL,
    protected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OutboxFull(RuntimeError):
    """The outbox is full and the policy is `refuse_new`: the lane must go out of service."""


class OutboxError(RuntimeError):
    """The outbox file cannot be used (wrong format, disk error); the message says what to do."""


@dataclass(frozen=True)
class OutboxItem:
    """One committed message; `body` is the JSON `OutboxEnvelope` exactly as published."""

    seq: int
    id: str
    kind: str
    created_at: float
    body: bytes


OutboxCondition = Literal["ok", "nearly_full", "full", "low_disk", "disk_error"]


@dataclass(frozen=True)
class OutboxHealth:
    """Whether the outbox takes commits now. `ok` False means the lane must not decide (no record, no
    opening); `detail` names the cause and the fix, for status, selftest and the lane's reasons."""

    ok: bool
    condition: OutboxCondition
    detail: str


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    oldest_age_s: float | None
    fill_ratio: float
    alarm_active: bool
    dropped_total: int
    refused_total: int


class Outbox:
    """SQLite-backed FIFO. Thread safe: the lane appends while the link's forwarder peeks and acks."""

    def __init__(
        self,
        path: Path,
        config: OutboxConfig,
        gate_id: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._config = config
        self._gate_id = gate_id
        self._clock = clock
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._alarm_listeners: list[Callable[[EventPayload], None]] = []
        self._alarm_active = False
        self._full_reported = False
        self._dropped_total = 0
        self._refused_total = 0
        self._write_error: str | None = None  # the last failed commit, until one succeeds again
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves, one transaction per call.
            self._db = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a committed decision survives a power cut
            # (NORMAL in WAL mode may lose the last transactions on power loss).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._check_version()
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM messages").fetchone()
            seq_row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(
                f"outbox {self._path} cannot be opened ({exc}); check the disk and permissions of the "
                "state directory, or move the file aside to start an empty outbox (its messages are then lost)"
            ) from exc
        self._count = int(row[0])
        self._bytes = int(row[1])
        self._last_seq = int(seq_row[0]) if seq_row else 0
        log.info("outbox_opened", path=str(self._path), depth=self._count, bytes=self._bytes, last_seq=self._last_seq)
        # An outbox reopened above the alarm level raises the alarm again (one per daemon start).
        self._check_alarm_locked()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),))
        elif int(row[0]) != _SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self._path} has schema version {row[0]}, this egate reads {_SCHEMA_VERSION}: "
                "drain it with the egate version that wrote it, or move it aside"
            )

    # ------------------------------------------------------------------ lifecycle

    @property
    def path(self) -> Path:
        return self._path

    @property
    def gate_id(self) -> str:
        return self._gate_id

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` runs (in the appending thread) after every commit; keep it to setting an event."""
        self._listeners.append(callback)

    def add_alarm_listener(self, callback: Callable[[EventPayload], None]) -> None:
        """`callback(event)` runs when the outbox raises `outbox_nearly_full`, `outbox_full` or `outbox_dropped`."""
        self._alarm_listeners.append(callback)

    # ------------------------------------------------------------------ writing

    def append(self, kind: str, payload: dict[str, Any]) -> OutboxItem:
        """Commit one outcome or event; on return it is on disk (fsynced). Raises OutboxFull (refuse_new)."""
        if kind not in _KINDS:
            raise ValueError(f"outbox kind {kind!r} unknown: use 'outcome' or 'event'")
        if kind == "event":
            payload = EventPayload.model_validate(payload).model_dump(mode="json")
        alarms: list[EventPayload] = []
        refused: OutboxFull | None = None
        item: OutboxItem | None = None
        with self._lock:
            now = self._clock()
            size_guess = self._estimate_size(payload)
            if self._would_overflow(now, size_guess):
                full_alarms, refused = self._handle_full_locked(now, size_guess)
                alarms.extend(full_alarms)
            if refused is None:
                item = self._insert_locked(kind, payload, now)
                alarm = self._check_alarm_locked()
                if alarm is not None:
                    alarms.append(alarm)
        self._notify(alarms)
        if refused is not None:
            raise refused
        assert item is not None
        return item

    def _estimate_size(self, payload: dict[str, Any]) -> int:
        # The envelope adds ~200 bytes to the payload; exactness is not needed for a limit check.
        return len(repr(payload)) + 200

    def _insert_locked(self, kind: str, payload: dict[str, Any], now: float, *, protected: bool = False) -> OutboxItem:
        seq = self._last_seq + 1
        msg_id = str(uuid6.uuid7())
        envelope = OutboxEnvelope(
            id=msg_id,
            seq=seq,
            gate=self._gate_id,
            kind=kind,  # type: ignore[arg-type]
            ts=datetime.fromtimestamp(now, timezone.utc),
            payload=payload,
        )
        body = envelope.model_dump_json().encode()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO messages(seq, id, kind, created_at, body, protected) VALUES (?, ?, ?, ?, ?, ?)",
                (seq, msg_id, kind, now, body, int(protected)),
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self._write_error = str(exc)
            raise OutboxError(
                f"outbox {self._path}: commit failed ({exc}); the decision is NOT recorded: check free disk "
                "space of the state directory"
            ) from exc
        self._write_error = None
        self._last_seq = seq
        self._count += 1
        self._bytes += len(body)
        return OutboxItem(seq=seq, id=msg_id, kind=kind, created_at=now, body=body)

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _notify(self, alarms: list[EventPayload]) -> None:
        for listener in self._listeners:
            listener()
        for alarm in alarms:
            for alarm_listener in self._alarm_listeners:
                alarm_listener(alarm)

    # ------------------------------------------------------------------ limits

    def _oldest_created_locked(self) -> float | None:
        row = self._db.execute("SELECT created_at FROM messages ORDER BY seq LIMIT 1").fetchone()
        return float(row[0]) if row else None

    def _oldest_unprotected_locked(self, now: float) -> float:
        row = self._db.execute("SELECT created_at FROM messages WHERE protected = 0 ORDER BY seq LIMIT 1").fetchone()
        return float(row[0]) if row else now

    def _ratio_locked(self, now: float, extra_count: int = 0, extra_bytes: int = 0) -> float:
        cfg = self._config
        oldest = self._oldest_created_locked()
        age = (now - oldest) if oldest is not None else 0.0
        return max(
            (self._count + extra_count) / cfg.max_messages,
            (self._bytes + extra_bytes) / cfg.max_bytes,
            max(age, 0.0) / cfg.max_age_s,
        )

    def _would_overflow(self, now: float, size: int) -> bool:
        return self._ratio_locked(now, 1, size) > 1.0

    def _handle_full_locked(self, now: float, size: int) -> tuple[list[EventPayload], OutboxFull | None]:
        cfg = self._config
        if cfg.full_policy == "refuse_new":
            self._refused_total += 1
            alarms: list[EventPayload] = []
            if not self._full_reported:
                self._full_reported = True
                event = EventPayload(
                    type="outbox_full",
                    severity="critical",
                    message="outbox full: new outcomes refused, gate out of service until ops drains it",
                    details=self._limit_details_locked(now),
                )
                # Internal alarm events bypass the limit: they are one per episode and say why the gate stopped.
                self._insert_locked("event", event.model_dump(mode="json"), now, protected=True)
                alarms.append(event)
            log.error(
                "outbox_full_refused",
                policy="refuse_new",
                refused_total=self._refused_total,
                **self._limit_details_locked(now),
            )
            return alarms, OutboxFull(
                f"outbox {self._path} is full ({self._count} messages, {self._bytes} bytes; limits "
                f"outbox.max_messages={cfg.max_messages}, outbox.max_bytes={cfg.max_bytes}, "
                f"outbox.max_age_s={cfg.max_age_s}) and outbox.full_policy is refuse_new: restore the link "
                "to central ops so it drains, or raise the limits"
            )
        return self._drop_oldest_locked(now, size), None

    def _drop_oldest_locked(self, now: float, size: int) -> list[EventPayload]:
        cfg = self._config
        batch = max(1, int(self._count * _DROP_BATCH_RATIO))
        dropped: list[tuple[int, int]] = []
        cutoff = now - cfg.max_age_s
        try:
            self._db.execute("BEGIN IMMEDIATE")
            while self._count > 0 and (
                self._count + 1 > cfg.max_messages
                or self._bytes + size > cfg.max_bytes
                or self._oldest_unprotected_locked(now) <= cutoff
                or not dropped
            ):
                rows = self._db.execute(
                    "DELETE FROM messages WHERE seq IN "
                    "(SELECT seq FROM messages WHERE protected = 0 ORDER BY seq LIMIT ?) "
                    "RETURNING seq, LENGTH(body)",
                    (batch,),
                ).fetchall()
                if not rows:
                    break
                for seq, length in rows:
                    dropped.append((int(seq), int(length)))
                    self._count -= 1
                    self._bytes -= int(length)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise OutboxError(f"outbox {self._path}: dropping oldest failed ({exc}); check the disk") from exc
        if not dropped:
            return []
        seqs = sorted(seq for seq, _ in dropped)
        self._dropped_total += len(seqs)
        details = {"first_seq": seqs[0], "last_seq": seqs[-1], "count": len(seqs), "dropped_total": self._dropped_total}
        log.warning("outbox_dropped", policy="drop_oldest", **details)
        event = EventPayload(
            type="outbox_dropped",
            severity="critical",
            message=f"outbox full: {len(seqs)} oldest messages deleted unsent (policy drop_oldest)",
            details=details,
        )
        self._insert_locked("event", event.model_dump(mode="json"), now, protected=True)
        return [event]

    def _limit_details_locked(self, now: float) -> dict[str, Any]:
        oldest = self._oldest_created_locked()
        return {
            "depth": self._count,
            "bytes": self._bytes,
            "oldest_age_s": round(now - oldest, 3) if oldest is not None else None,
            "max_messages": self._config.max_messages,
            "max_bytes": self._config.max_bytes,
            "max_age_s": self._config.max_age_s,
        }

    def _check_alarm_locked(self) -> EventPayload | None:
        now = self._clock()
        ratio = self._ratio_locked(now)
        if ratio < self._config.alarm_ratio - _ALARM_HYSTERESIS:
            if self._alarm_active:
                log.info("outbox_alarm_cleared", fill_ratio=round(ratio, 4))
            self._alarm_active = False
            self._full_reported = False
            return None
        if ratio < self._config.alarm_ratio or self._alarm_active:
            return None
        self._alarm_active = True
        details = {**self._limit_details_locked(now), "fill_ratio": round(ratio, 4)}
        log.warning("outbox_nearly_full", **details)
        event = EventPayload(
            type="outbox_nearly_full",
            severity="alarm",
            message=f"outbox {round(ratio * 100)}% full: the link to central ops is not draining it",
            details=details,
        )
        self._insert_locked("event", event.model_dump(mode="json"), now)
        return event

    # ------------------------------------------------------------------ health

    def health(self, min_free_bytes: int = 0) -> OutboxHealth:
        """Can the lane commit a decision now? Full (refuse_new), a failed commit not yet followed by a
        good one, or less free disk than `min_free_bytes` say no; nearly full still says yes."""
        fix_full = (
            "restore the link to central ops so it drains (egate diag link), or raise outbox.max_messages / "
            "outbox.max_bytes / outbox.max_age_s"
        )
        with self._lock:
            now = self._clock()
            ratio = self._ratio_locked(now)
            write_error = self._write_error
            refused = self._full_reported
        if write_error is not None:
            return OutboxHealth(
                False,
                "disk_error",
                f"commit failed ({write_error}): free disk space in {self._path.parent} or check the disk; "
                "the lane resumes once a commit succeeds",
            )
        if self._config.full_policy == "refuse_new" and (refused or ratio >= 1.0):
            return OutboxHealth(False, "full", f"full ({round(ratio * 100)}% of its limits): {fix_full}")
        free = self.free_disk_bytes()
        if free is not None and free < min_free_bytes:
            return OutboxHealth(
                False,
                "low_disk",
                f"{free} bytes free in {self._path.parent}, below outbox.min_free_disk_bytes={min_free_bytes}: "
                "free disk space (old logs, bundles-incoming) or lower the floor",
            )
        if ratio >= self._config.alarm_ratio:
            return OutboxHealth(True, "nearly_full", f"{round(ratio * 100)}% full: {fix_full}")
        return OutboxHealth(True, "ok", f"depth {self._count}, {round(ratio * 100)}% full")

    def free_disk_bytes(self) -> int | None:
        try:
            st = os.statvfs(self._path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def probe(self) -> bool:
        """After a failed commit: commit a row the size of a large outcome record, then delete it. Only a
        disk that really took the commit clears the error (True: the lane may decide again)."""
        blob = "0" * _PROBE_BYTES
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('probe', ?)", (blob,))
                self._db.execute("COMMIT")
                self._db.execute("DELETE FROM meta WHERE key = 'probe'")
            except sqlite3.Error as exc:
                self._rollback()
                self._write_error = str(exc)
                return False
            self._write_error = None
            return True

    # ------------------------------------------------------------------ reading and acknowledging

    def peek(self, after_seq: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Oldest items with `seq > after_seq`, in order (the forwarder keeps its own cursor)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, kind, created_at, body FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [OutboxItem(int(s), str(i), str(k), float(c), bytes(b)) for s, i, k, c, b in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete items the broker acknowledged (PUBACK). Returns how many were still there."""
        wanted = list(seqs)
        if not wanted:
            return 0
        alarms: list[EventPayload] = []
        with self._lock:
            deleted: list[Any] = []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for start in range(0, len(wanted), 500):
                    part = wanted[start : start + 500]
                    marks = ",".join("?" * len(part))
                    deleted.extend(
                        self._db.execute(
                            f"DELETE FROM messages WHERE seq IN ({marks}) RETURNING LENGTH(body)",  # noqa: S608
                            part,
                        ).fetchall()
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox {self._path}: deleting acknowledged messages failed ({exc})") from exc
            self._count -= len(deleted)
            self._bytes -= sum(int(row[0]) for row in deleted)
            alarm = self._check_alarm_locked()
            if alarm is not None:
                alarms.append(alarm)
        if alarms:
            self._notify(alarms)
        return len(deleted)

    def depth(self) -> int:
        with self._lock:
            return self._count

    def bytes_used(self) -> int:
        with self._lock:
            return self._bytes

    def oldest_age_s(self) -> float | None:
        """Age of the oldest queued message in seconds, None when empty."""
        with self._lock:
            oldest = self._oldest_created_locked()
            return max(0.0, self._clock() - oldest) if oldest is not None else None

    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq

    def stats(self) -> OutboxStats:
        with self._lock:
            now = self._clock()
            oldest = self._oldest_created_locked()
            return OutboxStats(
                depth=self._count,
                bytes=self._bytes,
                oldest_age_s=max(0.0, now - oldest) if oldest is not None else None,
                fill_ratio=self._ratio_locked(now),
                alarm_active=self._alarm_active,
                dropped_total=self._dropped_total,
                refused_total=self._refused_total,
            )
