"""`egate ops rollout BUNDLE --site S --gates PATTERN|--gates-file F`: one bundle to many gates.

The desired state lives on the ops side, in the ops database (tables `rollouts`, `rollout_gates`; see
tools/ops/store.py), never in retained messages (a broker cluster may keep those on one node only).
Running the same command again resumes: same rollout id (bundle kind, hash and site), gates already
applied or rejected are skipped, and each gate keeps its transfer id so it keeps the chunks it holds.

Each gate is first sent only the last chunk; a gate that is online answers at once with the chunks it
needs, one that is not costs the broker one chunk and is tried again later (backoff, and at once when
its status or any message shows it online) until the deadline. Gates that come online after the
deadline get the bundle from `egate ops collect` (RolloutResumer) or from a later run of the rollout.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
import typer

from egate.edge.uplink.topics import split_topic
from egate.tools.ops.broker_options import BrokerConn, broker_options
from egate.tools.ops.client import GateOffline, OpsClient, OpsError, PushProgress, read_bundle_file
from egate.tools.ops.store import Store, StoreError

log = structlog.get_logger(__name__)

FINAL = ("applied", "rejected")


@dataclass(frozen=True)
class RolloutPlan:
    id: str
    kind: str
    bundle_path: str
    sha256: str
    site: str
    created: float
    deadline: float

    def transfer_id(self, gate: str) -> str:
        """Stable per rollout and gate: a resumed push continues the gate's partial transfer."""
        return hashlib.sha256(f"{self.id}/{self.site}/{gate}".encode()).hexdigest()[:32]


@dataclass
class GateProgress:
    gate: str
    state: str = "pending"  # pending, sending, offline, applied, rejected
    code: str | None = None
    message: str = ""
    attempts: int = 0
    next_try: float = 0.0
    chunks: tuple[int, int] = (0, 0)
    updated: float = field(default_factory=time.time)


# ---------------------------------------------------------------- gate lists


def expand_gate_spec(spec: str, known: list[str]) -> list[str]:
    """`gate-01,gate-02`, ranges `gate-{001..200}`, and globs (`gate-1*`) over the gates the ops
    database has seen; order kept, duplicates dropped."""
    out: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        match = re.search(r"\{(\d+)\.\.(\d+)\}", item)
        if match:
            lo, hi = match.group(1), match.group(2)
            width = len(lo) if lo.startswith("0") else 0
            for n in range(int(lo), int(hi) + 1):
                out.append(item[: match.start()] + str(n).zfill(width) + item[match.end() :])
        elif any(ch in item for ch in "*?["):
            out += [g for g in sorted(known) if fnmatch.fnmatchcase(g, item)]
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def read_gates_file(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return list(dict.fromkeys(line for line in lines if line))


def known_gates(store: Store, site: str) -> list[str]:
    rows = store.query(
        "SELECT DISTINCT gate FROM statuses WHERE site = ? UNION SELECT DISTINCT gate FROM messages WHERE site = ?",
        (site, site),
    )
    return sorted(r[0] for r in rows)


# ---------------------------------------------------------------- persisted state


class RolloutState:
    """The rollout tables of the ops database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create_or_resume(
        self, kind: str, bundle: Path, data: bytes, site: str, gates: list[str], deadline_s: float
    ) -> tuple[RolloutPlan, dict[str, GateProgress]]:
        sha = hashlib.sha256(data).hexdigest()
        rollout_id = f"{kind}-{sha[:16]}-{site}"
        now = time.time()
        rows = self.store.query(
            "SELECT id, kind, bundle_path, sha256, site, created, deadline FROM rollouts WHERE id = ?", (rollout_id,)
        )
        if rows:
            self.store.execute("UPDATE rollouts SET deadline = ? WHERE id = ?", (now + deadline_s, rollout_id))
            created = float(rows[0][5])
        else:
            self.store.execute(
                "INSERT INTO rollouts (id, kind, bundle_path, sha256, site, created, deadline) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rollout_id, kind, str(bundle.resolve()), sha, site, now, now + deadline_s),
            )
            created = now
        plan = RolloutPlan(rollout_id, kind, str(bundle.resolve()), sha, site, created, now + deadline_s)
        for gate in gates:
            self.store.execute(
                "INSERT INTO rollout_gates (rollout_id, site, gate, state, code, message, attempts, updated) "
                "VALUES (?, ?, ?, 'pending', NULL, '', 0, ?) ON CONFLICT DO NOTHING",
                (rollout_id, site, gate, now),
            )
        return plan, self.gates(plan.id)

    def gates(self, rollout_id: str) -> dict[str, GateProgress]:
        rows = self.store.query(
            "SELECT gate, state, code, message, attempts, updated FROM rollout_gates WHERE rollout_id = ? ORDER BY gate",
            (rollout_id,),
        )
        return {
            g: GateProgress(g, state, code, message or "", int(attempts), 0.0, (0, 0), float(updated))
            for g, state, code, message, attempts, updated in rows
        }

    def save(self, plan: RolloutPlan, gate: GateProgress) -> None:
        state = gate.state if gate.state in FINAL else "pending"
        self.store.execute(
            "UPDATE rollout_gates SET state = ?, code = ?, message = ?, attempts = ?, updated = ? "
            "WHERE rollout_id = ? AND site = ? AND gate = ?",
            (state, gate.code, gate.message[:500], gate.attempts, time.time(), plan.id, plan.site, gate.gate),
        )

    def pending_for(self, site: str, gate: str) -> list[RolloutPlan]:
        rows = self.store.query(
            "SELECT r.id, r.kind, r.bundle_path, r.sha256, r.site, r.created, r.deadline FROM rollouts r "
            "JOIN rollout_gates g ON g.rollout_id = r.id WHERE g.site = ? AND g.gate = ? AND g.state = 'pending' "
            "ORDER BY r.created",
            (site, gate),
        )
        return [RolloutPlan(str(a), str(b), str(c), str(d), str(e), float(f), float(g)) for a, b, c, d, e, f, g in rows]


# ---------------------------------------------------------------- pushing


def push_once(
    client: OpsClient,
    plan: RolloutPlan,
    data: bytes,
    gate: GateProgress,
    *,
    chunk_bytes: int,
    offline_after_s: float,
    timeout: float,
    on_progress: Callable[[GateProgress], None] | None = None,
) -> None:
    """One attempt; updates `gate` (applied/rejected/offline or pending after an error)."""
    gate.attempts += 1
    gate.state = "sending"
    progress = PushProgress()
    count = -(-len(data) // chunk_bytes)

    def before(_index: int) -> None:
        gate.chunks = (progress.sent, count)

    try:
        ack = client.push_bundle(
            plan.site,
            gate.gate,
            plan.kind,
            data,
            chunk_bytes=chunk_bytes,
            timeout=timeout,
            transfer_id=plan.transfer_id(gate.gate),
            progress=progress,
            before_send=before,
            offline_after_s=offline_after_s,
        )
    except GateOffline:
        gate.state = "offline"
        gate.message = "no answer"
        return
    except OpsError as exc:
        gate.state = "pending"
        gate.message = str(exc)[:300]
        return
    finally:
        gate.chunks = (progress.sent, count)
        if on_progress is not None:
            on_progress(gate)
    gate.state = ack.status if ack.status in FINAL else "pending"
    gate.code = ack.code
    gate.message = ack.message
    gate.updated = time.time()


class RolloutRunner:
    """Pushes `plan` to its pending gates with at most `concurrency` transfers at once."""

    def __init__(
        self,
        client: OpsClient,
        state: RolloutState,
        plan: RolloutPlan,
        data: bytes,
        gates: dict[str, GateProgress],
        *,
        concurrency: int = 16,
        chunk_bytes: int = 256 * 1024,
        offline_after_s: float = 10.0,
        push_timeout_s: float = 600.0,
        retry_min_s: float = 5.0,
        retry_max_s: float = 120.0,
        on_change: Callable[[GateProgress], None] | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self.plan = plan
        self.data = data
        self.gates = gates
        self.concurrency = concurrency
        self.chunk_bytes = chunk_bytes
        self.offline_after_s = offline_after_s
        self.push_timeout_s = push_timeout_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.on_change = on_change
        self.on_online: Callable[[str, str], None] | None = None  # e.g. RolloutResumer.gate_status
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._jobs: queue.SimpleQueue[GateProgress | None] = queue.SimpleQueue()
        self._running: set[str] = set()

    def gate_seen(self, site: str, gate: str) -> None:
        """A gate showed signs of life: try it now instead of at its backoff time."""
        if site != self.plan.site:
            return
        with self._lock:
            g = self.gates.get(gate)
            if g is not None and g.state == "offline":
                g.next_try = 0.0
        self._wake.set()

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        parts = split_topic(self.client.prefix, message.topic)
        if parts is None:
            return
        site, gate, rest = parts
        if rest == "status" and b'"online"' not in message.payload:
            return
        if rest == "status" and self.on_online is not None:
            self.on_online(site, gate)
        self.gate_seen(site, gate)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> dict[str, Any]:
        """Until every gate is applied/rejected or the deadline passes (or stop()); returns the report."""
        for topic in ("status", "health", "outcome", "event"):
            self.client.subscribe(f"{self.client.prefix}/{self.plan.site}/+/{topic}", self._on_message)
        # One subscription for every gate's bundle acks (each push then only adds its callback).
        self.client.subscribe(f"{self.client.prefix}/{self.plan.site}/+/bundle/ack", None)
        workers = [
            threading.Thread(target=self._work, name=f"egate-rollout-{i}", daemon=True) for i in range(self.concurrency)
        ]
        for worker in workers:
            worker.start()
        try:
            while not self._stop.is_set():
                now = time.time()
                with self._lock:
                    open_gates = [g for g in self.gates.values() if g.state not in FINAL]
                    if not open_gates or now >= self.plan.deadline:
                        break
                    due = [g for g in open_gates if g.gate not in self._running and g.next_try <= time.monotonic()]
                    for g in due:
                        self._running.add(g.gate)
                        g.state = "sending"
                        self._jobs.put(g)
                self._wake.wait(timeout=0.5)
                self._wake.clear()
        finally:
            self._stop.set()
            for _ in workers:
                self._jobs.put(None)
            for worker in workers:
                worker.join(timeout=max(1.0, self.offline_after_s + 1))
        return self.report()

    def _work(self) -> None:
        while True:
            g = self._jobs.get()
            if g is None:
                return
            if self._stop.is_set():
                with self._lock:
                    self._running.discard(g.gate)
                    if g.state == "sending":
                        g.state = "pending"
                continue
            if self.on_change is not None:
                self.on_change(g)
            push_once(
                self.client,
                self.plan,
                self.data,
                g,
                chunk_bytes=self.chunk_bytes,
                offline_after_s=self.offline_after_s,
                timeout=self.push_timeout_s,
            )
            with self._lock:
                self._running.discard(g.gate)
                if g.state not in FINAL:
                    backoff = min(self.retry_max_s, self.retry_min_s * 2 ** max(0, g.attempts - 1))
                    g.next_try = time.monotonic() + backoff
            self.state.save(self.plan, g)
            if self.on_change is not None:
                self.on_change(g)
            self._wake.set()

    def report(self) -> dict[str, Any]:
        with self._lock:
            gates = list(self.gates.values())
        applied = sorted(g.gate for g in gates if g.state == "applied")
        rejected = {g.gate: g.code or "rejected" for g in gates if g.state == "rejected"}
        pending = sorted(g.gate for g in gates if g.state not in FINAL)
        return {
            "rollout": self.plan.id,
            "site": self.plan.site,
            "kind": self.plan.kind,
            "gates": len(gates),
            "applied": len(applied),
            "rejected": rejected,
            "pending": pending,
        }


class RolloutResumer:
    """For `egate ops collect`: a gate seen online with a pending rollout gets its bundle (any deadline)."""

    def __init__(
        self,
        store: Store,
        *,
        conn_factory: Callable[[], OpsClient],
        emit: Callable[[dict[str, Any]], None] | None = None,
        concurrency: int = 4,
        chunk_bytes: int = 256 * 1024,
        offline_after_s: float = 10.0,
        exclude: set[str] | None = None,
    ) -> None:
        """`exclude`: rollout ids someone else is pushing (the running rollout's own)."""
        self.state = RolloutState(store)
        self._exclude = exclude or set()
        self._factory = conn_factory
        self._client: OpsClient | None = None
        self._emit = emit
        self._slots = threading.BoundedSemaphore(concurrency)
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._chunk_bytes = chunk_bytes
        self._offline_after_s = offline_after_s
        self._threads: list[threading.Thread] = []
        self.pushed: list[tuple[str, str, str]] = []  # (rollout, gate, state)

    def gate_status(self, site: str, gate: str, state: str) -> None:
        if state != "online":
            return
        with self._lock:
            if (site, gate) in self._busy:
                return
            self._busy.add((site, gate))
        thread = threading.Thread(target=self._push, args=(site, gate), daemon=True, name="egate-rollout-resume")
        self._threads.append(thread)
        thread.start()

    def _client_once(self) -> OpsClient:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
                self._client.connect()
            return self._client

    def _push(self, site: str, gate: str) -> None:
        try:
            plans = [p for p in self.state.pending_for(site, gate) if p.id not in self._exclude]
            if not plans:
                return
            with self._slots:
                client = self._client_once()
                for plan in plans:
                    try:
                        data = read_bundle_file(Path(plan.bundle_path))
                    except OpsError as exc:
                        log.error("rollout_bundle_unreadable", rollout=plan.id, error=str(exc))
                        continue
                    progress = self.state.gates(plan.id)[gate]
                    push_once(
                        client,
                        plan,
                        data,
                        progress,
                        chunk_bytes=self._chunk_bytes,
                        offline_after_s=self._offline_after_s,
                        timeout=600.0,
                    )
                    self.state.save(plan, progress)
                    self.pushed.append((plan.id, gate, progress.state))
                    if self._emit is not None:
                        self._emit(
                            {
                                "event": "rollout_gate",
                                "rollout": plan.id,
                                "site": site,
                                "gate": gate,
                                "state": progress.state,
                                "code": progress.code,
                            }
                        )
        except Exception as exc:
            log.error("rollout_resume_failed", site=site, gate=gate, error=str(exc))
        finally:
            with self._lock:
                self._busy.discard((site, gate))

    def close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=120)  # a push in progress finishes (or gives up) within its own limits
        if self._client is not None:
            self._client.close()


# ---------------------------------------------------------------- display


class _Display:
    """A rich progress bar and a live per-gate table on a terminal; JSON lines with --json."""

    def __init__(self, runner: RolloutRunner, as_json: bool) -> None:
        self.runner = runner
        self.as_json = as_json
        self._live: Any = None
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Display:
        if self.as_json:
            return self
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self._task = self._progress.add_task(self.runner.plan.id, total=len(self.runner.gates))
        self._live = Live(self._render(), refresh_per_second=4, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table

        gates = sorted(self.runner.gates.values(), key=lambda g: (g.state in FINAL, -g.updated))
        done = sum(1 for g in gates if g.state in FINAL)
        self._progress.update(self._task, completed=done)
        table = Table(show_edge=False)
        for column in ("gate", "state", "tries", "chunks", "code / message"):
            table.add_column(column)
        for g in gates[:25]:
            color = {"applied": "green", "rejected": "red", "offline": "yellow"}.get(g.state, "")
            chunks = f"{g.chunks[0]}/{g.chunks[1]}" if g.chunks[1] else ""
            text = g.code or g.message
            table.add_row(g.gate, f"[{color}]{g.state}[/]" if color else g.state, str(g.attempts), chunks, text[:60])
        if len(gates) > 25:
            table.caption = f"{len(gates) - 25} more gates"
        return Group(self._progress, table)

    def changed(self, gate: GateProgress) -> None:
        if self.as_json:
            line = {
                "event": "gate",
                "gate": gate.gate,
                "state": gate.state,
                "attempts": gate.attempts,
                "code": gate.code,
                "t": round(time.time(), 3),
            }
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        elif self._live is not None:
            self._live.update(self._render())


# ---------------------------------------------------------------- command


@broker_options
def rollout_command(
    bundle: Path = typer.Argument(..., help="Bundle file (signed envelope)."),
    site: str = typer.Option(..., "--site", help="Target site id."),
    gates: str | None = typer.Option(
        None, "--gates", help="Gate ids: a,b,c, ranges gate-{001..200}, globs over gates the ops database has seen."
    ),
    gates_file: Path | None = typer.Option(None, "--gates-file", help="File with one gate id per line."),
    kind: str = typer.Option("gallery", "--kind", help="Bundle kind: gallery, config, keys, ..."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, max=256, help="Transfers at once."),
    deadline: float = typer.Option(1800.0, "--deadline", help="Seconds to keep retrying offline gates."),
    offline_after: float = typer.Option(10.0, "--offline-after", help="Seconds without an answer = offline."),
    chunk_bytes: int = typer.Option(
        256 * 1024, "--chunk-bytes", help="Chunk size (AWS IoT Core: <= 90 KiB, base64 in JSON)."
    ),
    db: str = typer.Option("egate-ops.sqlite", "--db", envvar="EGATE_OPS_DB", help="Ops database (state)."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines: one per gate change, then the report."),
    *,
    conn: BrokerConn,
) -> None:
    """Push a bundle to many gates in parallel; resumable (run it again); ends with a report."""
    from egate.tools.ops.link import _fail

    if (gates is None) == (gates_file is None):
        _fail("give --gates or --gates-file (one of them)", as_json)
    try:
        data = read_bundle_file(bundle)
        store = Store.open(db)
    except (OpsError, StoreError, OSError) as exc:
        _fail(str(exc), as_json)
        return
    targets = (
        read_gates_file(gates_file)
        if gates_file is not None
        else expand_gate_spec(gates or "", known_gates(store, site))
    )
    if not targets:
        _fail("no gates match", as_json)
    state = RolloutState(store)
    plan, progress = state.create_or_resume(kind, bundle, data, site, targets, deadline)
    wanted = set(targets)
    progress = {g: p for g, p in progress.items() if g in wanted}
    client = conn.client()
    try:
        client.connect()
    except OpsError as exc:
        _fail(str(exc), as_json)
        return
    runner = RolloutRunner(
        client,
        state,
        plan,
        data,
        progress,
        concurrency=concurrency,
        chunk_bytes=chunk_bytes,
        offline_after_s=offline_after,
    )
    display = _Display(runner, as_json)
    runner.on_change = display.changed
    # Gates this run sees coming online also get earlier rollouts still pending for them (past deadline).
    resumer = RolloutResumer(
        store,
        conn_factory=conn.client,
        chunk_bytes=chunk_bytes,
        offline_after_s=offline_after,
        exclude={plan.id},
    )
    runner.on_online = lambda s, g: resumer.gate_status(s, g, "online")
    interrupted = False
    with display:
        try:
            report = runner.run()
        except KeyboardInterrupt:
            interrupted = True
            runner.stop()
            report = runner.report()
    resumer.close()
    client.close()
    store.close()
    report["interrupted"] = interrupted
    if as_json:
        sys.stdout.write(json.dumps({"event": "report", **report}) + "\n")
    else:
        typer.echo(
            f"{report['rollout']}: applied {report['applied']}/{report['gates']}, "
            f"rejected {len(report['rejected'])}, pending {len(report['pending'])}"
            + (" (interrupted: run the same command again to resume)" if interrupted else "")
        )
        for g, code in sorted(report["rejected"].items()):
            typer.echo(f"  rejected {g}: {code}")
        if report["pending"]:
            typer.echo(
                "  pending: " + ", ".join(report["pending"][:50]) + (" ..." if len(report["pending"]) > 50 else "")
            )
    if report["pending"]:
        raise typer.Exit(3)
    raise typer.Exit(1 if report["rejected"] else 0)


def register(app: typer.Typer) -> None:
    """Add `rollout` to the `ops` group."""
    app.command("rollout")(rollout_command)
