"""`egate bench fleet`: many simulated gates on a three-node RabbitMQ cluster, collectors into SQLite and
PostgreSQL, a broker node killed mid-run, then a gallery rolled out to every gate.

Everything runs here on loopback: the cluster (tools/rig/local_rabbit.py), PostgreSQL (tools/rig/local_postgres.py),
the gates (tools/sim/fleet.py: egate's own Outbox and MqttLink; tools/sim/fleet_pool.py: ~50 per worker
process), two collectors
(tools/ops/collect.py, one per database, each with its own persistent session on a quorum queue) and
the rollout (tools/ops/rollout.py). Each gate has its own account and topic permissions.

Phase 1: every gate sends `outcomes` outcomes; one node is SIGKILLed after a third of them and
restarted. Both databases must end with every outcome exactly once (lost and duplicates: goal 0).
Phase 2: a `gallery_mb` bundle rolled out to all gates with `offline` of them down at the start and
started `late_s` later. Reported: time to 100 %, bytes through the broker (TCP payload bytes in and
out of the broker's MQTT sockets during the rollout, from the kernel), collector rows/s per database,
and the machine's load average over the run (the figures depend on what else runs beside the bench).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog
import typer

from egate.tools.ops.broker_acl import gate_username, rabbitmq_gate_permissions, rabbitmq_ops_permissions
from egate.tools.ops.client import OpsClient
from egate.tools.ops.rollout import RolloutRunner, RolloutState
from egate.tools.ops.store import Store
from egate.tools.rig.local_rabbit import RabbitCluster
from egate.tools.sim.fleet_pool import GateSpec, SimGatePool

log = structlog.get_logger(__name__)

SITE = "bench"
OPS_USER = "egate-ops"


def _broker_socket_bytes(ports: list[int]) -> dict[tuple[str, str], int]:
    """Bytes sent + received so far by each broker-side TCP socket on `ports` (the kernel's tcp_info via
    `ss`; RabbitMQ 3.10 keeps no byte counters for MQTT connections)."""
    out = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True, timeout=30).stdout
    wanted = {f":{p}" for p in ports}
    result: dict[tuple[str, str], int] = {}
    key: tuple[str, str] | None = None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            fields = line.split()
            key = None
            if len(fields) >= 4 and any(fields[2].endswith(p) for p in wanted):
                key = (fields[2], fields[3])
            continue
        if key is not None:
            sent = re.search(r"bytes_acked:(\d+)", line)
            received = re.search(r"bytes_received:(\d+)", line)
            result[key] = int(sent.group(1) if sent else 0) + int(received.group(1) if received else 0)
    return result


def _bytes_since(before: dict[tuple[str, str], int], ports: list[int]) -> int:
    after = _broker_socket_bytes(ports)
    return sum(max(0, n - before.get(key, 0)) for key, n in after.items())


def _ops_client(cluster: RabbitCluster, password: str, node: int, **extra: Any) -> OpsClient:
    ports = cluster.mqtt_ports
    others = [(cluster.host, p) for i, p in enumerate(ports) if i != node]
    return OpsClient(
        cluster.host,
        ports[node],
        username=OPS_USER,
        password=password,
        protocol="3.1.1",
        fallback_hosts=others,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        **extra,
    )


class LoadSampler:
    """The machine's 1-minute load average, sampled while the bench runs (min, mean, max)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self._every_s = every_s
        self._samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, Any]:
        samples = [*self._samples, os.getloadavg()[0]]
        return {
            "cpus": os.cpu_count(),
            "loadavg_1m_min": round(min(samples), 2),
            "loadavg_1m_mean": round(sum(samples) / len(samples), 2),
            "loadavg_1m_max": round(max(samples), 2),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        }


class CollectorProcess:
    """`egate ops collect` in a process of its own (as in production; not sharing the gates' GIL)."""

    def __init__(
        self, cluster: RabbitCluster, node: int, db: str, pwfile: Path, client_id: str, count: int, timeout_s: float
    ) -> None:
        import sys

        ports = cluster.mqtt_ports
        args = [
            sys.executable,
            "-m",
            "egate.tools.cli",
            "ops",
            "collect",
            "--json",
            "--no-rollouts",
            "--site",
            SITE,
            "--db",
            db,
            "--client-id",
            client_id,
            "--count",
            str(count),
            "--timeout",
            str(timeout_s),
            "--protocol",
            "3.1.1",
            "--host",
            cluster.host,
            "--port",
            str(ports[node]),
            "--user",
            OPS_USER,
            "--password-file",
            str(pwfile),
        ]
        for i, port in enumerate(ports):
            if i != node:
                args += ["--node", f"{cluster.host}:{port}"]
        self.log = pwfile.parent / f"{client_id}.log"
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline() or "{}")  # "collecting": subscribed, ready
        if first.get("event") != "collecting":
            raise RuntimeError(f"collector did not start: {first} {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        last: dict[str, Any] = {}
        for line in self.proc.stdout:
            try:
                last = json.loads(line)
            except ValueError:
                continue
        self.proc.wait()
        return last


def _replay_rate(target: Store, source: Store, batch: int = 500) -> float | None:
    """Rows/s of the collector's write path alone: the stored outcomes again, under new ids, in batches
    of `batch` (one transaction each), into `target` (site `bench-replay`, so nothing is mixed up)."""
    import uuid

    rows = source.query(
        "SELECT gate, seq, kind, ts, payload FROM messages WHERE kind = 'outcome' AND site = ?", (SITE,)
    )
    envelopes = [
        (
            "bench-replay",
            {"id": str(uuid.uuid4()), "seq": seq, "gate": gate, "kind": kind, "ts": ts, "payload": json.loads(payload)},
        )
        for gate, seq, kind, ts, payload in rows
    ]
    if not envelopes:
        return None
    start = time.perf_counter()
    for i in range(0, len(envelopes), batch):
        target.store_batch(envelopes[i : i + batch])
    return round(len(envelopes) / (time.perf_counter() - start), 1)


def run_fleet_bench(
    cluster: RabbitCluster,
    workdir: Path,
    *,
    gates: int = 200,
    outcomes: int = 50,
    offline: int = 20,
    gallery_bytes: int = 5 * 1024 * 1024,
    kill_node: int | None = 1,
    postgres_dsn: str | None = None,
    ops_password: str | None = None,
    late_s: float = 10.0,
    timeout_s: float = 600.0,
    processes: int | None = None,
    concurrency: int = 16,
    chunk_bytes: int = 256 * 1024,
) -> dict[str, Any]:
    """Run both phases against a running cluster; returns the figures (see the module docstring)."""
    with LoadSampler() as load:
        result = _run(
            cluster,
            workdir,
            gates=gates,
            outcomes=outcomes,
            offline=offline,
            gallery_bytes=gallery_bytes,
            kill_node=kill_node,
            postgres_dsn=postgres_dsn,
            ops_password=ops_password,
            late_s=late_s,
            timeout_s=timeout_s,
            processes=processes if processes is not None else max(1, min(8, -(-gates // 50))),
            concurrency=concurrency,
            chunk_bytes=chunk_bytes,
        )
    result["machine"] = load.summary()
    return result


def _run(
    cluster: RabbitCluster,
    workdir: Path,
    *,
    gates: int,
    outcomes: int,
    offline: int,
    gallery_bytes: int,
    kill_node: int | None,
    postgres_dsn: str | None,
    ops_password: str | None,
    late_s: float,
    timeout_s: float,
    processes: int,
    concurrency: int,
    chunk_bytes: int,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    ports = cluster.mqtt_ports
    names = [f"gate-{i:03d}" for i in range(gates)]
    passwords = {g: f"pw-{g}-{random.getrandbits(32):x}" for g in names}
    write, read = rabbitmq_gate_permissions()
    accounts = [(gate_username("rabbitmq", SITE, g), passwords[g], write, read) for g in names]
    if ops_password is None:
        ops_password = f"ops-{random.getrandbits(48):x}"
        ow, orr = rabbitmq_ops_permissions()
        accounts.append((OPS_USER, ops_password, ow, orr))
    t_users = time.monotonic()
    cluster.import_users(accounts)
    users_s = time.monotonic() - t_users

    stores = {"sqlite": Store.open(str(workdir / "ops.sqlite"))}
    if postgres_dsn:
        stores["postgresql"] = Store.open(postgres_dsn)
    total = gates * outcomes
    pwfile = workdir / "ops-password"
    pwfile.write_text(ops_password)
    pwfile.chmod(0o600)
    urls = {"sqlite": str(workdir / "ops.sqlite"), "postgresql": postgres_dsn or ""}
    collectors: dict[str, CollectorProcess] = {}
    for i, db in enumerate(stores):
        # The SQLite collector sits on the node that gets killed: its session must move with it.
        node = kill_node if (kill_node is not None and i == 0) else (i + 2) % len(ports)
        collectors[db] = CollectorProcess(
            cluster, node, urls[db], pwfile, f"bench-collector-{db}-{os.getpid()}", total, timeout_s
        )

    specs = [
        GateSpec(g, cluster.host, ports[i % len(ports)], gate_username("rabbitmq", SITE, g), passwords[g])
        for i, g in enumerate(names)
    ]
    # Downlink QoS 0 (link.downlink_qos): RabbitMQ 3.10 makes a clean session's QoS 1 subscription a durable
    # classic queue on the gate's node; after that node was killed, dozens of gates found theirs "home node
    # down" for good and could not subscribe again (docs/fleet.md). A QoS 0 subscription queue is transient.
    try:
        with SimGatePool(workdir, SITE, specs, processes=processes, downlink_qos=0) as pool:
            return _phases(
                cluster,
                pool,
                names,
                stores,
                collectors,
                ops_password,
                outcomes=outcomes,
                offline=offline,
                gallery_bytes=gallery_bytes,
                kill_node=kill_node,
                late_s=late_s,
                timeout_s=timeout_s,
                workdir=workdir,
                users_s=users_s,
                concurrency=concurrency,
                chunk_bytes=chunk_bytes,
            )
    finally:
        for collector in collectors.values():
            collector.stop()  # after an error or Ctrl-C: not left running until their own timeout


def _phases(
    cluster: RabbitCluster,
    pool: SimGatePool,
    names: list[str],
    stores: dict[str, Store],
    collectors: dict[str, CollectorProcess],
    ops_password: str,
    *,
    outcomes: int,
    offline: int,
    gallery_bytes: int,
    kill_node: int | None,
    late_s: float,
    timeout_s: float,
    workdir: Path,
    users_s: float,
    concurrency: int,
    chunk_bytes: int,
) -> dict[str, Any]:
    ports = cluster.mqtt_ports
    gates = len(names)
    total = gates * outcomes
    t_start = time.monotonic()
    # Gates come up in waves, as a terminal's gates would after a power cut, not all in one instant:
    # RabbitMQ registers each MQTT client id in a cluster-wide Raft log, and a storm of CONNECTs on a
    # loaded machine left some of them without a CONNACK for minutes.
    connected = 0
    for first in range(0, gates, 20):
        connected += len(pool.start(names[first : first + 20], timeout_s=60))
    connect_s = time.monotonic() - t_start

    # ---------------------------------------------------------------- phase 1: outcomes + node kill
    killed = threading.Event()
    restarted = threading.Event()
    kill_times: dict[str, float] = {}

    def kill_and_restart() -> None:
        assert kill_node is not None
        kill_times["killed"] = time.monotonic()
        cluster.kill(kill_node)
        killed.set()
        cluster.start_node(kill_node)
        kill_times["restarted"] = time.monotonic()
        restarted.set()

    t_phase1 = time.monotonic()
    killer: threading.Thread | None = None

    for n in range(outcomes):
        if kill_node is not None and killer is None and n >= outcomes // 3:
            killer = threading.Thread(target=kill_and_restart, daemon=True)
            killer.start()
            killed.wait(30)
        pool.append(n)
    appended_s = time.monotonic() - t_phase1
    if killer is not None:
        killer.join(timeout=timeout_s)
    done_at: dict[str, float] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for db, collector in collectors.items():
        summaries[db] = collector.wait()
        done_at[db] = time.monotonic()
    sims = pool.stats()
    phase1: dict[str, Any] = {
        "outcomes_sent": total,
        "append_s": round(appended_s, 2),
        "node_killed": kill_node,
        "node_down_s": round(kill_times["restarted"] - kill_times["killed"], 1) if "restarted" in kill_times else None,
        "outboxes_drained": all(s["depth"] == 0 for s in sims.values()),
        # Not yet delivered when the collectors' wait ended: still safe in the gates' outboxes.
        "still_in_gate_outboxes": sum(s["depth"] or 0 for s in sims.values()),
        "parked_by_gates": sum(s["parked"] for s in sims.values()),
    }
    for db, store in stores.items():
        rows = store.query(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM messages WHERE kind = 'outcome' AND site = ?", (SITE,)
        )[0]
        pairs = store.query(
            "SELECT COUNT(*) FROM (SELECT gate, seq FROM messages WHERE kind = 'outcome' AND site = ? "
            "GROUP BY gate, seq HAVING COUNT(*) > 1) AS d",
            (SITE,),
        )[0][0]
        summary = summaries[db]
        phase1[db] = {
            "stored": int(rows[0]),
            # Sent but not stored when the wait ended (0 once everything arrived; see still_in_gate_outboxes).
            "lost": total - int(rows[1]),
            "duplicates_stored": int(pairs),
            "redeliveries_skipped": summary.get("duplicates"),
            "gaps": len(store.find_gaps()),
            "seconds_to_all_stored": round(done_at[db] - t_phase1, 2),
            "live_rows_per_s": summary.get("rows_per_s"),
            "store_rows_per_s": _replay_rate(store, stores["sqlite"]),
        }

    # ---------------------------------------------------------------- phase 2: rollout
    late = names[:offline]
    pool.close(late)
    bundle = workdir / "gallery.bundle"
    bundle.write_bytes(os.urandom(gallery_bytes))
    data = bundle.read_bytes()
    octets_before = _broker_socket_bytes(ports)
    ops = _ops_client(cluster, ops_password, 0)
    ops.connect(timeout=30)
    state = RolloutState(stores["sqlite"])
    plan, progress = state.create_or_resume("gallery", bundle, data, SITE, names, timeout_s)
    applied_at: dict[str, float] = {}
    t_roll = time.monotonic()

    def changed(g: Any) -> None:
        if g.state == "applied":
            applied_at.setdefault(g.gate, time.monotonic() - t_roll)

    runner = RolloutRunner(
        ops,
        state,
        plan,
        data,
        progress,
        concurrency=concurrency,
        chunk_bytes=chunk_bytes,
        offline_after_s=5.0,
        retry_min_s=5.0,
        retry_max_s=20.0,
        on_change=changed,
    )
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(runner.run()), daemon=True)
    thread.start()
    time.sleep(late_s)  # the offline gates stay down this long: part of the scenario, not a synchronisation
    pool.start(late, timeout_s=60)
    thread.join(timeout=timeout_s + 60)
    if not result:  # the runner is still busy past the deadline: report where it stands
        runner.stop()
        result = runner.report()
    octets = _bytes_since(octets_before, ports)
    ops.close()
    digest = hashlib.sha256(data).hexdigest()
    holding = sum(1 for s in pool.stats().values() if digest in s["applied"])
    phase2 = {
        "gates": gates,
        "offline_at_start": offline,
        "online_after_s": late_s,
        "gallery_bytes": gallery_bytes,
        "applied": result.get("applied"),
        "rejected": result.get("rejected"),
        "pending": len(result.get("pending", [])),
        "time_to_100pct_s": round(max(applied_at.values()), 1) if len(applied_at) == gates else None,
        "time_to_online_gates_s": round(max((t for g, t in applied_at.items() if g not in set(late)), default=0.0), 1),
        # Checked on the gates themselves: the bundle's SHA-256 among what each gate applied.
        "gates_holding_bundle": holding,
        "concurrency": concurrency,
        "chunk_bytes": chunk_bytes,
        "bytes_through_broker": octets,
        "payload_bytes": gallery_bytes * gates,
    }
    for store in stores.values():
        store.close()
    return {
        "bench": "fleet",
        "broker": "rabbitmq 3-node cluster (MQTT 3.1.1, quorum queues)",
        "gates": gates,
        "sim_processes": pool.processes,
        "gate_downlink_qos": 0,
        "all_connected": connected == gates,
        "connected": connected,
        "connect_s": round(connect_s, 1),
        "users_import_s": round(users_s, 1),
        "outcomes": phase1,
        "rollout": phase2,
    }


def fleet_command(
    gates: int = typer.Option(200, "--gates", min=1, help="Simulated gates."),
    outcomes: int = typer.Option(50, "--outcomes", min=1, help="Outcomes per gate."),
    offline: int = typer.Option(20, "--offline", min=0, help="Gates offline when the rollout starts."),
    gallery_mb: float = typer.Option(5.0, "--gallery-mb", help="Rolled-out bundle size (MB)."),
    postgres: bool = typer.Option(True, "--postgres/--no-postgres", help="Also collect into PostgreSQL."),
    kill: bool = typer.Option(True, "--kill/--no-kill", help="Kill and restart a broker node mid-run."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    keep: bool = typer.Option(False, "--keep", help="Keep the work folder (databases, logs)."),
    processes: int = typer.Option(0, "--processes", min=0, help="Worker processes for the gates (0: 1 per 50)."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="Rollout transfers at once."),
    chunk_kib: int = typer.Option(256, "--chunk-kib", min=16, help="Rollout chunk size (KiB)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds each phase may take before it is cut off."),
) -> None:
    """Fleet scale test on a local three-node RabbitMQ cluster (needs rabbitmq-server and postgresql)."""
    from egate.tools.rig.local_postgres import Postgres

    workdir = Path(tempfile.mkdtemp(prefix="egate-bench-fleet-"))
    pg: Postgres | None = None
    try:
        # 1 GB per node: a rollout holds chunks for 16 gates at once in the broker; at the tests' 400 MB the
        # node taking the ops connection kept raising its memory alarm, which blocks every publisher.
        with RabbitCluster(workdir / "rabbit", memory_mb=1024) as cluster:
            if postgres:
                pg = Postgres()
                pg.start()
            result = run_fleet_bench(
                cluster,
                workdir / "run",
                gates=gates,
                outcomes=outcomes,
                offline=min(offline, gates),
                gallery_bytes=int(gallery_mb * 1024 * 1024),
                kill_node=1 if kill else None,
                postgres_dsn=pg.dsn if pg is not None else None,
                processes=processes or None,
                concurrency=concurrency,
                chunk_bytes=chunk_kib * 1024,
                timeout_s=timeout,
            )
    finally:
        if pg is not None:
            pg.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(json.dumps(result, indent=2))
    p1 = result["outcomes"]
    ok = all(p1[db]["lost"] == 0 and p1[db]["duplicates_stored"] == 0 for db in ("sqlite", "postgresql") if db in p1)
    raise typer.Exit(0 if ok and result["rollout"]["pending"] == 0 else 1)


def register(app: typer.Typer) -> None:
    """Add `fleet` to the `bench` group."""
    app.command("fleet")(fleet_command)
