"""Control-API replies are contracts: one versioned model per command, exported as JSON Schema beside the
MQTT payloads, and what a real daemon puts on the wire is exactly what its model says."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, RootModel

from egate.edge.lane.replies import REPLY_MODELS, MqttStatusReply, StatusReply, parse_reply
from egate.edge.lane.status import _link_summary
from egate.edge.service.control_socket import ControlError
from egate.edge.uplink.link import LinkError
from egate.edge.uplink.messages import StatusPayload
from egate.tools.config.schemas import schema_files, stale_files, write_schema_files
from egate.tools.sim.osdp_gate import TurnstileSimulator
from tests.support.daemon_fixtures import ROOT, GateDaemon

SCHEMAS = ROOT / "docs" / "schemas"


def test_exported_schemas_are_up_to_date() -> None:
    assert stale_files(SCHEMAS) == [], "the committed schemas differ from the models: run `make schemas`"


def test_schema_export_writes_removes_and_detects_drift(tmp_path: Path) -> None:
    written = write_schema_files(tmp_path)
    assert {f"control/replies/{cmd}.json" for cmd in REPLY_MODELS} <= set(written)
    assert {"mqtt/status.json", "mqtt/bundle-kind.json", "control/request.json", "control/response.json"} <= set(
        written
    )
    assert stale_files(tmp_path) == []
    (tmp_path / "control" / "replies" / "status.json").write_text("{}\n")
    (tmp_path / "mqtt" / "retired.json").write_text("{}\n")
    assert stale_files(tmp_path) == ["control/replies/status.json", "mqtt/retired.json"]
    write_schema_files(tmp_path)
    assert stale_files(tmp_path) == [] and not (tmp_path / "mqtt" / "retired.json").exists()


def test_every_reply_is_versioned_and_closed() -> None:
    files = schema_files()
    for cmd, model in REPLY_MODELS.items():
        schema = json.loads(files[f"control/replies/{cmd}.json"])
        if issubclass(model, RootModel):
            continue  # gate.status is the driver's status, unchanged
        assert schema["additionalProperties"] is False, cmd
        assert schema["properties"]["v"]["const"] == 1, cmd


def test_a_reader_ignores_fields_added_within_a_version_and_refuses_a_broken_reply() -> None:
    newer = {"v": 1, "enabled": True, "connected": False, "last_error": None, "outbox": None, "added_later": 3}
    assert parse_reply(MqttStatusReply, newer).connected is False
    with pytest.raises(ControlError) as info:
        parse_reply(MqttStatusReply, {"v": 1, "enabled": "maybe", "connected": False})
    assert "MqttStatusReply" in info.value.error and "same egate version" in info.value.hint


def test_link_row_carries_the_error_code_and_message_never_a_repr() -> None:
    err = LinkError("unreachable", "nothing accepts connections at 127.0.0.1:1; is the broker up?", time.time())
    row = _link_summary(False, err)
    assert (row.ok, row.code, row.detail) == (False, "unreachable", err.message)
    waiting = _link_summary(False, None)
    assert waiting.code is None and "None" not in waiting.detail and "LinkError" not in waiting.detail
    assert _link_summary(True, None).detail == "connected"


# ---------------------------------------------------------------- a real daemon, every command


def _arguments() -> list[tuple[str, dict[str, Any]]]:
    """Every command in the order a technician would use them (gate commands need maintenance)."""
    return [
        ("ping", {}),
        ("status", {}),
        ("outcomes", {"n": 5}),
        ("camera.snapshot", {}),
        ("reader.last", {}),
        ("mqtt.status", {}),
        ("engines.status", {}),
        ("selftest.device", {}),
        ("gate.status", {}),
        ("maintenance", {"on": True}),
        ("gate.open", {"timeout_s": 2.0}),
        ("gate.lock", {}),
        ("gate.cycle", {"timeout_s": 4.0}),
        ("alarm.clear", {}),
        ("maintenance", {"on": False}),
    ]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateDaemon]:
    """No broker (the link's error path) and a reader port that does not exist (the reader's error path)."""
    work = tmp_path_factory.mktemp("replies")
    with TurnstileSimulator(scbk=secrets.token_bytes(16), link_path=work / "pty", time_scale=0.2) as sim:
        gate = GateDaemon(work, sim=sim, extra=f'[reader]\nserial_url = "{work / "no-reader-port"}"\n').start()
        try:
            gate.wait(
                lambda c: c.call("engines.status")["last_inference_ms"] is not None, 60, "a frame through the engine"
            )
            gate.wait(lambda c: c.call("mqtt.status")["last_error"] is not None, 30, "the link's first failure")
            yield gate
        finally:
            assert gate.stop() == 0


@pytest.mark.slow
def test_every_command_answers_exactly_its_model_in_a_real_daemon(daemon: GateDaemon) -> None:
    commands = daemon.call("ping")["commands"]
    assert sorted(commands) == sorted(REPLY_MODELS), "a command without a reply model (or a model without one)"
    seen = set()
    for cmd, args in _arguments():
        result = daemon.call(cmd, **args)
        model: type[BaseModel] = REPLY_MODELS[cmd]
        reply = model.model_validate(result)  # strict: an unknown field is refused
        # Nothing dropped or added on the way: the wire is the model's own JSON.
        assert reply.model_dump(mode="json") == result, cmd
        seen.add(cmd)
        if cmd == "gate.cycle":
            assert (result["opened"], result["passage"], result["locked"]) == (True, "passage_completed", True)
    assert seen == set(REPLY_MODELS)


@pytest.mark.slow
def test_status_and_diag_report_measured_errors_not_stubs(daemon: GateDaemon) -> None:
    status = StatusReply.model_validate(daemon.call("status"))
    mqtt = MqttStatusReply.model_validate(daemon.call("mqtt.status"))
    assert mqtt.last_error is not None and mqtt.connected is False
    row = status.devices["mqtt"]
    assert row.ok is False and row.code == mqtt.last_error.category == "unreachable"
    assert row.detail == mqtt.last_error.message and "LinkError(" not in row.detail
    # The retained MQTT status is built from the same rows: it validates with the code on each device.
    payload = StatusPayload(state="online", site="s", gate="g", devices={"mqtt": row.model_dump()})
    assert payload.devices["mqtt"].code == "unreachable"

    engines = daemon.call("engines.status")
    assert "restarts" not in engines  # the worker is never restarted in-process: no count to report
    assert engines["errors"] == 0 and engines["last_error"] is None

    checks = {c["name"]: c for c in daemon.call("selftest.device")["checks"]}
    reader = checks["reader"]
    assert reader["verdict"] == "FAIL" and "open failed:" in reader["detail"], reader
    assert "no error reported" not in reader["detail"]
