"""Lane guarantees under faults, through the real daemon (`egate run`) with the lane rig around it:
the OSDP simulator on a PTY counts the openings that really happened, mosquitto and an MQTT collector
show what ops receives, and the outbox is the real SQLite file (on a small tmpfs for the full-disk case).

- SIGKILL during accepted passages: every opening has its committed ACCEPT record (EGATE_KILL_PASSAGES
  sets the count; `egate bench lane-kill --passages 200` is the long run).
- A full file system: no opening without a committed record, out of service with the reason, back in
  service once the disk takes writes again.
- The gallery on disk refused at start (wrong face model), with the code a push gets.
- Flight scoping: a gallery of two flights, `set_flights` by signed command, travellers of both.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from egate.edge.gallery.store import write_encrypted
from egate.edge.trust.bundles import BundleScope
from egate.tools.bench.lane_faults import audit, run_sigkill_trial
from egate.tools.ops.keys import load_signing_key
from egate.tools.rig.lane import EGATE, SITE, LaneRig, OpsMaterial, prepare_ops
from tests.support.gallery_fixtures import OpsKey, gallery_bundle, random_subjects

KILL_PASSAGES = int(os.environ.get("EGATE_KILL_PASSAGES", "3"))
FEMALE, MALE = "subject-0001", "subject-0002"

# The tests here run the real daemon (a SIGKILL loop, full disks, restarts): minutes in all.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ops_material(tmp_path_factory: pytest.TempPathFactory) -> OpsMaterial:
    return prepare_ops(tmp_path_factory.mktemp("ops"), scope=SITE)


def reasons(rig: LaneRig) -> list[str]:
    return list(rig.status()["out_of_service_reasons"])


def test_sigkill_during_passages_leaves_a_committed_record_for_every_opening(
    tmp_path: Path, ops_material: OpsMaterial
) -> None:
    with LaneRig(tmp_path / "rig", plan=None, ops=ops_material) as rig:
        result = run_sigkill_trial(rig, KILL_PASSAGES)
    assert result["drained"], result
    assert result["openings"] >= KILL_PASSAGES, result
    assert result["openings_without_record"] == 0, result
    assert result["duplicate_openings"] == 0 and result["duplicate_decision_records"] == 0, result
    assert result["duplicate_passage_records"] == 0, result
    assert sum(result["kills"].values()) == KILL_PASSAGES


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 2 MiB tmpfs for the gate's state directory (mounted as root; skipped where mount is refused)."""
    target = tmp_path / "rig" / "state"
    target.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(target)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): run as root for the full-disk test")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` until the kernel says ENOSPC."""
    filler = folder / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\xff" * 65536)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"\xff" * 512)
        except OSError:
            pass
    return filler


def test_full_filesystem_no_opening_without_a_record_then_back_in_service(
    small_tmpfs: Path, ops_material: OpsMaterial
) -> None:
    rig = LaneRig(
        small_tmpfs.parent,
        plan=None,
        ops=ops_material,
        # 0: no early warning from the free-space floor, so the failed commit itself is what stops the lane.
        config={"outbox": {"min_free_disk_bytes": 0}, "lane": {"refer_hold_s": 1.0}},
    )
    with rig:
        assert rig.mqtt is not None
        filler = fill(small_tmpfs)
        openings = len(rig.gate_openings())
        rig.play(["male", 20], loop=True)  # the traveller keeps coming back
        rig.wait_status(lambda s: not s["in_service"], 60, "the lane out of service on a full disk")
        rig.wait_status(
            lambda s: any(r.startswith("outbox:") for r in s["out_of_service_reasons"]), 20, "the outbox as reason"
        )
        assert len(rig.gate_openings()) == openings  # the traveller matched, nothing was recorded: no opening
        assert rig.log_events("lane_decision_not_recorded"), rig.log_tail()
        rig.wait_status(
            lambda s: not s["devices"]["outbox"]["ok"] and "free disk space" in s["devices"]["outbox"]["detail"],
            10,
            "the outbox row with its fix hint",
        )
        filler.unlink()  # space again: the outbox's write probe succeeds and the lane serves again
        rig.wait_status(lambda s: s["in_service"], 30, "the lane back in service")
        rig.wait_outcomes(1, timeout=60)
        assert len(rig.gate_openings()) > openings
        figures = audit(rig.mqtt.records, rig.gate_openings()[openings:], rig)
        assert figures["openings_without_record"] == 0 and figures["duplicate_openings"] == 0, figures


def test_outbox_at_its_limit_keeps_the_lane_out_until_the_link_drains_it(
    tmp_path: Path, ops_material: OpsMaterial
) -> None:
    from egate.edge.settings.link import OutboxConfig
    from egate.edge.uplink.outbox import Outbox

    limits = {"max_messages": 100, "alarm_ratio": 0.5}
    with LaneRig(tmp_path / "rig", plan=None, ops=ops_material, config={"outbox": limits}) as rig:
        assert rig.mqtt is not None and rig.broker is not None
        rig.broker.stop()  # ops unreachable: nothing drains
        rig.stop_daemon()
        # The queue a long link outage leaves behind: at its limit when the gate starts again.
        with Outbox(rig.state_dir / "outbox.sqlite", OutboxConfig(**limits), rig.gate) as box:
            while box.stats().fill_ratio < 1.0:
                box.append("event", {"type": "other", "message": "queued during the outage"})
        openings = len(rig.gate_openings())
        rig.start_daemon(wait_in_service=False)
        st = rig.wait_status(
            lambda s: any(r.startswith("outbox: full") for r in s["out_of_service_reasons"]), 60, "outbox full"
        )
        assert not st["in_service"] and "drains" in st["devices"]["outbox"]["detail"]
        # The traveller keeps coming back (a looped scene): at a gate that cannot record, nobody passes.
        scene = rig.play(["male", 20], loop=True)
        shown = time.monotonic() + 2 * scene.duration_s
        rig.wait_status(lambda _s: time.monotonic() >= shown, 2 * scene.duration_s + 10, "the traveller shown twice")
        assert rig.status()["state"] == "out_of_service"
        assert len(rig.gate_openings()) == openings
        rig.broker.start()  # the link drains the queue: back in service
        rig.wait_status(lambda s: s["in_service"], 90, "back in service")
        [record] = rig.wait_outcomes(1, timeout=60)
        assert record["decision"] == "accept" and record["passage"] == "completed"
        figures = audit(rig.mqtt.records, rig.gate_openings()[openings:], rig)
        assert figures["openings"] >= 1 and figures["openings_without_record"] == 0, figures


def test_gallery_for_another_model_is_refused_at_start_with_the_push_code(
    tmp_path: Path, ops_material: OpsMaterial
) -> None:
    with LaneRig(tmp_path / "rig", plan=None, ops=ops_material, push_gallery=False) as rig:
        private, key_id = load_signing_key(ops_material.key)
        now = datetime.now(timezone.utc)
        raw = gallery_bundle(
            OpsKey(private, key_id),
            random_subjects(2, seed=5),
            version=int(now.timestamp()),
            model_id="another-face-model.0000",
            scope=BundleScope(site=SITE),
            issued_at=now - timedelta(minutes=5),
            expires_at=now + timedelta(hours=6),
        )
        bundle = rig.workdir / "other-model.egb"
        bundle.write_bytes(raw)
        pushed = subprocess.run(
            [*EGATE, "ops", "push", str(bundle), "--gate", rig.gate, "--site", rig.site,
             "--host", rig.broker.host, "--port", str(rig.broker.port), "--timeout", "30", "--json"],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        push_ack = json.loads(pushed.stdout.strip().splitlines()[-1])
        assert not push_ack["ok"]
        push_code = json.dumps(push_ack)
        assert "wrong_model" in push_code
        # The same bundle as if an older egate had stored it: the gallery file on disk, under the gate's key.
        rig.stop_daemon()
        key = bytes.fromhex((rig.creds_dir / "gallery.key").read_text())
        write_encrypted(rig.state_dir / "gallery" / "gallery.egal", raw, key)
        rig.start_daemon(wait_in_service=False)
        st = rig.wait_status(
            lambda s: any(r.startswith("gallery:") for r in s["out_of_service_reasons"]), 60, "the gallery refused"
        )
        [why] = [r for r in st["out_of_service_reasons"] if r.startswith("gallery:")]
        assert "(wrong_model)" in why and "egate ops push" in why
        assert st["gallery"] == {"version": None}  # not loaded: nothing matched against it
        rig.push_gallery()  # a good one arrives: back in service
        rig.wait_status(lambda s: s["in_service"], 30, "the lane in service with a good gallery")


def send_command(rig: LaneRig, ops: OpsMaterial, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [*EGATE, "ops", "cmd", *args, "--gate", rig.gate, "--site", rig.site,
         "--signing-key", str(ops.key), "--key-id", ops.key_id,
         "--host", rig.broker.host, "--port", str(rig.broker.port), "--json"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_flight_scoping_through_the_daemon_and_set_flights(tmp_path: Path) -> None:
    ops = prepare_ops(tmp_path / "ops", scope=SITE, subject_flights={FEMALE: "LH123", MALE: "LH999"})
    with LaneRig(tmp_path / "rig", plan=None, ops=ops, config={"lane": {"boarding_flights": ["LH123"]}}) as rig:
        assert rig.mqtt is not None
        st = rig.status()
        assert st["flights"] == ["LH123"] and st["lane_id"] == rig.gate

        def seen(since: int, subject: str | None, reason: str) -> bool:
            return any(
                (o["subject_id"] == subject and o["decision"] == "accept") if subject else reason in o["reasons"]
                for o in rig.outcomes[since:]
            )

        # Both travellers, in a loop: she is boarding LH123 here, he is enrolled for LH999 only.
        rig.play(["female", 30, "male", 30], loop=True)
        rig.mqtt.wait_for(
            lambda: seen(0, FEMALE, "") and seen(0, None, "ENROLLED_OTHER_FLIGHT"), 90, "her accept, his referral"
        )
        assert not any(o["decision"] == "accept" and o["subject_id"] == MALE for o in rig.outcomes)
        other = next(o for o in rig.outcomes if "ENROLLED_OTHER_FLIGHT" in o["reasons"])
        assert other["decision"] == "refer" and MALE not in {c["subject_id"] for c in other["comparisons"]}

        ack = send_command(rig, ops, "set-flights", "--flights", "lh999")
        assert ack["ok"], ack
        rig.wait_status(lambda s: s["flights"] == ["LH999"], 10, "the new flights in status")
        rig.mqtt.wait_for(
            lambda: any(m.payload.get("flights") == ["LH999"] for m in rig.mqtt.of("status")), 15, "retained status"
        )
        since = len(rig.outcomes) + 1  # a session decided while the command was on its way may follow
        rig.mqtt.wait_for(
            lambda: seen(since, MALE, "") and seen(since, None, "ENROLLED_OTHER_FLIGHT"), 90, "his accept, her referral"
        )
        assert not any(o["decision"] == "accept" and o["subject_id"] == FEMALE for o in rig.outcomes[since:])

        rig.restart_daemon()  # the scope ops set survives a restart
        assert rig.status()["flights"] == ["LH999"]
        bad = send_command(rig, ops, "set-flights", "--flights", "not a flight")
        assert not bad["ok"]


def test_set_flights_refuses_malformed_designators_before_signing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*EGATE, "ops", "cmd", "set-flights", "--flights", "LH1234567", "--gate", "g", "--site", "s",
         "--signing-key", str(tmp_path / "none.pem"), "--key-id", "k", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "not flight designators" in proc.stdout + proc.stderr
