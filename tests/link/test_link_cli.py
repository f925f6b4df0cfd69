"""`egate ops watch|push|cmd` and `egate bench link` against a real mosquitto and a real MqttLink."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import structlog
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from egate.edge.trust.bundles import SIGNATURE_CONTEXT, CommandPayload, parse_header, split_envelope
from egate.edge.uplink.messages import BundleAck, CmdAck, message_schemas
from egate.tools.bench import link as bench_link
from egate.tools.ops import link as ops_link
from tests.support.broker import Mosquitto
from tests.support.link_fixtures import GATE, SITE, fast_link_config, make_link


def _app(register: object) -> typer.Typer:
    app = typer.Typer()
    register(app)  # type: ignore[operator]

    @app.callback()
    def _root() -> None:
        """Group under test."""

    return app


def _conn(broker: Mosquitto) -> list[str]:
    return ["--host", broker.host, "--port", str(broker.port)]


def _signed_bundle(path: Path, payload: bytes) -> Path:
    """A real signed bundle (kind `keys`: the tool reads the kind from its header)."""
    from datetime import UTC, datetime, timedelta

    from egate.edge.trust.bundles import BundleScope, sign_bundle

    now = datetime.now(UTC)
    path.write_bytes(
        sign_bundle(
            kind="keys",
            version=1,
            payload=payload,
            private_key=Ed25519PrivateKey.generate(),
            key_id="ops-0123456789abcdef",
            scope=BundleScope(site=SITE, gates=(GATE,)),
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        )
    )
    return path


def test_push_waits_for_the_gate_ack(tmp_path: Path, broker: Mosquitto) -> None:
    bundle = _signed_bundle(tmp_path / "keys.egb", os.urandom(700_000))
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    got: list[bytes] = []

    def on_bundle(kind: str, bundle: bytes) -> BundleAck:
        got.append(bundle)
        return BundleAck.applied()

    link.set_bundle_handler(on_bundle)
    link.start()
    try:
        assert link.wait_connected(10)
        args = ["push", str(bundle), "--gate", GATE, "--site", SITE, "--json", "--chunk-bytes", "65536"]
        result = CliRunner().invoke(_app(ops_link.register), [*args, *_conn(broker)])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output.strip().splitlines()[-1])
        assert out["ok"] and out["ack"]["status"] == "applied" and out["chunks"] == 11
        assert out["kind"] == "keys"  # read from the bundle's header, no --kind needed
        assert got == [bundle.read_bytes()]
        wrong = CliRunner().invoke(_app(ops_link.register), [*args, "--kind", "gallery", *_conn(broker)])
        assert wrong.exit_code == 2 and "is a keys bundle, not gallery" in wrong.output
    finally:
        link.close()
        outbox.close()


@pytest.mark.slow  # a second of subprocess start-up or network timeouts per case
def test_push_to_an_unknown_gate_fails_at_once_naming_the_known_ones(tmp_path: Path, broker: Mosquitto) -> None:
    bundle = _signed_bundle(tmp_path / "b.egb", b"x" * 100)
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    link.start()
    try:
        assert link.wait_connected(10)
        # The default --timeout (600 s) is never waited: the gate's retained status answers first.
        args = ["push", str(bundle), "--gate", "nobody", "--site", SITE, "--json"]
        result = CliRunner().invoke(_app(ops_link.register), [*args, *_conn(broker)])
        out = json.loads(result.output)
        assert result.exit_code == 2 and out["error"].startswith(f"unknown gate {SITE}/nobody")
        assert GATE in out["hint"]
    finally:
        link.close()
        outbox.close()
    # Stopped cleanly: the retained status says so, with the time.
    result = CliRunner().invoke(
        _app(ops_link.register), ["push", str(bundle), "--gate", GATE, "--site", SITE, "--json", *_conn(broker)]
    )
    out = json.loads(result.output)
    assert result.exit_code == 2 and f"gate {SITE}/{GATE} is stopped" in out["error"], out
    assert "systemctl start egate" in out["hint"]


def test_push_of_a_file_that_is_no_bundle_is_refused_before_connecting(tmp_path: Path) -> None:
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8 not a bundle")
    args = ["push", str(junk), "--gate", GATE, "--site", SITE, "--port", "1", "--json"]
    result = CliRunner().invoke(_app(ops_link.register), args)
    assert result.exit_code == 2 and "not a signed egate bundle" in json.loads(result.output)["error"]


def test_broker_refused_and_dns_failure_are_told_apart(tmp_path: Path) -> None:
    from egate.tools.rig.local_broker import free_port

    bundle = _signed_bundle(tmp_path / "b.egb", b"x")
    base = ["push", str(bundle), "--gate", GATE, "--site", SITE, "--json"]
    refused = CliRunner().invoke(_app(ops_link.register), [*base, "--host", "127.0.0.1", "--port", str(free_port())])
    out = json.loads(refused.output)
    assert refused.exit_code == 2 and "refused the connection" in out["error"] and "start the broker" in out["hint"]
    dns = CliRunner().invoke(_app(ops_link.register), [*base, "--host", "no-such-host.invalid", "--port", "1883"])
    out = json.loads(dns.output)
    assert dns.exit_code == 2 and "cannot resolve the broker host" in out["error"] and "DNS" in out["hint"]


def test_watch_json_lines(tmp_path: Path, broker: Mosquitto) -> None:
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    link.start()
    stop = threading.Event()

    def keep_deciding() -> None:
        # Pacing, not synchronisation: outcomes keep coming until the watcher has seen enough.
        while not stop.wait(0.1):
            outbox.append("outcome", {"decision": "pass"})

    feeder = threading.Thread(target=keep_deciding)
    try:
        assert link.wait_connected(10)
        feeder.start()
        args = ["watch", "--site", SITE, "--json", "--count", "3", "--timeout", "30"]
        result = CliRunner().invoke(_app(ops_link.register), [*args, *_conn(broker)])
        assert result.exit_code == 0, result.output
        lines = [json.loads(x) for x in result.output.strip().splitlines()]
        assert len(lines) == 3
        assert lines[0]["topic"] == "status" and lines[0]["retain"] is True
        assert lines[0]["payload"]["state"] == "online"
        outcomes = [x for x in lines if x["topic"] == "outcome"]
        assert outcomes and outcomes[0]["gate"] == GATE
        assert outcomes[0]["payload"]["payload"] == {"decision": "pass"}
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join()
        link.close()
        outbox.close()


def test_watch_table_shows_gate_status(tmp_path: Path, broker: Mosquitto) -> None:
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    link.start()
    try:
        assert link.wait_connected(10)
        args = ["watch", "--site", SITE, "--count", "1", "--timeout", "30"]
        result = CliRunner().invoke(_app(ops_link.register), [*args, *_conn(broker)])
        assert result.exit_code == 0, result.output
        # Piped (not a terminal): plain lines, flushed one by one.
        assert GATE in result.output and "status: online since" in result.output and "mode exit" in result.output
    finally:
        link.close()
        outbox.close()


def test_cmd_is_signed_with_the_bundle_signer(tmp_path: Path, broker: Mosquitto) -> None:
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "ops.key"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    outbox, link = make_link(tmp_path, fast_link_config(broker))

    def on_command(raw: bytes) -> CmdAck:
        envelope = split_envelope(raw)
        key.public_key().verify(envelope.signature, SIGNATURE_CONTEXT + envelope.header_bytes)
        header = parse_header(envelope.header_bytes)
        command = CommandPayload.model_validate_json(raw[envelope.payload_offset :])
        assert header.kind == "command"
        assert header.scope.site == SITE and header.scope.gates == (GATE,)
        return CmdAck.done(command.command_id, f"{command.name} {command.args}")

    link.set_command_handler(on_command)
    link.start()
    try:
        assert link.wait_connected(10)
        args = [
            "cmd",
            "set-mode",
            "--mode",
            "closed",
            "--gate",
            GATE,
            "--site",
            SITE,
            "--signing-key",
            str(key_file),
            "--json",
        ]
        result = CliRunner().invoke(_app(ops_link.register), [*args, *_conn(broker)])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output.strip().splitlines()[-1])
        assert out["ok"] and out["ack"]["cmd_id"] == out["cmd_id"]
        assert out["ack"]["message"] == "set_mode {'mode': 'closed'}"
        bad = CliRunner().invoke(_app(ops_link.register), [*args[:2], *args[4:], *_conn(broker)])
        assert bad.exit_code == 2 and "--mode" in bad.output
        # Checked before anything is signed or sent: an unknown mode, a key id that is not the key's.
        banana = CliRunner().invoke(_app(ops_link.register), [*args[:3], "banana", *args[4:], *_conn(broker)])
        assert banana.exit_code == 2 and "'banana' is not a mode" in banana.output
        wrong_id = CliRunner().invoke(_app(ops_link.register), [*args, "--key-id", "ops-2026", *_conn(broker)])
        assert wrong_id.exit_code == 2 and "does not belong to" in wrong_id.output
    finally:
        link.close()
        outbox.close()


def test_bench_link_json(tmp_path: Path) -> None:
    args = ["link", "--json", "--count", "300", "--dir", str(tmp_path)]
    try:
        result = CliRunner().invoke(_app(bench_link.register), args)
    finally:
        structlog.reset_defaults()  # the command configured logging for a CLI process, not for the suite
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["count"] == 300
    assert out["commit_per_s"] > 0 and out["drain_per_s"] > 0
    assert out["synchronous"] == "FULL"


def test_message_schemas_cover_every_topic() -> None:
    schemas = message_schemas()
    for topic in ("status", "outcome", "event", "health", "bundle/<kind>", "bundle/ack", "cmd/ack", "cmd.payload"):
        assert schemas[topic]["type"] == "object", topic
    assert schemas["status"]["properties"]["v"]["const"] == 1
