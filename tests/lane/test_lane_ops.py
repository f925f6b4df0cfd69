"""The gate's handling of ops bundles and signed commands (egate.edge.lane.ops) with real signed bundles."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from egate.edge.gallery.matching import MatchPolicy
from egate.edge.gallery.store import GalleryStore
from egate.edge.lane.ops import DEFERRED_BY_TECHNICIAN, OpsHandler
from egate.edge.session.events import Event, Maintenance, SetMode
from egate.edge.settings import load_settings_text, with_pushed_config
from egate.edge.settings.lane import Mode
from egate.edge.trust.bundles import CommandPayload, VersionState
from egate.edge.uplink.chunks import TransferRefused
from tests.lane.lane_fixtures import healthy, make_lane
from tests.support.gallery_fixtures import (
    GALLERY_KEY,
    NOW,
    OpsKey,
    gallery_bundle,
    new_ops_key,
    plain_bundle,
    random_subjects,
    trust_with,
    verifier_for,
)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.key = new_ops_key()
        self.trust = trust_with(tmp_path / "trust", self.key)
        self.store = GalleryStore(tmp_path / "gallery", GALLERY_KEY, policy=MatchPolicy(threshold=0.5))
        self.verifier = verifier_for(self.trust, VersionState(tmp_path / "versions.json"))
        self.posted: list[Event] = []
        self.changes = 0
        self.config_dir = tmp_path / "state" / "config"
        self.ops = OpsHandler(
            self.verifier,
            self.store,
            self.trust,
            self.posted.append,
            config_dir=self.config_dir,
            on_change=self._changed,
            clock=lambda: NOW,
        )
        self.tmp = tmp_path

    def _changed(self) -> None:
        self.changes += 1

    def command(self, name: str, version: int, key: OpsKey | None = None, **args: str) -> bytes:
        payload = CommandPayload(command_id=f"c{version}", name=name, args=args)  # type: ignore[arg-type]
        return plain_bundle(key or self.key, "command", payload.model_dump_json().encode(), version=version)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_gallery_applied_then_rollback_refused_and_current_kept(rig: Rig) -> None:
    ack = rig.ops.on_bundle("gallery", gallery_bundle(rig.key, random_subjects(4), version=5))
    assert ack.status == "applied", ack
    assert rig.store.current is not None and rig.store.current.version == 5 and rig.changes == 1
    ack = rig.ops.on_bundle("gallery", gallery_bundle(rig.key, random_subjects(2), version=5))
    assert (ack.status, ack.code) == ("rejected", "rollback")
    assert rig.store.current.version == 5 and rig.store.current.subject_count == 4


def test_transfer_is_authenticated_from_its_first_chunk(rig: Rig) -> None:
    raw = gallery_bundle(rig.key, random_subjects(4), version=5)
    first = raw[:2048]
    rig.ops.authenticate_transfer("gallery", first, len(raw))  # signed header, this gate, newer: accepted
    refusals = {
        "unsigned": ("gallery", b"\x00" * 2048, len(raw)),
        "other key": ("gallery", gallery_bundle(new_ops_key(), random_subjects(1))[:2048], len(raw)),
        "wrong topic": ("config", first, len(raw)),
        "size lie": ("gallery", first, len(raw) + 1),
        "header split": ("gallery", first[:100], len(raw)),
    }
    codes = {}
    for name, (kind, data, total) in refusals.items():
        with pytest.raises(TransferRefused) as info:
            rig.ops.authenticate_transfer(kind, data, total)
        codes[name] = info.value.code
    assert codes == {
        "unsigned": "malformed",
        "other key": "unknown_key",
        "wrong topic": "malformed",
        "size lie": "length_mismatch",
        "header split": "malformed",
    }
    assert rig.ops.on_bundle("gallery", raw).status == "applied"
    with pytest.raises(TransferRefused, match="rollback"):  # a replayed transfer of an applied version
        rig.ops.authenticate_transfer("gallery", first, len(raw))


def test_bundle_on_the_wrong_topic_is_refused(rig: Rig) -> None:
    ack = rig.ops.on_bundle("config", gallery_bundle(rig.key, random_subjects(1)))
    assert (ack.status, ack.code) == ("rejected", "malformed")
    assert "--kind gallery" in ack.message
    assert rig.store.current is None


def test_unsigned_by_a_trusted_key_is_refused(rig: Rig) -> None:
    stranger = new_ops_key()
    ack = rig.ops.on_bundle("gallery", gallery_bundle(stranger, random_subjects(1)))
    assert (ack.status, ack.code) == ("rejected", "unknown_key")


def test_config_bundle_is_stored_and_runs_at_next_start(rig: Rig) -> None:
    toml = b'schema_version = 1\n[gate]\nsite_id = "ams"\ngate_id = "g07"\nmode = "entry"\n'
    ack = rig.ops.on_bundle("config", plain_bundle(rig.key, "config", toml, version=3))
    assert ack.status == "applied", ack
    assert (rig.config_dir / "pushed.toml").read_bytes() == toml
    base = load_settings_text(f'[state]\nstate_dir = "{rig.tmp / "state"}"\n', environ={})
    settings, source = with_pushed_config(base, environ={})
    assert settings.gate.mode == "entry" and settings.lane.mode is Mode.ENTRY
    assert settings.state == base.state and "pushed" in source


def test_broken_stored_config_falls_back_to_the_local_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "config").mkdir(parents=True)
    (state / "config" / "pushed.toml").write_text("[gate]\nmode = 'sideways'\n")
    base = load_settings_text(f'[state]\nstate_dir = "{state}"\n', environ={})
    settings, source = with_pushed_config(base, environ={})
    assert settings == base
    assert "ignored" in source and "gate.mode" in source


def test_set_mode_and_maintenance_commands_reach_the_lane(rig: Rig) -> None:
    ack = rig.ops.on_command(rig.command("set_mode", 1, mode="entry"))
    assert (ack.status, ack.cmd_id) == ("done", "c1")
    assert rig.posted == [SetMode(Mode.ENTRY), Maintenance(False, owner="ops")]
    ack = rig.ops.on_command(rig.command("set_mode", 2, mode="maintenance"))
    assert ack.status == "done" and rig.posted[-1] == Maintenance(True, reason="maintenance (ops command)", owner="ops")
    ack = rig.ops.on_command(rig.command("set_mode", 3, mode="sideways"))
    assert (ack.status, ack.code) == ("rejected", "bad_argument")
    assert len(rig.posted) == 3


def test_set_mode_does_not_end_a_technicians_maintenance(tmp_path: Path) -> None:
    """The lane's real session controller behind the handler: an ops set_mode while a technician
    holds the lane in maintenance changes the mode but leaves the technician's session, and the ack
    says the return to service is deferred."""
    fixture = make_lane()
    fixture.run(*healthy())
    lane = fixture.controller
    assert lane.status().in_service
    rig = Rig(tmp_path)
    rig.ops = OpsHandler(
        rig.verifier,
        rig.store,
        rig.trust,
        lane.handle,
        config_dir=rig.config_dir,
        clock=lambda: NOW,
        maintenance_owners=lambda: lane.status().maintenance_owners,
    )
    lane.handle(Maintenance(True, reason="technician (egate diag)", owner="technician"))
    assert lane.status().maintenance_owners == ["technician"]

    for version, mode in enumerate(("entry", "open", "exit"), start=1):
        ack = rig.ops.on_command(rig.command("set_mode", version, mode=mode))
        assert (ack.status, ack.code) == ("done", DEFERRED_BY_TECHNICIAN), ack
        assert "egate diag maintenance off" in ack.message
        st = lane.status()
        assert st.maintenance and st.maintenance_owners == ["technician"] and not st.in_service
    assert lane.mode is Mode.EXIT  # the mode itself did change

    # ops closes the lane too; the technician leaving does not reopen it
    ack = rig.ops.on_command(rig.command("set_mode", 4, mode="closed"))
    assert (ack.status, ack.code) == ("done", None)
    lane.handle(Maintenance(False, owner="technician"))
    assert lane.status().maintenance_owners == ["ops"]
    assert any(r.startswith("maintenance (ops)") for r in lane.status().out_of_service_reasons)
    ack = rig.ops.on_command(rig.command("set_mode", 5, mode="open"))
    assert (ack.status, ack.code) == ("done", None)
    assert lane.status().maintenance is False and lane.status().maintenance_owners == []


def test_replayed_command_is_refused(rig: Rig) -> None:
    raw = rig.command("set_mode", 7, mode="exit")
    assert rig.ops.on_command(raw).status == "done"
    replay = rig.ops.on_command(raw)
    assert (replay.status, replay.code, replay.cmd_id) == ("rejected", "rollback", "c7")


def test_purge_command_wipes_the_gallery(rig: Rig) -> None:
    assert rig.ops.on_bundle("gallery", gallery_bundle(rig.key, random_subjects(3))).status == "applied"
    assert rig.store.path.exists()
    ack = rig.ops.on_command(rig.command("purge_gallery", 2))
    assert (ack.status, ack.message) == ("done", "gallery purged")
    assert rig.store.current is None and not rig.store.path.exists()


def test_expired_command_is_refused(rig: Rig) -> None:
    payload = CommandPayload(command_id="old", name="purge_gallery").model_dump_json().encode()
    raw = plain_bundle(
        rig.key, "command", payload, issued_at=NOW - timedelta(hours=3), expires_at=NOW - timedelta(hours=1)
    )
    ack = rig.ops.on_command(raw)
    assert (ack.status, ack.code, ack.cmd_id) == ("rejected", "expired", "old")
