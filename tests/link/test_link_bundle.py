"""Bundles in chunks: on-disk assembly, resume after reconnects and restarts, SHA-256 check, acks."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from egate.edge.uplink.chunks import ChunkAssembler, TransferRefused, missing_ranges
from egate.edge.uplink.messages import BundleAck, BundleChunk
from egate.tools.ops.client import OpsClient, PushProgress
from tests.support.broker import Mosquitto, wait_until
from tests.support.link_fixtures import GATE, SITE, fast_link_config, make_link


def _chunks(data: bytes, size: int, tid: str = "t1", kind: str = "gallery") -> list[BundleChunk]:
    digest = hashlib.sha256(data).hexdigest()
    count = -(-len(data) // size)
    return [
        BundleChunk.make(
            transfer_id=tid,
            kind=kind,
            index=i,
            count=count,
            chunk_bytes=size,
            total_bytes=len(data),
            sha256=digest,
            data=data[i * size : (i + 1) * size],
        )
        for i in range(count)
    ]


KEY = bytes(range(32))


def test_assembler_resumes_after_restart_and_answers_once(tmp_path: Path) -> None:
    data = os.urandom(10 * 1000 + 17)
    chunks = _chunks(data, 1000)
    first = ChunkAssembler(tmp_path, max_bundle_bytes=1 << 20, key=KEY)
    for chunk in chunks[:3] + chunks[6:8]:
        assert first.add(chunk).status == "stored"
    assert first.add(chunks[1]).status == "duplicate"
    # Sealed at rest: no run of the bundle's bytes is in the partial file.
    assert data[:64] not in (tmp_path / "t1.part").read_bytes()

    again = ChunkAssembler(tmp_path, max_bundle_bytes=1 << 20, key=KEY)  # daemon restarted
    [state] = again.incomplete()
    assert state.missing_ranges() == [(3, 5), (8, 10)]
    results = [again.add(c) for c in chunks[3:6] + chunks[8:]]
    assert [r.status for r in results[:-1]] == ["stored"] * 5
    done = results[-1]
    assert done.status == "complete" and done.data == data
    assert not list(tmp_path.glob("t1.*"))  # nothing of the bundle left on disk
    again.mark_done(done.transfer_id, BundleAck.applied())
    replay = again.add(chunks[0])
    assert replay.status == "already_done" and replay.done_ack is not None
    assert replay.done_ack.status == "applied"


def test_assembler_with_another_key_drops_partials(tmp_path: Path) -> None:
    chunks = _chunks(os.urandom(3000), 1000)
    ChunkAssembler(tmp_path, max_bundle_bytes=1 << 20, key=KEY).add(chunks[0])
    other = ChunkAssembler(tmp_path, max_bundle_bytes=1 << 20, key=bytes(32))
    assert other.incomplete() == []
    assert not list(tmp_path.glob("t1.*"))


def test_assembler_rejects_wrong_hash_size_and_conflicts(tmp_path: Path) -> None:
    asm = ChunkAssembler(tmp_path, max_bundle_bytes=5000, max_transfers=4)
    data = os.urandom(3000)
    bad = [c.model_copy(update={"sha256": "0" * 64}) for c in _chunks(data, 1000, tid="bad")]
    results = [asm.add(c) for c in bad]
    assert results[-1].status == "rejected" and results[-1].code == "sha256_mismatch"
    assert not list(tmp_path.glob("bad.*"))  # nothing half-trusted left behind
    big = _chunks(os.urandom(6000), 1000, tid="big")[0]
    assert asm.add(big).code == "too_large"
    asm.add(_chunks(data, 1000, tid="c")[0])
    other = _chunks(os.urandom(3000), 1000, tid="c")[1]
    assert asm.add(other).code == "transfer_conflict"


def test_assembler_bounds_transfers_and_expires_idle_ones(tmp_path: Path) -> None:
    now = [0.0]
    asm = ChunkAssembler(tmp_path, max_bundle_bytes=1 << 20, max_transfers=2, idle_max_s=60, clock=lambda: now[0])
    for tid in ("a", "b"):
        assert asm.add(_chunks(os.urandom(3000), 1000, tid=tid)[0]).status == "stored"
    third = _chunks(os.urandom(3000), 1000, tid="c")
    assert asm.add(third[0]).code == "busy"
    # A chunk of a transfer the gate does not hold asks for chunk 0 (which carries the signed header).
    unknown = asm.add(third[1])
    assert (unknown.status, unknown.missing) == ("need_first", ((0, 0),))
    now[0] = 61.0  # idle past the limit: expired while running, and the slot is free again
    assert asm.add(third[0]).status == "stored"
    assert sorted(t.transfer_id for t in asm.incomplete()) == ["c"]
    assert not list(tmp_path.glob("a.*")) and not list(tmp_path.glob("b.*"))


def test_assembler_asks_the_authenticator_before_writing(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def refuse(kind: str, first: bytes, total: int) -> None:
        seen.append((kind, total))
        raise TransferRefused("bad_signature", "not signed")

    asm = ChunkAssembler(tmp_path, max_bundle_bytes=1 << 20, authenticator=refuse)
    result = asm.add(_chunks(os.urandom(3000), 1000)[0])
    assert (result.status, result.code) == ("rejected", "bad_signature")
    assert seen == [("gallery", 3000)]
    assert list(tmp_path.iterdir()) == []


def test_missing_ranges_are_capped() -> None:
    have = bytearray(b"\x00\x01" * 100)
    assert missing_ranges(have, limit=3) == [(0, 0), (2, 2), (4, 4)]
    assert missing_ranges(bytearray(b"\x01\x01\x00\x00")) == [(2, 3)]
    assert missing_ranges(bytearray(b"\x01")) == []


def test_chunk_geometry_is_checked() -> None:
    data = os.urandom(2500)
    chunk = _chunks(data, 1000)[2]
    header = chunk.model_dump(exclude={"data", "v"})
    with pytest.raises(ValueError, match="expected 500"):
        BundleChunk.make(**header, data=b"x" * 400)
    with pytest.raises(ValueError, match="reserved"):
        BundleChunk.make(**{**header, "kind": "ack"}, data=data[2000:])
    wire = chunk.model_dump_json()
    assert BundleChunk.model_validate_json(wire).data == data[2000:]


@pytest.mark.slow
def test_20mb_bundle_with_two_cuts_is_applied_once(tmp_path: Path, broker: Mosquitto) -> None:
    data = os.urandom(20 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    # The gate reconnects slowly (2 s) so chunks sent meanwhile are really lost and must be resumed.
    outbox, link = make_link(tmp_path, fast_link_config(broker, reconnect_min_s=2.0, reconnect_max_s=2.0))
    applied: list[str] = []

    def on_bundle(kind: str, bundle: bytes) -> BundleAck:
        applied.append(hashlib.sha256(bundle).hexdigest())
        return BundleAck.applied(f"{kind} active")

    link.set_bundle_handler(on_bundle)
    link.start()
    ops = OpsClient(broker.host, broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    ops.connect()
    progress = PushProgress()
    count = -(-len(data) // (256 * 1024))
    cut_at = {count // 3, 2 * count // 3}
    paused = threading.Event()
    release = threading.Event()

    def before_send(index: int) -> None:
        if index in cut_at:
            release.clear()
            paused.set()
            assert release.wait(60)

    result: dict[str, object] = {}

    def push() -> None:
        try:
            result["ack"] = ops.push_bundle(
                SITE, GATE, "gallery", data, timeout=120, before_send=before_send, progress=progress
            )
        except Exception as exc:
            result["error"] = exc

    try:
        assert link.wait_connected(10)
        pusher = threading.Thread(target=push)
        pusher.start()
        for _ in range(2):
            assert paused.wait(60)
            paused.clear()
            connects = link.stats().connects
            broker.restart()  # cuts the gate and ops mid-transfer
            wait_until(lambda: ops.connected and not link.connected, 10, "ops back first, gate still away")
            release.set()
            wait_until(lambda c=connects: link.stats().connects > c, 20, "gate reconnected")  # type: ignore[misc]
        pusher.join(150)
        assert "error" not in result, result.get("error")
        ack = result["ack"]
        assert isinstance(ack, BundleAck)
        assert (ack.status, ack.gate, ack.kind, ack.count) == ("applied", GATE, "gallery", count)
        assert applied == [digest], "assembled once, verified against the sender's SHA-256"
        # Chunks sent while the gate was away were lost and came again on the gate's resume request.
        assert progress.resent > 0 and progress.receiving_acks > 0, progress.history
        print("push history", progress.history, "resent", progress.resent)
        assert not list((tmp_path / "bundles-incoming").glob("*.part"))
    finally:
        release.set()
        ops.close()
        link.close()
        outbox.close()


def test_rejection_by_handler_reaches_ops(tmp_path: Path, broker: Mosquitto) -> None:
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    link.set_bundle_handler(lambda kind, bundle: BundleAck.rejected("signature_invalid", "not signed by ops key"))
    link.start()
    try:
        assert link.wait_connected(10)
        with OpsClient(broker.host, broker.port) as ops:
            ack = ops.push_bundle(SITE, GATE, "config", os.urandom(3000), chunk_bytes=1024, timeout=30)
            assert (ack.status, ack.code) == ("rejected", "signature_invalid")
            # A re-send of a finished transfer is answered again, not applied again.
            again = ops.push_bundle(SITE, GATE, "config", os.urandom(10), transfer_id=ack.transfer_id, timeout=30)
            assert again.code == "signature_invalid"
    finally:
        link.close()
        outbox.close()
