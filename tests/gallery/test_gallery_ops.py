"""`egate ops keys|gallery|bundle|config` and `egate bench search` through typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from egate.edge.gallery.store import GalleryStore
from egate.edge.trust.bundles import BundleScope, BundleVerifier, Scope, VersionState
from egate.edge.trust.keys import TrustStore
from egate.tools.bench import search as bench_search
from egate.tools.ops import bundle as ops_bundle
from egate.tools.ops import config as ops_config
from egate.tools.ops import gallery as ops_gallery
from egate.tools.ops import keys as ops_keys
from tests.shared_data import shared_data
from tests.support.gallery_fixtures import GALLERY_KEY

runner = CliRunner()


def _ops() -> typer.Typer:
    app = typer.Typer()
    for module in (ops_keys, ops_gallery, ops_bundle, ops_config):
        module.register(app)
    return app


def _run(app: typer.Typer, *args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _new_key(app: typer.Typer, folder: Path) -> dict:
    return _run(app, "keys", "new", "--out", str(folder))


def test_keys_config_and_inspect(tmp_path: Path) -> None:
    app = _ops()
    key = _new_key(app, tmp_path / "keys")
    assert (Path(key["private_key"]).stat().st_mode & 0o777) == 0o600
    _run(app, "keys", "install", key["public_key"], "--trust-dir", str(tmp_path / "trust"))
    assert TrustStore(tmp_path / "trust").key_ids() == [key["key_id"]]

    good = tmp_path / "gate.toml"
    good.write_text("[gate]\nsite_id = 'ams'\ngate_id = 'g07'\n")
    out = tmp_path / "config.egb"
    _run(app, "config", "build", str(good), "--key", key["private_key"], "--out", str(out), "--scope", "ams:g07")
    info = _run(app, "bundle", "inspect", str(out), "--trust-dir", str(tmp_path / "trust"))
    assert info["signature"] == "valid" and info["header"]["kind"] == "config" and info["payload_sha256_ok"]

    bad = tmp_path / "bad.toml"
    bad.write_text("[gate]\nno_such_setting = 1\n")
    result = runner.invoke(
        app, ["config", "build", str(bad), "--key", key["private_key"], "--out", str(tmp_path / "x"), "--scope", "ams"]
    )
    assert result.exit_code == 2 and "no_such_setting" in result.output and not (tmp_path / "x").exists()

    other = _new_key(app, tmp_path / "other")
    wrong = runner.invoke(app, ["bundle", "inspect", str(out), "--pub", other["public_key"], "--json"])
    assert wrong.exit_code == 1 and "not among the given keys" in wrong.output
    unchecked = runner.invoke(app, ["bundle", "inspect", str(out)])
    assert unchecked.exit_code == 1 and "signature not trusted" in unchecked.output


def test_keys_rotation_bundle(tmp_path: Path) -> None:
    app = _ops()
    old, new = _new_key(app, tmp_path / "k1"), _new_key(app, tmp_path / "k2")
    _run(app, "keys", "install", old["public_key"], "--trust-dir", str(tmp_path / "trust"))
    out = tmp_path / "keys.egb"
    _run(
        app,
        "keys",
        "bundle",
        "--trusted",
        new["public_key"],
        "--revoke",
        old["key_id"],
        "--key",
        old["private_key"],
        "--version",
        "1",
        "--out",
        str(out),
    )
    trust = TrustStore(tmp_path / "trust")
    verifier = BundleVerifier(trust, Scope(site="ams", gate="g1"), "m", 1 << 20, VersionState(None))
    from datetime import UTC, datetime

    verified = verifier.verify(out.read_bytes(), datetime.now(UTC))
    trust.apply_keys(verified.content, signed_by=verified.header.key_id)
    assert trust.key_ids() == [new["key_id"]] and trust.status(old["key_id"]) == "revoked"


def test_gallery_build_with_the_real_engine(tmp_path: Path) -> None:
    lfw = shared_data("faces/lfw_krasserm")
    from egate.engines.models import default_model_dir

    models = default_model_dir()
    if not (models / "manifest.json").exists():
        pytest.skip(f"no model cache at {models}: run `egate models build`")
    photos = tmp_path / "photos"
    people = ["Ariel_Sharon", "Colin_Powell", "Tony_Blair"]
    for person in people:
        (photos / f"subj-{person[:5]}").mkdir(parents=True)
        for src in sorted((lfw / person).iterdir())[:2]:
            shutil.copy(src, photos / f"subj-{person[:5]}" / src.name)
    import cv2

    noface = photos / "subj-blank"
    noface.mkdir()
    cv2.imwrite(str(noface / "wall.png"), np.full((200, 200, 3), 128, np.uint8))

    # A truncated JPEG beside a good photo: said as corrupt, not as "no usable face".
    good = sorted((photos / "subj-Tony_").iterdir())[0]
    (photos / "subj-Tony_" / "zz-cut.jpg").write_bytes(good.read_bytes()[:1500])

    app = _ops()
    key = _new_key(app, tmp_path / "keys")
    _run(app, "keys", "install", key["public_key"], "--trust-dir", str(tmp_path / "trust"))
    out = tmp_path / "gallery.egb"
    subject_key = tmp_path / "subject-id.key"
    subject_key.write_bytes(bytes(range(32)))
    args = [
        "gallery", "build", "--subject-key", str(subject_key), "--photos", str(photos), "--out", str(out), "--signing-key", key["private_key"],
        "--expires", "2h", "--scope", "ams:g07", "--model-dir", str(models), "--json",
    ]  # fmt: skip
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and not out.exists(), refused.output
    assert "subj-blank" in json.loads(refused.stdout.strip().splitlines()[-1])["dropped"]
    assert "wall.png (subj-blank): no usable face" in refused.output
    assert "zz-cut.jpg (subj-Tony_): corrupt JPEG" in refused.output

    # Built anyway on request: still exit 1, so a script sees that photos were left out.
    result = runner.invoke(app, [*args, "--allow-dropped"])
    assert result.exit_code == 1, result.output
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built["subjects"] == 3 and built["subjects_given"] == 4 and built["templates"] == 6
    assert built["dropped"] == ["subj-blank"] and built["ok"] is False
    assert sorted(built["no_face"]) == sorted([str(noface / "wall.png"), str(photos / "subj-Tony_" / "zz-cut.jpg")])
    info = _run(app, "bundle", "inspect", str(out), "--trust-dir", str(tmp_path / "trust"))
    assert info["signature"] == "valid" and info["counts"]["subjects"] == 3

    # The gate accepts it and a third photo of a person finds that person.
    from datetime import UTC, datetime

    from egate.engines.config import EngineConfig
    from egate.engines.pipeline import FaceEngine

    with FaceEngine.from_config(EngineConfig(), models) as engine:
        image = cv2.imread(str(sorted((lfw / "Colin_Powell").iterdir())[5]))
        assert image is not None
        probe = engine.enroll(image)
        model_id = engine.model_id
    assert probe is not None
    verifier = BundleVerifier(
        TrustStore(tmp_path / "trust"), Scope(site="ams", gate="g07"), model_id, 1 << 24, VersionState(None)
    )
    store = GalleryStore(tmp_path / "gallery", GALLERY_KEY)
    gallery = store.activate(verifier.verify(out.read_bytes(), datetime.now(UTC)))
    result = gallery.search(probe.descriptor, 3)
    # Subject ids are the keyed hashes of the folder names, as the gates derive them.
    from egate.edge.lane.adapters import HashedSubjectLookup

    expected = HashedSubjectLookup(bytes(range(32)), lambda: None).subject_for_label("subj-Colin")
    assert result.candidates[0].subject_id == expected and expected.startswith("s-")


def test_bench_search_json_keys() -> None:
    app = typer.Typer()
    bench_search.register(app)

    @app.callback()
    def _root() -> None: ...

    result = runner.invoke(app, ["search", "--gallery", "2k", "--queries", "20", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(data) == {"gallery", "dim", "egate", "faiss", "identical_top1"}
    assert set(data["egate"]) == {"p50_ms", "p95_ms", "load_s", "rss_mb"} and set(data["faiss"]) == {"p50_ms", "p95_ms"}
    assert data["gallery"] == 2000 and data["dim"] == 128 and data["identical_top1"] is True


def test_scope_syntax() -> None:
    assert BundleScope.parse("ams:g1,g2") == BundleScope(site="ams", gates=("g1", "g2"))
    assert BundleScope.parse("*").covers(Scope(site="x", gate="y"))
