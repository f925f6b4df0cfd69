"""Cross-section limits: every setting one part accepts but another cannot honour is refused by
`egate config check` at its own key and line, with the allowed range."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from egate.drivers.turnstile.config import MAX_PASSAGE_TIMEOUT_S
from egate.edge.settings import ConfigError, load_settings_text
from egate.edge.settings.limits import LANE_DEVICES

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "lane.passage_timeout_s": (
        f"[lane]\npassage_timeout_s = {MAX_PASSAGE_TIMEOUT_S + 18:g}\n",
        2,
        f"allowed 0 < passage_timeout_s <= {MAX_PASSAGE_TIMEOUT_S:g} s",
    ),
    "lane.capture_frames": (
        "[camera]\nfps = 10.0\n[lane]\ncapture_timeout_s = 1.0\ncapture_frames = 20\n",
        5,
        "allowed 1..10",
    ),
    "gallery.max_bundle_bytes": (
        "[link]\nmax_bundle_bytes = 1048576\nchunk_bytes = 1024\n[gallery]\nmax_bundle_bytes = 2097152\n",
        5,
        "allowed up to 1048576",
    ),
    "lane.required_devices": (
        '[lane]\nrequired_devices = ["camera", "lidar"]\n',
        2,
        "allowed " + ", ".join(LANE_DEVICES),
    ),
    "lane.document_reader_device": ('[lane]\ndocument_reader_device = "mrz_scanner"\n', 2, "allowed 'document_reader'"),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_cross_section_limit_is_refused_at_its_key_with_the_allowed_range(key: str) -> None:
    text, line, allowed = CASES[key]
    with pytest.raises(ConfigError) as err:
        load_settings_text("schema_version = 1\n" + text, source="egate.toml", environ={})
    [issue] = err.value.issues
    assert (issue.key, issue.line) == (key, line + 1)
    assert allowed in issue.message


@pytest.mark.parametrize("key", sorted(CASES))
def test_limits_at_the_edge_are_accepted(key: str) -> None:
    edge = {
        "lane.passage_timeout_s": f"[lane]\npassage_timeout_s = {MAX_PASSAGE_TIMEOUT_S:g}\n",
        "lane.capture_frames": "[camera]\nfps = 10.0\n[lane]\ncapture_timeout_s = 1.0\ncapture_frames = 10\n",
        "gallery.max_bundle_bytes": "[link]\nmax_bundle_bytes = 1048576\nchunk_bytes = 1024\n"
        "[gallery]\nmax_bundle_bytes = 1048576\n",
        "lane.required_devices": '[lane]\nrequired_devices = ["camera", "engine", "gate", "outbox"]\n',
        "lane.document_reader_device": '[lane]\ndocument_reader_device = "document_reader"\n',
    }[key]
    load_settings_text("schema_version = 1\n" + edge, environ={})


def test_config_check_names_every_violated_limit(tmp_path: Path) -> None:
    path = tmp_path / "egate.toml"
    path.write_text("schema_version = 1\n" + "".join(text for text, _, _ in [CASES["lane.passage_timeout_s"]]))
    proc = subprocess.run(
        [sys.executable, "-m", "egate.tools.cli", "config", "check", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"{path}:3: lane.passage_timeout_s" in out and f"<= {MAX_PASSAGE_TIMEOUT_S:g} s" in out
