"""Config: validation with key paths and line numbers, env overrides, schema, documented defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from egate.edge.settings import ConfigError, Settings, load_settings, load_settings_text
from egate.tools.config.doc import render_default_toml

ROOT = Path(__file__).resolve().parents[2]
EGATE = [sys.executable, "-m", "egate.tools.cli"]


def test_shipped_configs_are_valid() -> None:
    for name in ("default.toml", "demo.toml"):
        settings = load_settings(ROOT / "config" / name, environ={})
        assert settings.schema_version == 1


def test_default_toml_documents_every_setting_as_generated() -> None:
    # default.toml is generated from the models; a stale copy would document wrong defaults.
    assert (ROOT / "config" / "default.toml").read_text() == render_default_toml(), "run `make config-doc`"


def test_default_toml_round_trips_to_the_model_defaults() -> None:
    assert load_settings(ROOT / "config" / "default.toml", environ={}) == Settings()


BROKEN = """\
schema_version = 1

[gate]
site_id = "has space"
gate_idd = "g1"

[link]
port = 70000
"""


def test_every_error_names_key_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings_text(BROKEN, source="broken.toml", environ={})
    found = {(i.key, i.line) for i in caught.value.issues}
    assert found == {("gate.site_id", 4), ("gate.gate_idd", 5), ("link.port", 8)}
    unknown = next(i for i in caught.value.issues if i.key == "gate.gate_idd")
    assert "unknown setting" in unknown.message


def test_toml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings_text("[gate]\nsite_id = \n", environ={})
    assert caught.value.issues[0].line == 2


def test_env_overrides_apply_and_errors_name_the_variable() -> None:
    settings = load_settings_text("", environ={"EGATE_LINK__PORT": "1883", "EGATE_GATE__MODE": "entry"})
    assert settings.link.port == 1883
    assert settings.gate.mode == "entry"
    with pytest.raises(ConfigError) as caught:
        load_settings_text("", environ={"EGATE_LINK__PORT": "-1"})
    assert caught.value.issues[0].source == "env EGATE_LINK__PORT"


def test_old_privacy_switches_load_when_off_and_are_refused_when_on() -> None:
    # The gate never keeps face images or templates nor logs full numbers: the old switches do nothing.
    off = "[privacy]\nstore_face_images = false\nstore_templates = false\nlog_full_document_numbers = false\n"
    assert "privacy" not in load_settings_text(off, environ={}).model_dump()
    for key in ("store_face_images", "store_templates", "log_full_document_numbers"):
        with pytest.raises(ConfigError, match=f"privacy.{key} is no longer supported"):
            load_settings_text(f"[privacy]\n{key} = true\n", environ={})


@pytest.mark.slow  # a second of subprocess start-up or network timeouts per case
def test_config_check_cli_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run(
        [*EGATE, "config", "check", str(ROOT / "config/default.toml")], capture_output=True, text=True
    )
    assert good.returncode == 0, good.stderr
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text(BROKEN)
    bad = subprocess.run([*EGATE, "config", "check", str(bad_file)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert f"{bad_file}:8: link.port" in bad.stderr
    assert f"{bad_file}:5: gate.gate_idd" in bad.stderr


def test_config_schema_is_json_schema() -> None:
    out = subprocess.run([*EGATE, "config", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(out.stdout)
    assert schema["additionalProperties"] is False
    assert "gate" in schema["properties"]
    # every leaf field carries a description, so `config schema` documents itself
    for name, definition in schema["$defs"].items():
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_identity_is_required_none_is_a_value_and_errors_are_plain_words(tmp_path: Path) -> None:
    from egate.edge.settings import load_settings as load

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError) as caught:
        load(empty, environ={})
    assert {i.key for i in caught.value.issues} == {"gate.site_id", "gate.gate_id"}
    # The environment can supply them too (EGATE_GATE__SITE_ID): the rule is about the effective config.
    env = {"EGATE_GATE__SITE_ID": "ams", "EGATE_GATE__GATE_ID": "g1"}
    assert load(empty, environ=env).gate.gate_id == "g1"

    text = '[gate]\nsite_id = "a"\ngate_id = "g"\n[turnstile.io]\nbuzzer_output = "none"\n[link]\nport = "8883"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings_text(text, environ={})
    (port,) = caught.value.issues
    assert port.key == "link.port" and port.line == 7 and "without quotes" in port.message
    settings = load_settings_text(text.replace('"8883"', "8883"), environ={})
    assert settings.turnstile.io.buzzer_output is None

    cross = '[gate]\nsite_id = "a"\ngate_id = "g"\n[link]\ncert_credential = "none"\n'
    with pytest.raises(ConfigError) as caught:
        load_settings_text(cross, environ={})
    (issue,) = caught.value.issues
    assert issue.key == "link.cert_credential" and issue.line == 5
    assert "go together" in issue.message and "Value error" not in issue.message and "{" not in issue.message

    with pytest.raises(ConfigError) as caught:
        load_settings_text('[gate]\nsite_id = "a b"\ngate_id = "g"\n', environ={})
    assert "letters, digits" in caught.value.issues[0].message and "^" not in caught.value.issues[0].message
