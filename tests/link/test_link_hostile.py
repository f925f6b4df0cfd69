"""Hostile downlink traffic against the real link over mosquitto: bounded, answered, nothing unsigned on disk."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from egate.edge.gallery.store import GalleryStore
from egate.edge.lane.ops import OpsHandler
from egate.edge.settings.link import OutboxConfig
from egate.edge.trust.bundles import VersionState
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.outbox import Outbox
from egate.tools.bench.chunks import hostile_message
from tests.support.broker import Mosquitto, wait_until
from tests.support.gallery_fixtures import (
    GALLERY_KEY,
    GATE,
    NOW,
    gallery_bundle,
    new_ops_key,
    random_subjects,
    trust_with,
    verifier_for,
)
from tests.support.link_fixtures import Recorder, fast_link_config

ROOT = f"egate/v1/{GATE.site}/{GATE.gate}"


@dataclass
class Gate:
    link: MqttLink
    ops: OpsHandler
    store: GalleryStore
    bundle_dir: Path


def _gate(tmp_path: Path, broker: Mosquitto, **config: object) -> tuple[Gate, Outbox]:
    key = new_ops_key()
    trust = trust_with(tmp_path / "trust", key)
    store = GalleryStore(tmp_path / "gallery", GALLERY_KEY)
    ops = OpsHandler(verifier_for(trust, VersionState(None)), store, trust, lambda e: None, config_dir=tmp_path / "cfg")
    ops._clock = lambda: NOW  # the fixtures sign for a fixed instant
    outbox = Outbox(tmp_path / "outbox.sqlite", OutboxConfig(), GATE.gate)

    def status() -> StatusPayload:
        return StatusPayload(state="online", site=GATE.site, gate=GATE.gate)

    bundle_dir = tmp_path / "incoming"
    link = MqttLink(
        fast_link_config(broker, **config),
        GATE.site,
        GATE.gate,
        outbox,
        status,
        LinkCredentials(),
        bundle_dir=bundle_dir,
    )
    ops.attach(link, GALLERY_KEY)
    gate = Gate(link, ops, store, bundle_dir)
    gate.key = key  # type: ignore[attr-defined]
    return gate, outbox


@pytest.fixture
def gate(tmp_path: Path, broker: Mosquitto) -> Iterator[Gate]:
    g, outbox = _gate(tmp_path, broker, work_queue_length=4096)
    g.link.start()
    assert g.link.wait_connected(10)
    yield g
    g.link.close()
    outbox.close()


def test_flood_of_unsigned_chunks_is_answered_and_never_stored(gate: Gate, broker: Mosquitto) -> None:
    count = 200
    with structlog.testing.capture_logs() as logs, Recorder(broker, f"{ROOT}/bundle/ack") as acks:
        for i in range(count):
            acks.client.publish(f"{ROOT}/bundle/gallery", hostile_message(i), qos=1)
        acks.wait(lambda r: len(r.on("bundle/ack")) >= count, 120, "an answer to every hostile chunk")
        answers = [m.json() for m in acks.on("bundle/ack")]
        # A real, signed gallery still goes through after the flood (chunk 0 first, as ops push sends it).
        raw = gallery_bundle(gate.key, random_subjects(3), version=7)  # type: ignore[attr-defined]
        ack = acks.client.push_bundle(GATE.site, GATE.gate, "gallery", raw, chunk_bytes=4096, timeout=60)
    assert ack.status == "applied", ack
    assert gate.store.current is not None and gate.store.current.version == 7
    assert len(answers) == count
    codes = {f"{a['status']}:{a['code']}" for a in answers}
    # new -> chunk 0 unsigned: malformed; wide -> unknown transfer: asks for chunk 0; big/junk: bad_chunk.
    assert codes == {"rejected:malformed", "receiving:None", "rejected:bad_chunk"}
    assert max(len(json.dumps(a)) for a in answers) < 1500
    assert [p.name for p in gate.bundle_dir.iterdir() if not p.name.endswith(".done.json")] == []
    # No log line quotes a chunk: the largest rendered event stays small.
    assert max(len(repr(entry)) for entry in logs) < 2000


def test_full_work_queue_refuses_with_a_busy_ack(tmp_path: Path, broker: Mosquitto) -> None:
    g, outbox = _gate(tmp_path, broker, work_queue_length=2)
    entered = threading.Event()
    release = threading.Event()

    def stuck(kind: str, first: bytes, total: int) -> None:
        entered.set()
        release.wait(30)  # the worker is held while paho keeps receiving

    g.link.set_transfer_authenticator(stuck)
    g.link.start()
    try:
        assert g.link.wait_connected(10)
        with Recorder(broker, f"{ROOT}/bundle/ack") as acks:
            acks.client.publish(f"{ROOT}/bundle/gallery", hostile_message(0), qos=1)
            assert entered.wait(10)
            infos = [acks.client.publish(f"{ROOT}/bundle/gallery", hostile_message(4 * i), qos=1) for i in range(60)]
            for info in infos:
                info.wait_for_publish(10)
            acks.wait(lambda r: any(m.json().get("code") == "busy" for m in r.on("bundle/ack")), 30, "a busy ack")
            # All 60 reach the gate eventually; the queue holds 2, the rest are refused (and counted).
            wait_until(lambda: g.link.stats().downlink_refused >= 58, 30, "the flood refused")
            assert g.link.stats().work_queued <= 2
        release.set()
    finally:
        release.set()
        g.link.close()
        outbox.close()
