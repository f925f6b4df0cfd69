"""Gallery at rest and in memory: encryption, atomic activation under SIGKILL, purge."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from egate.edge.gallery.store import GalleryExpiryWatcher, GalleryStore, GalleryStoreError, GalleryUnavailable
from egate.edge.trust.bundles import VersionState
from tests.support.gallery_fixtures import (
    GALLERY_KEY,
    NOW,
    gallery_bundle,
    new_ops_key,
    plain_bundle,
    random_subjects,
    trust_with,
    verifier_for,
)

ROOT = Path(__file__).resolve().parents[2]


def _payload_hash(store: GalleryStore) -> str | None:
    gallery = store.load(NOW)
    return None if gallery is None else gallery.payload_sha256


def test_encrypted_at_rest_and_reloads(tmp_path: Path) -> None:
    key = new_ops_key()
    subjects = random_subjects(40, per_subject=(1, 3))
    verified = verifier_for(trust_with(tmp_path / "trust", key)).verify(gallery_bundle(key, subjects), NOW)
    store = GalleryStore(tmp_path / "gallery", GALLERY_KEY)
    store.activate(verified)
    blob = store.path.read_bytes()
    # No template (nor any 16-byte run of one), no subject id and no header text in the file.
    for subject in subjects:
        raw = subject.templates.astype("<f4").tobytes()
        assert raw[:16] not in blob and raw[-16:] not in blob
        assert subject.subject_id.encode() not in blob
    assert b"gallery" not in blob and b"payload_sha256" not in blob
    reloaded = GalleryStore(tmp_path / "gallery", GALLERY_KEY).load(NOW)
    assert reloaded is not None and reloaded.payload_sha256 == verified.header.payload_sha256
    assert sorted(reloaded.subject_ids()) == sorted(s.subject_id for s in subjects)
    # Wrong key: refused with a message naming the fix, never garbage templates.
    with pytest.raises(GalleryStoreError, match="does not decrypt"):
        GalleryStore(tmp_path / "gallery", bytes(32)).load(NOW)
    # A flipped ciphertext byte is detected.
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 1
    store.path.write_bytes(bytes(damaged))
    with pytest.raises(GalleryStoreError):
        GalleryStore(tmp_path / "gallery", GALLERY_KEY).load(NOW)


def test_bad_key_length_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(GalleryStoreError, match="32-byte"):
        GalleryStore(tmp_path, b"short")
    hex_key = GALLERY_KEY.hex().encode() + b"\n"
    assert GalleryStore(tmp_path, hex_key).load(NOW) is None


def test_purge_at_expiry_from_disk_and_memory(tmp_path: Path) -> None:
    key = new_ops_key()
    subjects = random_subjects(10)
    verified = verifier_for(trust_with(tmp_path / "trust", key)).verify(
        gallery_bundle(key, subjects, expires_at=NOW + timedelta(minutes=10)), NOW
    )
    store = GalleryStore(tmp_path / "gallery", GALLERY_KEY)
    gallery = store.activate(verified)
    matrix = gallery._matrix._m  # the in-memory templates, to check they are wiped
    clock = [NOW + timedelta(minutes=5)]
    watcher = GalleryExpiryWatcher(store, interval_s=3600, clock=lambda: clock[0])
    assert not watcher.check_now() and store.current is gallery
    clock[0] = NOW + timedelta(minutes=10)
    with capture_logs() as logs:
        assert watcher.check_now()
    assert store.current is None and not store.path.exists()
    assert not np.any(matrix), "templates must be overwritten in memory"
    with pytest.raises(GalleryUnavailable):
        gallery.search(subjects[0].templates[0], now=NOW)
    purged = [e for e in logs if e["event"] == "gallery_purged"]
    assert purged and purged[0]["reason"] == "expired" and purged[0]["subjects"] == 10
    assert not any(s.subject_id in repr(logs) for s in subjects)
    # An expired gallery found at start is purged instead of loaded.
    store2 = GalleryStore(tmp_path / "gallery2", GALLERY_KEY)
    store2.activate(verified)
    assert GalleryStore(tmp_path / "gallery2", GALLERY_KEY).load(NOW + timedelta(hours=1)) is None
    assert not store2.path.exists()


def test_purge_on_signed_command(tmp_path: Path) -> None:
    key = new_ops_key()
    verifier = verifier_for(trust_with(tmp_path / "trust", key))
    store = GalleryStore(tmp_path / "gallery", GALLERY_KEY)
    store.activate(verifier.verify(gallery_bundle(key, random_subjects(5)), NOW))
    command = verifier.verify(plain_bundle(key, "command", b'{"command_id":"c-9","name":"purge_gallery"}'), NOW)
    assert command.content.name == "purge_gallery"
    with capture_logs() as logs:
        assert store.purge(f"command:{command.content.command_id}")
    assert store.current is None and not store.path.exists()
    assert GalleryStore(tmp_path / "gallery", GALLERY_KEY).load(NOW) is None
    assert [e["reason"] for e in logs if e["event"] == "gallery_purged"] == ["command:c-9"]


def test_activation_replaces_and_wipes_previous(tmp_path: Path) -> None:
    key = new_ops_key()
    verifier = verifier_for(trust_with(tmp_path / "trust", key))
    store = GalleryStore(tmp_path / "gallery", GALLERY_KEY)
    first = store.activate(verifier.verify(gallery_bundle(key, random_subjects(5, seed=1), version=1), NOW))
    second = store.activate(verifier.verify(gallery_bundle(key, random_subjects(5, seed=2), version=2), NOW))
    assert store.current is second and store.current_version == 2
    with pytest.raises(GalleryUnavailable):
        first.search(np.ones(128, np.float32), now=NOW)


@pytest.mark.slow
def test_sigkill_during_activation_leaves_old_or_new(tmp_path: Path) -> None:
    """A real child process is SIGKILLed at random points of activation, many times: every
    restart finds exactly the previous or the new gallery (by payload hash), never a torn one."""
    key = new_ops_key()
    trust_dir = tmp_path / "trust"
    trust_with(trust_dir, key)
    gallery_dir = tmp_path / "gallery"
    bundles = []
    for i in range(3):  # ~6 MB each so activation spans measurable time
        raw = gallery_bundle(key, random_subjects(12_000, seed=10 + i), version=1 + i)
        path = tmp_path / f"b{i}.egb"
        path.write_bytes(raw)
        bundles.append((path, verifier_for(trust_with(trust_dir, key)).verify(raw, NOW).header.payload_sha256))
    # Start from the first gallery.
    GalleryStore(gallery_dir, GALLERY_KEY).activate(
        verifier_for(trust_with(trust_dir, key), VersionState(None)).verify(bundles[0][0].read_bytes(), NOW)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run_child(bundle: Path, kill_after: float | None) -> tuple[bool, float | None]:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.gallery.gallery_activate_child",
                str(gallery_dir),
                str(trust_dir),
                str(bundle),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        if kill_after is not None:
            time.sleep(kill_after)  # the random kill point, not a synchronisation
            child.send_signal(signal.SIGKILL)
        out = child.stdout.read()
        child.wait(timeout=30)
        done = out.startswith("done")
        return done, float(out.split()[1]) if done else None

    # Calibrate: how long one activation takes here.
    done, duration = run_child(bundles[1][0], None)
    assert done and duration is not None
    current = bundles[1][1]
    assert _payload_hash(GalleryStore(gallery_dir, GALLERY_KEY)) == current
    rng = random.Random(4)
    outcomes = {"old": 0, "new": 0}
    for round_no in range(24):
        path, new_hash = bundles[round_no % 3]
        if new_hash == current:
            path, new_hash = bundles[(round_no + 1) % 3]
        done, _ = run_child(path, rng.uniform(0, duration * 1.3))
        found = _payload_hash(GalleryStore(gallery_dir, GALLERY_KEY))
        assert found in (current, new_hash), f"round {round_no}: torn or missing gallery"
        if done:
            assert found == new_hash
        outcomes["new" if found == new_hash else "old"] += 1
        current = found
        assert not list(gallery_dir.glob("*.tmp")), "leftover temp file not cleaned at start"
    assert outcomes["old"] and outcomes["new"], f"kill points did not cover both sides: {outcomes}"
