"""The gate's link against a RabbitMQ cluster and against ACLs that refuse some of its publishes."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from egate.edge.trust.bundles import BundleScope, CommandPayload, sign_bundle, split_envelope
from egate.edge.uplink.messages import BundleAck, CmdAck
from egate.tools.ops import link as ops_link
from egate.tools.ops.broker_acl import rabbitmq_gate_permissions
from tests.fleet.fleet_clients import Peer, gate_link
from tests.fleet.fleet_fixtures import OPS_USER, Rabbit
from tests.support.broker import Mosquitto, wait_until

P = "egate/v1"


def _event(n: int) -> dict[str, object]:
    return {"v": 1, "type": "other", "severity": "info", "message": f"event {n}", "details": {}}


def _outcome(n: int) -> dict[str, object]:
    return {"decision": "accept", "n": n}


@pytest.mark.slow
def test_auto_protocol_falls_back_to_311_when_rabbitmq_closes_a_v5_connect(rabbit: Rabbit, tmp_path: Path) -> None:
    user, password = rabbit.gate_account("site-f", "gate-01")
    ops = Peer(rabbit.host, rabbit.ports[1], OPS_USER, rabbit.ops_password, v5=False)
    outbox, link = gate_link(tmp_path, "site-f", "gate-01", rabbit.host, rabbit.ports[0], user, password)
    try:
        ops.subscribe(f"{P}/site-f/gate-01/outcome")
        outbox.append("outcome", _outcome(1))
        link.start()
        assert link.wait_connected(30), link.last_error
        assert link.protocol == "3.1.1"
        wait_until(lambda: len(ops.messages) == 1, 20, "the outcome reaches ops over 3.1.1")
        wait_until(lambda: outbox.depth() == 0, 20, "the outbox empties on PUBACK")
    finally:
        link.close()
        ops.close()


@pytest.mark.slow
def test_publish_refused_by_rabbitmq_acl_is_parked_and_the_rest_flows(rabbit: Rabbit, tmp_path: Path) -> None:
    # A gate whose account may publish events but not outcomes: RabbitMQ closes the connection on
    # each denied outcome, and paho would re-send it after every reconnect.
    user, password = "site-f.gate-02", "pw-gate-02"
    write, read = rabbitmq_gate_permissions()
    rabbit.cluster.import_users([(user, password, write.replace("|outcome", ""), read)])
    ops = Peer(rabbit.host, rabbit.ports[2], OPS_USER, rabbit.ops_password, v5=False)
    outbox, link = gate_link(tmp_path, "site-f", "gate-02", rabbit.host, rabbit.ports[0], user, password)
    try:
        ops.subscribe(f"{P}/site-f/gate-02/+")
        outbox.append("event", _event(1))
        outbox.append("outcome", _outcome(2))
        for n in range(3, 6):
            outbox.append("event", _event(n))
        link.start()
        wait_until(lambda: link.publish_refused is not None, 60, "the link raises the publish_refused alarm")
        wait_until(lambda: outbox.depth() == 1, 60, "every event delivered, the refused outcome kept")

        def events() -> list[int]:
            return sorted({json.loads(p)["seq"] for t, p in list(ops.messages) if t.endswith("/event")})

        # A PUBACK to the gate can come before the broker's delivery to the subscriber: wait for it.
        wait_until(lambda: len(events()) >= 4, 30, "ops receives every event")
        assert events() == [1, 3, 4, 5]
        assert link.stats().parked == 1
        assert link.publish_refused is not None and "seq 2" in link.publish_refused.message
        # Later traffic keeps flowing: the link is not stuck behind the refused outcome.
        outbox.append("event", _event(6))
        wait_until(lambda: outbox.depth() == 1 and link.connected, 30, "a new event goes out")
        assert outbox.peek(0, 10)[0].seq == 2
    finally:
        link.close()
        ops.close()


def test_publish_refused_by_mosquitto_v5_is_parked_and_the_rest_flows(tmp_path: Path) -> None:
    # MQTT 5: mosquitto answers a denied publish with PUBACK 0x87 and keeps the connection.
    acl = tmp_path / "acl"
    acl.write_text(
        "user egate-ops\ntopic readwrite egate/v1/#\n"
        "pattern readwrite egate/v1/%u/status\npattern write egate/v1/%u/event\n"
        "pattern read egate/v1/%u/bundle/+\npattern read egate/v1/%u/cmd\n"
    )
    users = {"egate-ops": "ops-pw", "site-m/gate-01": "gate-pw"}
    with Mosquitto(tmp_path / "broker", users=users, extra_config=f"acl_file {acl}") as broker:
        ops = Peer(broker.host, broker.port, "egate-ops", "ops-pw")
        outbox, link = gate_link(tmp_path, "site-m", "gate-01", broker.host, broker.port, "site-m/gate-01", "gate-pw")
        try:
            ops.subscribe(f"{P}/site-m/gate-01/+")
            outbox.append("outcome", _outcome(1))
            outbox.append("event", _event(2))
            link.start()
            wait_until(lambda: link.publish_refused is not None, 60, "the link raises the publish_refused alarm")
            wait_until(lambda: outbox.depth() == 1, 30, "the event delivered, the refused outcome kept")
            assert link.protocol == "5"
            # The gate's PUBACK can come before the broker's delivery to the subscriber: wait for it.
            wait_until(lambda: any(t.endswith("/event") for t in ops.topics()), 20, "ops receives the event")
            assert [json.loads(p)["seq"] for t, p in ops.messages if t.endswith("/event")] == [2]
            assert link.stats().parked == 1
        finally:
            link.close()
            ops.close()


def _ops_cli() -> typer.Typer:
    app = typer.Typer()
    ops_link.register(app)

    @app.callback()
    def _root() -> None:
        """ops watch|push|cmd under test."""

    return app


@pytest.mark.slow
def test_ops_watch_push_and_cmd_work_on_the_rabbitmq_cluster_over_311(rabbit: Rabbit, tmp_path: Path) -> None:
    # The gate is on node 0; ops connects to node 1 and names the others with --node: the gate's
    # retained status lives only on node 0, and push/cmd must still find it online there.
    site, gate = "site-w", "gate-01"
    user, password = rabbit.gate_account(site, gate)
    pwfile = tmp_path / "ops-password"
    pwfile.write_text(rabbit.ops_password)
    nodes = [f"{rabbit.host}:{port}" for port in (rabbit.ports[0], rabbit.ports[2])]
    conn = ["--host", rabbit.host, "--port", str(rabbit.ports[1]), "--user", OPS_USER, "--password-file", str(pwfile)]
    cluster = [*conn, "--protocol", "3.1.1", "--node", nodes[0], "--node", nodes[1]]
    signing = Ed25519PrivateKey.generate()
    key_file = tmp_path / "ops.key"
    key_file.write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    bundles: list[bytes] = []

    def on_bundle(kind: str, data: bytes) -> BundleAck:
        bundles.append(data)
        return BundleAck.applied()

    def on_command(raw: bytes) -> CmdAck:
        command = CommandPayload.model_validate_json(raw[split_envelope(raw).payload_offset :])
        return CmdAck.done(command.command_id, f"{command.name} {command.args}")

    outbox, link = gate_link(tmp_path, site, gate, rabbit.host, rabbit.ports[0], user, password, protocol="3.1.1")
    link.set_bundle_handler(on_bundle)
    link.set_command_handler(on_command)
    link.start()
    stop = threading.Event()

    def keep_deciding() -> None:
        # Pacing, not synchronisation: outcomes keep coming until the watcher has seen enough.
        n = 0
        while not stop.wait(0.2):
            n += 1
            outbox.append("outcome", _outcome(n))

    feeder = threading.Thread(target=keep_deciding)
    try:
        assert link.wait_connected(30), link.last_error
        runner = CliRunner()
        # Without --protocol the v5 CONNECT is closed unanswered: said as such, with the fix.
        v5 = runner.invoke(_ops_cli(), ["watch", "--site", site, "--json", "--timeout", "20", *conn])
        assert v5.exit_code == 2 and "--protocol 3.1.1" in v5.output, v5.output

        feeder.start()
        watch = runner.invoke(
            _ops_cli(), ["watch", "--site", site, "--json", "--count", "3", "--timeout", "60", *cluster]
        )
        assert watch.exit_code == 0, watch.output
        lines = [json.loads(line) for line in watch.output.strip().splitlines()]
        outcomes = [x for x in lines if x.get("topic") == "outcome"]
        assert outcomes and all(x["gate"] == gate for x in outcomes)
        stop.set()
        feeder.join()

        now = datetime.now(timezone.utc)
        bundle = tmp_path / "keys.egb"
        bundle.write_bytes(
            sign_bundle(
                kind="keys",
                version=1,
                payload=os.urandom(300_000),
                private_key=signing,
                key_id="ops-0123456789abcdef",
                scope=BundleScope(site=site, gates=(gate,)),
                issued_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
        push_args = ["push", str(bundle), "--site", site, "--gate", gate, "--chunk-bytes", "65536", "--json"]
        push = runner.invoke(_ops_cli(), [*push_args, *cluster])
        assert push.exit_code == 0, push.output
        out = json.loads(push.output.strip().splitlines()[-1])
        assert out["ok"] and out["ack"]["status"] == "applied" and out["chunks"] == 5
        assert bundles == [bundle.read_bytes()]
        # Asking node 1 alone: the gate's retained status is not there.
        alone = runner.invoke(_ops_cli(), [*push_args, *conn, "--protocol", "3.1.1"])
        assert alone.exit_code == 2 and f"unknown gate {site}/{gate}" in alone.output, alone.output

        cmd_args = ["cmd", "set-mode", "--mode", "closed", "--site", site, "--gate", gate]
        cmd = runner.invoke(_ops_cli(), [*cmd_args, "--signing-key", str(key_file), "--json", *cluster])
        assert cmd.exit_code == 0, cmd.output
        out = json.loads(cmd.output.strip().splitlines()[-1])
        assert out["ok"] and out["ack"]["message"] == "set_mode {'mode': 'closed'}"
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join()
        link.close()
        outbox.close()
