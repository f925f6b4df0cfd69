"""The gate's link against a RabbitMQ cluster and against ACLs that refuse some of its publishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
        assert "seq 2" in link.publish_refused.message
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
