"""egate runs on Python 3.10 (JetPack 6) as well as 3.11+; no Python 3.10 is installed here, so this is
checked statically (mypy with --python-version 3.10 over every package: it knows which stdlib names
3.10 lacks) and the one shim egate carries is checked for 3.11's behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from enum import StrEnum, auto
from pathlib import Path

import pytest
import tomllib

from egate.drivers.compat import StrEnum310

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_package_type_checks_as_python_310(tmp_path: Path) -> None:
    # The modules are checked under the names they are imported by (egate.edge, ...), as `make lint` does:
    # mypy cannot follow setuptools' editable finder, so the folders are linked under egate/.
    links = tmp_path / "typecheck" / "egate"
    links.mkdir(parents=True)
    for folder in ("edge", "drivers", "engines", "tools", "config", "systemd"):
        (links / folder).symlink_to(ROOT / folder)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-version",
            "3.10",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-p",
            "egate",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(tmp_path / "typecheck")},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_a_canary_proves_the_310_check_is_live(tmp_path: Path) -> None:
    canary = tmp_path / "canary.py"
    canary.write_text("import datetime\nx = datetime.UTC\nfrom enum import StrEnum\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-version", "3.10", "--no-incremental", str(canary)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert 'has no attribute "UTC"' in result.stdout and "StrEnum" in result.stdout


def test_package_metadata_and_tools_target_310() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.10"
    assert project["tool"]["ruff"]["target-version"] == "py310"
    assert project["tool"]["mypy"]["python_version"] == "3.10"
    assert any(
        dep.startswith("tomli") and "python_version < '3.11'" in dep for dep in project["project"]["dependencies"]
    )


def test_the_310_strenum_behaves_like_311s() -> None:
    class Old(StrEnum310):
        EXIT = auto()
        ENTRY = "entry"

    class New(StrEnum):
        EXIT = auto()
        ENTRY = "entry"

    for old, new in zip(Old, New, strict=True):
        assert str(old) == str(new) and f"{old}" == f"{new}" and f"{old:>7}" == f"{new:>7}"
        assert old == new.value and isinstance(old, str)
        assert json.dumps(old) == json.dumps(new)
    assert Old("entry") is Old.ENTRY
