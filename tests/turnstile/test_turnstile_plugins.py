"""Gate drivers are plug-ins chosen by `[turnstile] type`: the registry finds them, the config validates
against the chosen one, and the daemon drives whichever is configured (here the Modbus dry-contact
driver against pymodbus's own server on a PTY pair, through the real daemon and `egate diag`)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from egate.drivers.turnstile.base import GateController
from egate.drivers.turnstile.config import OsdpGateConfig
from egate.drivers.turnstile.gates.modbus import ModbusGateConfig, ModbusGateController
from egate.drivers.turnstile.registry import GateSetupError, build_gate, gate_drivers
from egate.edge.settings import ConfigError, Settings, load_settings_text
from egate.tools.diag import selftest_checks as checks
from egate.tools.sim.modbus_gate import ModbusGateSimulator, socat_available
from tests.support.daemon_fixtures import GateDaemon

BASE = '[gate]\nsite_id = "ams"\ngate_id = "g1"\n'


def test_the_registry_finds_every_driver_module_by_its_type() -> None:
    drivers = gate_drivers()
    assert set(drivers) == {"osdp", "modbus"}
    assert drivers["osdp"].config_model is OsdpGateConfig
    assert drivers["modbus"].config_model is ModbusGateConfig


def test_turnstile_type_picks_the_driver_config_and_osdp_is_the_default() -> None:
    assert isinstance(Settings().turnstile, OsdpGateConfig)
    modbus = load_settings_text(BASE + '[turnstile]\ntype = "modbus"\nurl = "/dev/ttyS3"\ndevice_id = 7\n')
    assert isinstance(modbus.turnstile, ModbusGateConfig) and modbus.turnstile.device_id == 7
    untyped = load_settings_text(BASE + '[turnstile]\nurl = "/dev/ttyS3"\naddress = 5\n')
    assert isinstance(untyped.turnstile, OsdpGateConfig) and untyped.turnstile.address == 5


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('type = "wiegand"', "turnstile.type", "no gate driver called 'wiegand': use one of modbus, osdp"),
        ('type = "modbus"\nbaud = 12', "turnstile.baud", "Input should be 9600"),
        ('type = "modbus"\naddress = 3', "turnstile.address", "unknown setting"),  # an OSDP key on Modbus
    ],
)
def test_config_check_names_the_key_and_line_of_a_driver_setting(table: str, key: str, words: str) -> None:
    text = BASE + "[turnstile]\n" + table + "\n"
    with pytest.raises(ConfigError) as caught:
        load_settings_text(text, source="egate.toml")
    (issue,) = caught.value.issues
    wrong_line = text.splitlines().index(next(line for line in text.splitlines() if line.startswith(key.split(".")[1])))
    assert (issue.key, issue.line) == (key, wrong_line + 1)
    assert words in issue.message


def test_a_missing_key_is_a_setup_error_with_the_credential_to_fix() -> None:
    def no_credential(name: str) -> bytes:
        raise OSError(f"credential {name} not found")

    with pytest.raises(GateSetupError) as caught:
        build_gate(OsdpGateConfig(url="/dev/null", scbk_credential="lane3.scbk"), no_credential, lambda e: None)
    assert "lane3.scbk" in caught.value.hint


modbus_only = pytest.mark.skipif(not socat_available(), reason="socat missing: make setup installs it")


@pytest.fixture
def module() -> Iterator[ModbusGateSimulator]:
    # PTYs refuse parity settings (termios EINVAL): the line runs 8N1 here, 8E1 by default on RS-485.
    with ModbusGateSimulator(baud=115200, parity="N", watchdog_register=None) as sim:
        yield sim


def modbus_table(sim: ModbusGateSimulator) -> str:
    return f'type = "modbus"\nurl = "{sim.path}"\nparity = "{sim.parity}"\nbaud = {sim.baud}'


@modbus_only
def test_the_registry_builds_the_configured_driver(module: ModbusGateSimulator) -> None:
    settings = load_settings_text(BASE + "[turnstile]\n" + modbus_table(module) + "\n")
    gate = build_gate(settings.turnstile, lambda name: b"", lambda e: None)
    assert isinstance(gate, ModbusGateController) and isinstance(gate, GateController)


@modbus_only
def test_selftest_judges_a_modbus_gate_with_the_daemons_rule(module: ModbusGateSimulator) -> None:
    settings = load_settings_text(BASE + "[turnstile]\n" + modbus_table(module) + "\n")
    result = checks.check_turnstile(settings.turnstile, lambda name: b"")
    assert result.verdict == "PASS", result
    assert result.detail == f"modbus {module.path} device 1: online"
    assert module.egress_free() and not module.entry_free()  # the check leaves the gate safe


@modbus_only
@pytest.mark.slow
def test_the_daemon_drives_a_modbus_gate_chosen_by_config(module: ModbusGateSimulator, tmp_path: Path) -> None:
    daemon = GateDaemon(tmp_path, turnstile=modbus_table(module)).start()
    try:
        daemon.wait_status(lambda s: s["devices"]["gate"]["ok"] is True, 60, "the Modbus gate online")
        status = daemon.call("gate.status")
        assert status["driver"] == "modbus" and status["link_security"] == "none" and not module.entry_free()

        def diag(*args: str) -> dict:
            cmd = [sys.executable, "-m", "egate.tools.cli", "diag", *args, "--json", "--config", str(daemon.config)]
            run = subprocess.run(cmd, env=daemon.env, capture_output=True, text=True, timeout=180, check=False)
            assert run.returncode == 0, run.stdout + run.stderr
            return json.loads(run.stdout)

        diag("maintenance", "on")
        # The traveller walks through once the entry relay is on (as the gate's sensors would report).
        walker = threading.Thread(
            target=lambda: module.wait_for(lambda m: m.entry_free(), 60) and module.walk_through(), daemon=True
        )
        walker.start()
        result = diag("gate", "cycle")["result"]
        walker.join(30)
        assert (result["opened"], result["passage"], result["locked"]) == (True, "passage_completed", True)
        assert not module.entry_free() and module.egress_free()
        assert result["status"]["driver"] == "modbus" and result["status"]["gate_state"] == "locked"
    finally:
        daemon.stop()
