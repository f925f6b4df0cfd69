"""Simulated gates for fleet tests and `egate bench fleet`: egate's own Outbox and MqttLink, many per process.

A `SimGate` is everything of a gate that talks to ops (outbox, link, bundle handler) without camera,
engine or turnstile; its outcomes are synthetic records shaped like egate.edge.session.records.OutcomeRecord.
"""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import BundleAck, StatusPayload
from egate.edge.uplink.outbox import Outbox


def synthetic_outcome(
    gate: str, rng: random.Random, *, score_mean: float = 0.72, refer_rate: float = 0.08, when: datetime | None = None
) -> dict[str, Any]:
    """An outcome record (no personal data): accept with a match score, or refer with a reason."""
    end = when or datetime.now(timezone.utc)
    took_ms = max(300.0, rng.gauss(1800.0, 400.0))
    start = end - timedelta(milliseconds=took_ms)
    refer = rng.random() < refer_rate
    if refer:
        reason = rng.choice(["NO_MATCH", "LOW_QUALITY", "NO_FACE", "DOCUMENT_INVALID", "CAPTURE_TIMEOUT"])
        score = rng.uniform(0.1, 0.4)
        passed = False
    else:
        reason = "MATCH"
        score = min(0.99, max(0.45, rng.gauss(score_mean, 0.06)))
        passed = True
    comparisons = []
    if reason in ("MATCH", "NO_MATCH"):
        comparisons.append(
            {
                "kind": "document",
                "subject_id": None,
                "score": round(score, 4),
                "threshold": 0.42,
                "higher_is_better": True,
                "passed": passed,
            }
        )
    return {
        "schema_version": 1,
        "txn_id": str(uuid.uuid4()),
        "gate_id": gate,
        "mode": "exit",
        "started_at": start.isoformat(),
        "ended_at": end.isoformat(),
        "decision": "refer" if refer else "accept",
        "reasons": [reason],
        "comparisons": comparisons,
        "timings_ms": {"total": round(took_ms, 1)},
    }


@dataclass
class SimGate:
    site: str
    gate: str
    outbox: Outbox
    link: MqttLink
    applied: list[str] = field(default_factory=list)  # sha256 of applied bundles
    reject_code: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_bundle(self, kind: str, payload: bytes) -> BundleAck:
        digest = hashlib.sha256(payload).hexdigest()
        if self.reject_code is not None:
            return BundleAck(kind=kind, gate=self.gate, status="rejected", code=self.reject_code, message="simulated")
        with self._lock:
            self.applied.append(digest)
        return BundleAck(kind=kind, gate=self.gate, status="applied")

    def start(self) -> None:
        self.link.start()

    def close(self) -> None:
        self.link.close()
        self.outbox.close()


def make_sim_gate(
    folder: Path,
    site: str,
    gate: str,
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    protocol: str = "auto",
    reconnect_max_s: float = 1.0,
    downlink_qos: int = 1,
    outbox_config: OutboxConfig | None = None,
    status: Callable[[], StatusPayload] | None = None,
) -> SimGate:
    folder.mkdir(parents=True, exist_ok=True)
    config = LinkConfig(
        host=host,
        port=port,
        protocol=protocol,  # type: ignore[arg-type]
        tls=False,
        cert_credential=None,
        key_credential=None,
        username=username,
        reconnect_min_s=0.1,
        reconnect_max_s=reconnect_max_s,
        keepalive_s=30,
        downlink_qos=downlink_qos,  # type: ignore[arg-type]
    )
    outbox = Outbox(folder / "outbox.sqlite", outbox_config or OutboxConfig(), gate)

    def default_status() -> StatusPayload:
        return StatusPayload(state="online", site=site, gate=gate, mode="exit")

    link = MqttLink(
        config,
        site,
        gate,
        outbox,
        status or default_status,
        LinkCredentials(username=username, password=password.encode() if password else None),
        bundle_dir=folder / "bundles",
    )
    sim = SimGate(site, gate, outbox, link)
    link.set_bundle_handler(sim.handle_bundle)
    return sim
