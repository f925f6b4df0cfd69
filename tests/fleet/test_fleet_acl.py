"""Per-gate credentials and topic ACLs (config/brokers/): a gate cannot read another gate's bundles or
commands, nor publish another gate's outcomes, events or commands, on mosquitto and on RabbitMQ."""

from __future__ import annotations

import pytest

from egate.tools.ops.broker_acl import gate_username
from tests.fleet.fleet_clients import Peer
from tests.fleet.fleet_fixtures import OPS_USER, AclMosquitto, Rabbit
from tests.support.broker import wait_until

P = "egate/v1"


def _mosq_peer(acl: AclMosquitto, user: str) -> Peer:
    name, password = acl.account(user)
    return Peer(acl.broker.host, acl.broker.port, name, password)


def test_mosquitto_gate_cannot_read_another_gates_bundles_or_commands(acl_mosquitto: AclMosquitto) -> None:
    g1 = _mosq_peer(acl_mosquitto, gate_username("mosquitto", "site-a", "gate-01"))
    g2 = _mosq_peer(acl_mosquitto, gate_username("mosquitto", "site-a", "gate-02"))
    ops = _mosq_peer(acl_mosquitto, OPS_USER)
    try:
        g1.subscribe(f"{P}/site-a/gate-02/bundle/+")
        g1.subscribe(f"{P}/site-a/gate-02/cmd")
        g1.subscribe(f"{P}/site-a/+/bundle/+")
        # mosquitto 2.0 grants these subscriptions and applies the read ACL to every delivery instead.
        g1.subscribe(f"{P}/site-a/gate-01/bundle/+")
        g2.subscribe(f"{P}/site-a/gate-02/bundle/+")
        g2.subscribe(f"{P}/site-a/gate-02/cmd")
        assert g1.subacks[-1] == [1] and g2.subacks[-1] == [1]
        ops.client.publish(f"{P}/site-a/gate-02/bundle/gallery", b"for gate-02", qos=1)
        ops.client.publish(f"{P}/site-a/gate-02/cmd", b"cmd for gate-02", qos=1)
        ops.client.publish(f"{P}/site-a/gate-01/bundle/gallery", b"for gate-01", qos=1)
        wait_until(lambda: f"{P}/site-a/gate-01/bundle/gallery" in g1.topics(), 10, "gate-01 gets its bundle")
        wait_until(lambda: len(g2.messages) == 2, 10, "gate-02 gets its bundle and command")
        # mosquitto delivers one publisher's messages in order: gate-02's came first and were not shown.
        assert set(g1.topics()) == {f"{P}/site-a/gate-01/bundle/gallery"}  # twice: two matching filters
    finally:
        for peer in (g1, g2, ops):
            peer.close()


def test_mosquitto_gate_cannot_publish_as_another_gate(acl_mosquitto: AclMosquitto) -> None:
    g1 = _mosq_peer(acl_mosquitto, gate_username("mosquitto", "site-a", "gate-01"))
    ops = _mosq_peer(acl_mosquitto, OPS_USER)
    try:
        ops.subscribe(f"{P}/#")
        denied = [
            f"{P}/site-a/gate-02/outcome",
            f"{P}/site-a/gate-02/event",
            f"{P}/site-a/gate-02/cmd",
            f"{P}/site-b/gate-01/outcome",
            f"{P}/site-a/gate-02/bundle/gallery",
            f"{P}/site-a/gate-01/cmd",  # not even commands or bundles to itself
            f"{P}/site-a/gate-01/bundle/gallery",
        ]
        mids = [g1.client.publish(topic, b"forged", qos=1).mid for topic in denied]
        own = g1.client.publish(f"{P}/site-a/gate-01/outcome", b"mine", qos=1).mid
        wait_until(lambda: own in g1.pubacks, 10, "PUBACK of the gate's own outcome")
        wait_until(lambda: f"{P}/site-a/gate-01/outcome" in ops.topics(), 10, "ops gets the gate's own outcome")
        assert g1.pubacks[own] is True
        # MQTT 5: mosquitto answers each denied publish with PUBACK 0x87 (not authorised).
        assert [g1.pubacks.get(mid) for mid in mids] == [False] * len(denied)
        assert ops.topics() == [f"{P}/site-a/gate-01/outcome"]
    finally:
        g1.close()
        ops.close()


@pytest.mark.slow
def test_rabbitmq_gate_cannot_read_or_publish_as_another_gate(rabbit: Rabbit) -> None:
    u1, p1 = rabbit.gate_account("site-a", "gate-01")
    u2, p2 = rabbit.gate_account("site-a", "gate-02")
    ports = rabbit.ports
    ops = Peer(rabbit.host, ports[1], OPS_USER, rabbit.ops_password, v5=False)
    g2 = Peer(rabbit.host, ports[0], u2, p2, v5=False)
    try:
        ops.subscribe(f"{P}/#")
        g2.subscribe(f"{P}/site-a/gate-02/bundle/+")
        assert g2.subacks[-1] == [1]

        # Reading another gate's bundles: RabbitMQ closes the connection instead of a failing SUBACK.
        snoop = Peer(rabbit.host, ports[0], u1, p1, v5=False)
        snoop.client.reconnect_delay_set(30, 60)  # stay closed once refused
        snoop.subscribe(f"{P}/site-a/gate-02/bundle/+")
        wait_until(lambda: snoop.disconnects > 0, 20, "RabbitMQ closes the snooping gate's connection")
        snoop.close()

        for topic in (f"{P}/site-a/gate-02/outcome", f"{P}/site-a/gate-02/cmd", f"{P}/site-a/gate-01/cmd"):
            forger = Peer(rabbit.host, ports[2], u1, p1, v5=False)
            forger.client.reconnect_delay_set(30, 60)
            forger.client.publish(topic, b"forged", qos=1)
            wait_until(lambda f=forger: f.disconnects > 0, 20, f"RabbitMQ closes the connection on {topic}")
            forger.close()

        ops.client.publish(f"{P}/site-a/gate-02/bundle/gallery", b"for gate-02", qos=1)
        g2.client.publish(f"{P}/site-a/gate-02/outcome", b"mine", qos=1)
        wait_until(lambda: len(g2.messages) == 1, 20, "gate-02 gets its bundle")
        wait_until(lambda: f"{P}/site-a/gate-02/outcome" in ops.topics(), 20, "ops gets gate-02's own outcome")
        assert b"forged" not in [payload for _, payload in ops.messages]
    finally:
        ops.close()
        g2.close()
