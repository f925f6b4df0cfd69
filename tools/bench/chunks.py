"""`egate bench chunks`: what a flood of hostile bundle-chunk messages costs the gate.

Starts a local mosquitto and the gate's real link and ops handler in their own process
(tools/bench/chunks_gate.py), publishes N hostile messages on `.../bundle/gallery` as fast as the broker
takes them, then sends one signed `request_status` command and waits for its ack. Reports the gate
process's peak memory (VmHWM), CPU seconds, what its bundle folder holds on disk, the longest log line,
how many chunk acks came back and how long the signed command waited behind the flood.

The flood mixes four kinds of message, none signed:
- `new`: chunk 0 of a fresh transfer (random id) declaring 1 MiB in 16-byte chunks;
- `wide`: chunks of one transfer declaring 1,000,000 one-byte chunks (bookkeeping per chunk);
- `big`: a 256 KiB chunk whose geometry is wrong (validation error with a large input);
- `junk`: bytes that are not JSON.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion

from egate.edge.trust.bundles import BundleScope, CommandPayload, canonical_json, sign_bundle
from egate.edge.trust.keys import key_id_for
from egate.tools.rig.local_broker import Mosquitto

SITE, GATE = "bench-site", "bench-gate"
PREFIX = f"egate/v1/{SITE}/{GATE}"
KINDS = ("new", "wide", "big", "junk")


def hostile_message(i: int) -> bytes:
    """The i-th message of the flood (deterministic mix of the four kinds)."""
    kind = KINDS[i % 4]
    sha = "ab" * 32
    if kind == "new":
        body: dict[str, Any] = {
            "v": 1,
            "transfer_id": f"flood-{i:06d}",
            "kind": "gallery",
            "index": 0,
            "count": 65536,
            "chunk_bytes": 16,
            "total_bytes": 1 << 20,
            "sha256": sha,
            "data": base64.b64encode(os.urandom(16)).decode(),
        }
    elif kind == "wide":
        body = {
            "v": 1,
            "transfer_id": "flood-wide",
            "kind": "gallery",
            "index": (i * 7919) % 999_999,
            "count": 1_000_000,
            "chunk_bytes": 1,
            "total_bytes": 1_000_000,
            "sha256": sha,
            "data": base64.b64encode(os.urandom(1)).decode(),
        }
    elif kind == "big":
        body = {
            "v": 1,
            "transfer_id": f"flood-big-{i:06d}",
            "kind": "gallery",
            "index": 0,
            "count": 2,
            "chunk_bytes": 1024,
            "total_bytes": 2048,
            "sha256": sha,
            "data": base64.b64encode(os.urandom(256 * 1024)).decode(),
        }
    else:
        return b"\x00not json\xff" * 8
    return json.dumps(body).encode()


def _proc_figures(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_s": (int(stat[11]) + int(stat[12])) / ticks,
    }


def _disk(folder: Path) -> dict[str, float]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    allocated = sum(p.stat().st_blocks * 512 for p in files)
    apparent = sum(p.stat().st_size for p in files)
    return {"files": len(files), "allocated_mib": allocated / 2**20, "apparent_mib": apparent / 2**20}


class _Peer:
    """The attacker's (and then ops') MQTT client: publishes at QoS 1 and counts the gate's acks."""

    def __init__(self, port: int) -> None:
        self.acks: dict[str, int] = {}
        self.ack_max_bytes = 0
        self.cmd_acks: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._cmd_event = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-attacker")
        self.client.max_inflight_messages_set(100)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(f"{PREFIX}/bundle/ack", 1), (f"{PREFIX}/cmd/ack", 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            value = json.loads(message.payload)
        except ValueError:
            return
        with self._lock:
            if message.topic.endswith("/cmd/ack"):
                self.cmd_acks.append(value)
                self._cmd_event.set()
                return
            key = f"{value.get('status')}:{value.get('code')}"
            self.acks[key] = self.acks.get(key, 0) + 1
            self.ack_max_bytes = max(self.ack_max_bytes, len(message.payload))

    def wait_command(self, timeout: float) -> bool:
        return self._cmd_event.wait(timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_bench(count: int, folder: Path, command_timeout: float) -> dict[str, Any]:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    state = folder / "gate"
    state.mkdir(parents=True)
    with Mosquitto(folder / "broker") as broker:
        log_path = folder / "gate.log"
        with log_path.open("wb") as log_file:
            gate = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "egate.tools.bench.chunks_gate",
                    "--state",
                    str(state),
                    "--port",
                    str(broker.port),
                    "--trust-key",
                    base64.b64encode(public).decode(),
                ],
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            try:
                return _flood(gate, broker.port, private, public, count, state, log_path, command_timeout)
            finally:
                gate.terminate()
                try:
                    gate.wait(10)
                except subprocess.TimeoutExpired:
                    gate.kill()
                    gate.wait()


def _flood(
    gate: subprocess.Popen[str],
    port: int,
    private: Ed25519PrivateKey,
    public: bytes,
    count: int,
    state: Path,
    log_path: Path,
    command_timeout: float,
) -> dict[str, Any]:
    assert gate.stdout is not None
    line = gate.stdout.readline()
    if not line:
        raise RuntimeError(f"bench gate did not start; see {log_path}")
    pid = gate.pid
    before = _proc_figures(pid)
    log_before = log_path.stat().st_size
    peer = _Peer(port)
    try:
        start = time.perf_counter()
        infos = [peer.client.publish(f"{PREFIX}/bundle/gallery", hostile_message(i), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(timeout=120)
        flood_s = time.perf_counter() - start
        now = datetime.now(timezone.utc)
        payload = CommandPayload(command_id="bench-status", name="request_status")
        raw = sign_bundle(
            kind="command",
            version=int(now.timestamp() * 1000),
            payload=canonical_json(payload.model_dump(mode="json")),
            private_key=private,
            key_id=key_id_for(public),
            scope=BundleScope(site=SITE, gates=(GATE,)),
            issued_at=now,
            expires_at=now + timedelta(seconds=600),
        )
        sent = time.perf_counter()
        peer.client.publish(f"{PREFIX}/cmd", raw, qos=1)
        answered = peer.wait_command(command_timeout)
        command_s = time.perf_counter() - sent if answered else None
        after = _proc_figures(pid)
    finally:
        peer.close()
    longest = 0
    with log_path.open("rb") as fh:
        fh.seek(log_before)
        for text in fh:
            longest = max(longest, len(text))
    return {
        "messages": count,
        "flood_publish_s": round(flood_s, 2),
        "command_ack_s": None if command_s is None else round(command_s, 2),
        "command_status": peer.cmd_acks[0].get("status") if peer.cmd_acks else None,
        "gate_cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "gate_rss_mib_before": round(before["rss_mib"], 1),
        "gate_peak_rss_mib": round(after["peak_rss_mib"], 1),
        "bundle_dir": {k: round(v, 2) for k, v in _disk(state / "bundles-incoming").items()},
        "log_bytes": log_path.stat().st_size - log_before,
        "log_longest_line": longest,
        "chunk_acks": dict(sorted(peer.acks.items())),
        "chunk_ack_max_bytes": peer.ack_max_bytes,
    }


def chunks_command(
    count: int = typer.Option(10_000, "--count", help="Hostile messages to send."),
    command_timeout: float = typer.Option(
        300.0, "--command-timeout", help="Seconds to wait for the signed command's ack after the flood."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Flood the gate's link with unsigned hostile chunks; report its memory, CPU, disk and log cost."""
    with tempfile.TemporaryDirectory(prefix="egate-bench-chunks-") as tmp:
        result = run_bench(count, Path(tmp), command_timeout)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:>22}: {value}")


def register(app: typer.Typer) -> None:
    app.command("chunks")(chunks_command)
