"""`egate demo` as a person runs it: what it prints, its work folder, and that its daemon never outlives it.

The demo runs as its own process group behind a pipe (`egate demo | cat`), the way `egate demo | tee log`
is used; the test interrupts the group as a terminal's Ctrl-C does, or kills the demo outright.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egate.tools.rig.local_broker import MOSQUITTO

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / ".cache" / "models"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not (shutil.which("mosquitto") or os.path.exists(MOSQUITTO)), reason="mosquitto is not installed"
    ),
    pytest.mark.skipif(
        not (MODEL_DIR / "manifest.json").exists() and not os.environ.get("EGATE_MODEL_DIR"),
        reason="face models not provisioned: run `egate models build` (make setup does)",
    ),
]

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def processes_with(*args: str) -> list[int]:
    """Pids of processes whose command line holds every one of `args` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(a.encode() in argv for a in args):
            pids.append(int(entry.name))
    return pids


def daemons_of(config: Path) -> list[int]:
    """Pids of `egate run` processes started on `config`."""
    return processes_with("run", str(config))


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)  # polling a condition with a deadline, not synchronisation
    raise AssertionError(f"timed out waiting for {what}")


def start_piped_demo(workdir: Path, log: Path, status: Path) -> subprocess.Popen[bytes]:
    """`egate demo | cat` in its own process group; the demo's own exit code lands in `status`."""
    shell = (
        f"{sys.executable} -m egate.tools.cli demo --workdir {workdir} 2>{log} | cat >/dev/null; "
        f'echo "${{PIPESTATUS[0]}}" > {status}'
    )
    return subprocess.Popen(["bash", "-c", shell], cwd=ROOT, env=ENV, start_new_session=True)


def demo_pids(workdir: Path) -> list[int]:
    return processes_with("demo", str(workdir))


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "demo", "--once", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "\nfix: " in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("how", ["ctrl-c through a pipe", pytest.param("killed outright", marks=pytest.mark.slow)])
def test_demo_prints_what_the_tools_need_and_nothing_it_started_outlives_it(tmp_path: Path, how: str) -> None:
    workdir = tmp_path / "demo"
    log, status = tmp_path / "demo.err", tmp_path / "demo.status"
    config = workdir / "lane" / "egate.toml"
    shell = start_piped_demo(workdir, log, status)
    started: dict[str, list[int]] = {}
    try:

        def running() -> bool:
            if shell.poll() is not None:
                raise AssertionError(f"the demo ended before its lane ran:\n{log.read_text()[-3000:]}")
            return log.exists() and "Ctrl-C stops" in log.read_text()

        wait_for(running, 180, "the demo lane to run")
        text = log.read_text()
        assert f"config       {config}" in text
        assert "site demo-site, gate demo-gate-01" in text  # the ids config/demo.toml and the docs name
        assert "broker       127.0.0.1:" in text and "ops key      " in text
        assert f"egate diag selftest --config {config}" in text and "egate ops cmd set-mode" in text
        started |= {
            "daemon": daemons_of(config),
            "display server": processes_with("display", "serve", str(config)),
            "broker": processes_with("-c", str(workdir / "lane" / "broker" / "mosquitto.conf")),
        }
        assert all(len(pids) == 1 for pids in started.values()), started
        if how == "killed outright":
            (demo,) = demo_pids(workdir)
            os.kill(demo, signal.SIGKILL)  # no handler runs: the kernel must take the rest down
        else:
            os.killpg(shell.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        shell.wait(timeout=60)
        for what, (pid,) in started.items():
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 30, f"the demo's {what} to exit")
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
        for pid in {*daemons_of(config), *(p for pids in started.values() for p in pids)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if how == "ctrl-c through a pipe":
        # Stopped by the person: a clean stop, exit 0, however the pipe behind it ended.
        assert status.read_text().strip() == "0", log.read_text()
        assert "stopping the lane" in log.read_text() and "Traceback" not in log.read_text()
    assert (workdir / ".egate-demo").exists()  # its own folder: a later run may reuse it
