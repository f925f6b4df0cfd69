"""egate as a user installs it: the wheel built from this tree, installed into a fresh venv outside the
checkout, then `egate demo --once` and `egate diag selftest` run from a folder that is not the checkout.

The wheel is built from a copy of the tree (building in place would write build/ and egg-info into the
checkout). The fresh venv gets egate alone: its dependencies are this interpreter's, reached through a
.pth file of plain path lines (Python appends such paths to sys.path and runs nothing from them, so the
checkout's editable install stays invisible). The test asserts that the installed egate is the only
thing added to site-packages, that every egate module and shipped file comes from the venv, and that
nothing in the checkout changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from egate.tools.rig.local_broker import MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (shutil.which("mosquitto") or os.path.exists(MOSQUITTO)), reason="mosquitto is not installed"
    ),
]

# Folders of a working tree that are not source: never copied into the build, never compared.
NOT_SOURCE = (".git", ".venv", ".cache", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache")
NOT_SOURCE += (".ruff_cache", ".hypothesis", "node_modules")
DEPENDENCIES_PTH = "zz-egate-test-dependencies.pth"


@dataclass(frozen=True)
class Installed:
    venv: Path
    site_packages: Path
    run_dir: Path  # the working directory of every command: neither the checkout nor the venv
    env: dict[str, str]

    def egate(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "egate"), *args],
            cwd=self.run_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str) -> str:
        done = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            cwd=self.run_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _run(*args: str | Path, cwd: Path) -> None:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"


def _checkout_files() -> dict[str, tuple[int, int]]:
    """Every file of the checkout outside the non-source folders, with its size and modification time."""
    seen = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in NOT_SOURCE]
        for name in files:
            path = Path(folder) / name
            stat = path.lstat()
            seen[str(path.relative_to(ROOT))] = (stat.st_size, stat.st_mtime_ns)
    return seen


def _dependency_paths() -> list[str]:
    """The site-packages folders this interpreter takes egate's dependencies from."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Installed]:
    """egate built, installed and used here; at the end, the checkout must be as it was before."""
    before = _checkout_files()
    base = tmp_path_factory.mktemp("installed")
    assert not base.resolve().is_relative_to(ROOT), "the venv must live outside the checkout"
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE, "*.egg-info", "tests"))
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source, cwd=base)
    (wheel,) = wheels.glob("egate-*.whl")

    venv = base / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    site_packages = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site_packages / DEPENDENCIES_PTH).write_text("\n".join(_dependency_paths()) + "\n")
    # --ignore-installed: the checkout's editable egate is visible through the dependency paths; pip must
    # install beside it, not try to replace it.
    _run(venv / "bin" / "python", *pip[1:], "install", "--no-deps", "--no-index", "--ignore-installed", wheel, cwd=base)

    run_dir = base / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EGATE_SHARED_DATA")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(base / "home"),  # user-level state and caches land here, where the test can see them
        XDG_CACHE_HOME=str(base / "home" / ".cache"),
        EGATE_MODEL_DIR=str(model_dir),  # the models this session built: building them again takes minutes
    )
    yield Installed(venv, site_packages, run_dir, env)
    after = _checkout_files()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], "the installed egate (or its build) wrote into the checkout"


def test_only_egate_is_installed_at_the_top_of_site_packages(installed: Installed) -> None:
    top = {p.name for p in installed.site_packages.iterdir()} - {DEPENDENCIES_PTH, "__pycache__"}
    dist_infos = {name for name in top if re.fullmatch(r"egate-[^-]+\.dist-info", name)}
    assert len(dist_infos) == 1 and top == {"egate", *dist_infos}, sorted(top)
    record = (installed.site_packages / next(iter(dist_infos)) / "RECORD").read_text().splitlines()
    roots = {line.split(",")[0].split("/")[0] for line in record if line} - {".."}  # "..": bin/egate
    assert roots == {"egate", *dist_infos}, sorted(roots)
    assert not (installed.site_packages / "egate" / "__init__.py").exists()  # a namespace, like the checkout


def test_egate_and_its_shipped_files_come_from_the_venv(installed: Installed) -> None:
    report = json.loads(
        installed.python(
            "import json, sys\n"
            "import egate, egate.tools.cli, egate.edge.display.server, egate.edge.display.languages\n"
            "from egate.tools import paths\n"
            "from egate.engines import models\n"
            "print(json.dumps({\n"
            "    'path': list(egate.__path__),\n"
            "    'modules': sorted(m.__file__ for n, m in sys.modules.items()\n"
            "                      if n.startswith('egate.') and getattr(m, '__file__', None)),\n"
            "    'data': [str(paths.DEMO_MEDIA), str(paths.DEMO_CONFIG), str(models.CALIBRATION_PATH),\n"
            "             str(egate.edge.display.server.STATIC_DIR), str(egate.edge.display.languages.I18N_DIR),\n"
            "             str(paths.SYSTEMD_UNITS / 'egate.service')],\n"
            "    'checkout': str(paths.checkout_root()),\n"
            "}))\n"
        )
    )
    venv = str(installed.venv.resolve())
    assert [str(Path(p).resolve()) for p in report["path"]] == [str((installed.site_packages / "egate").resolve())]
    assert len(report["modules"]) > 20
    outside = [f for f in report["modules"] + report["data"] if not str(Path(f).resolve()).startswith(venv)]
    assert outside == []
    assert all(Path(p).exists() for p in report["data"]), report["data"]
    assert report["checkout"] == "None"


def test_demo_once_plays_the_lane_with_the_shipped_media(installed: Installed) -> None:
    done = installed.egate("demo", "--once", "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert summary["once"] and summary["as_expected"], summary
    assert len(summary["outcomes"]) >= summary["travellers_planned"] >= 1, summary
    assert summary["daemon_stop_s"] is not None  # the daemon stopped on SIGTERM within its budget


def test_selftest_passes_on_the_running_demo(installed: Installed, tmp_path: Path) -> None:
    work = tmp_path / "demo"
    log = (tmp_path / "demo.err").open("w")
    demo = subprocess.Popen(
        [str(installed.venv / "bin" / "egate"), "demo", "--workdir", str(work)],
        cwd=installed.run_dir,
        env=installed.env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "lane in service" not in (tmp_path / "demo.err").read_text():
            assert demo.poll() is None, (tmp_path / "demo.err").read_text()[-4000:]
            assert time.monotonic() < deadline, "the demo lane did not come into service"
            time.sleep(0.5)  # polling the demo's progress line with a deadline
        config = work / "lane" / "egate.toml"
        done = installed.egate("diag", "selftest", "--config", str(config), "--json")
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert done.returncode == 0, done.stdout + done.stderr
        assert checks["lane"]["verdict"] == "PASS" and checks["models"]["verdict"] == "PASS", checks
        assert checks["gallery"]["verdict"] == "PASS" and checks["turnstile"]["verdict"] == "PASS", checks
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C, as a person stops the demo
        code = demo.wait(timeout=120)
        log.close()
    assert code == 0, (tmp_path / "demo.err").read_text()[-4000:]
