"""`egate bench link`: outbox commit rate and drain rate against a real local mosquitto it starts itself.

Commit: N outcomes appended one by one, each its own fsynced transaction (what the lane waits for).
Drain: the link forwards the N queued outcomes at QoS 1 and deletes each after its PUBACK; the clock
stops when the outbox is empty. Put `--dir` on the gate's real state disk: fsync cost is the disk's.
"""

from __future__ import annotations

import json
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import typer

from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.outbox import Outbox
from egate.tools.rig.local_broker import MOSQUITTO, Mosquitto


def _outcome(i: int) -> dict[str, Any]:
    # Shape and size of a real outcome record (BSI-style transaction log: no image, no template).
    return {
        "txn_id": f"txn-{i:08d}",
        "mode": "exit",
        "decision": "pass" if i % 7 else "refer",
        "document": {"type": "P", "issuer": "D", "number_masked": "C0***7", "expiry_ok": True},
        "comparisons": [{"kind": "1:N", "score": 0.412, "threshold": 0.6, "gallery_version": "g-2041"}],
        "liveness": {"score": 0.97, "threshold": 0.5},
        "timings_ms": {"detect": 4.1, "embed": 17.8, "match": 0.9, "decide": 0.1, "total": 1840.0},
        "versions": {"software": "0.1.0", "config": "c-77", "model": "dlib-resnet-v1"},
    }


def _mosquitto_version() -> str:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5).stdout
    except OSError:
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.replace("mosquitto version ", "").strip() or "unknown"


def run_bench(count: int, folder: Path, max_inflight: int) -> dict[str, Any]:
    site, gate = "bench-site", "bench-gate"
    outbox = Outbox(folder / "outbox.sqlite", OutboxConfig(max_messages=max(count * 2, 100)), gate)
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        outbox.append("outcome", _outcome(i))
        latencies.append(time.perf_counter() - t0)
    commit_s = time.perf_counter() - start
    queued_bytes = outbox.bytes_used()

    result: dict[str, Any]
    with Mosquitto(folder / "broker") as broker:
        config = LinkConfig(
            host=broker.host,
            port=broker.port,
            tls=False,
            cert_credential=None,
            key_credential=None,
            max_inflight=max_inflight,
            reconnect_min_s=0.1,
        )
        link = MqttLink(
            config,
            site,
            gate,
            outbox,
            lambda: StatusPayload(state="online", site=site, gate=gate),
            LinkCredentials(),
        )
        empty = threading.Event()
        link.start()
        try:
            if not link.wait_connected(10):
                raise RuntimeError(f"bench link did not connect to the local broker: {link.last_error}")
            drain_start = time.perf_counter()
            while not empty.wait(0.005):
                if outbox.depth() == 0:
                    empty.set()
                if time.perf_counter() - drain_start > 600:
                    raise RuntimeError("outbox did not drain within 600 s")
            drain_s = time.perf_counter() - drain_start
        finally:
            link.close()
            outbox.close()
    ordered = sorted(latencies)
    result = {
        "bench": "link",
        "count": count,
        "payload_bytes_mean": round(queued_bytes / count, 1),
        "commit_per_s": round(count / commit_s, 1),
        "append_ms_p50": round(statistics.median(ordered) * 1000, 3),
        "append_ms_p99": round(ordered[int(0.99 * (count - 1))] * 1000, 3),
        "drain_per_s": round(count / drain_s, 1),
        "drain_s": round(drain_s, 3),
        "max_inflight": max_inflight,
        "synchronous": "FULL",
        "journal_mode": "WAL",
        "db_dir": str(folder),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": _mosquitto_version(),
        "machine": platform.machine(),
    }
    return result


def link_command(
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    count: int = typer.Option(10_000, "--count", min=100, help="Outcomes to commit and drain."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Where the bench outbox goes (default: a temp dir; use the state disk)."
    ),
    max_inflight: int = typer.Option(20, "--max-inflight", min=1, help="link.max_inflight for the drain."),
) -> None:
    """Outbox commit rate and drain rate for N outcomes against a local mosquitto."""
    if shutil.which(MOSQUITTO) is None and not Path(MOSQUITTO).exists():
        typer.echo("egate bench link: mosquitto not installed (apt install mosquitto)", err=True)
        raise typer.Exit(2)
    from egate.edge.service.logs import configure_logging

    # Logs to the process's real stderr: stdout carries only the result (one JSON line with --json).
    # Not `sys.stderr`: under a test runner that is a capture buffer closed after the command.
    configure_logging(level="warning", fmt="json", stream=sys.__stderr__ or sys.stderr)
    with tempfile.TemporaryDirectory(prefix="egate-bench-link-", dir=directory) as tmp:
        result = run_bench(count, Path(tmp), max_inflight)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"outbox commit: {result['commit_per_s']:.0f}/s (append p50 {result['append_ms_p50']} ms, "
        f"p99 {result['append_ms_p99']} ms)\n"
        f"drain at QoS 1: {result['drain_per_s']:.0f}/s ({count} outcomes in {result['drain_s']} s, "
        f"max_inflight {max_inflight})"
    )


def register(app: typer.Typer) -> None:
    """Add `link` to the `bench` group."""
    app.command("link")(link_command)
