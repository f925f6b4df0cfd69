"""`egate ops gallery purge-expired`: the systemd timer's purge, with the daemon stopped."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from egate.tools.ops import gallery as ops_gallery
from tests.support.diag_fixtures import write_gallery
from tests.support.gallery_fixtures import GALLERY_KEY


def _purge(state: Path, creds: Path) -> tuple[int, dict[str, object] | None, str]:
    app = typer.Typer()
    group = typer.Typer()
    ops_gallery.register(group)
    app.add_typer(group, name="ops")
    result = CliRunner().invoke(
        app,
        ["ops", "gallery", "purge-expired", "--state-dir", str(state), "--json"],
        env={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    data = json.loads(result.stdout.strip().splitlines()[-1]) if result.exit_code == 0 else None
    return result.exit_code, data, result.output


def test_expired_gallery_is_deleted_and_a_valid_one_kept(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gallery.key").write_bytes(GALLERY_KEY)
    now = dt.datetime.now(dt.timezone.utc)
    state = tmp_path / "state"

    path = write_gallery(state, issued_at=now - dt.timedelta(hours=2), expires_at=now + dt.timedelta(hours=1))
    code, data, out = _purge(state, creds)
    assert code == 0, out
    assert data == {"gallery": True, "purged": False, "version": 7, "expires_at": data["expires_at"]}
    assert path.exists()

    path = write_gallery(state, issued_at=now - dt.timedelta(hours=2), expires_at=now - dt.timedelta(minutes=1))
    code, data, out = _purge(state, creds)
    assert code == 0, out
    assert data is not None and data["purged"] is True
    assert not path.exists()


def test_missing_key_names_the_credential(tmp_path: Path) -> None:
    code, _, out = _purge(tmp_path / "state", tmp_path / "empty-creds")
    assert code == 1
    assert "gallery.key" in out
