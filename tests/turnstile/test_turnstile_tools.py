"""The simulator as a technician runs it, and `egate bench gate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from egate.tools.bench.gate import register

ROOT = Path(__file__).resolve().parents[2]


def test_simulator_cli_prints_its_pty_and_obeys_commands(tmp_path: Path) -> None:
    link = tmp_path / "gate"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egate.tools.sim.osdp_gate",
            "--install-mode",
            "--link",
            str(link),
            "--time-scale",
            "0.01",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline().split()
        assert first == ["PTY", str(link)]
        assert Path(link).resolve().as_posix().startswith("/dev/pts/")
        proc.stdout.readline()  # the command help line
        proc.stdin.write("status\nquit\n")
        proc.stdin.flush()
        status = proc.stdout.readline()
        assert "online=False" in status and "egress_free=True" in status and "entry_free=False" in status
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulator_cli_refuses_to_start_without_a_key() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "egate.tools.sim.osdp_gate"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--scbk-file" in result.stderr


def test_bench_gate_json() -> None:
    app = typer.Typer()
    bench = typer.Typer()
    register(bench)
    app.add_typer(bench, name="bench")
    result = CliRunner().invoke(app, ["bench", "gate", "--commands", "10", "--inputs", "3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["version"] == 1
    assert payload["command_to_pd_ms"]["n"] == 10
    assert payload["input_to_cp_ms"]["n"] == 3
    assert 0 < payload["command_to_pd_ms"]["p50"] <= payload["command_to_pd_ms"]["p95"]
