"""Small MQTT peers for the fleet tests: a raw paho client that records what it receives and how its
publishes ended, and a gate (Outbox + MqttLink) for any site/gate/broker."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.outbox import Outbox
from tests.support.broker import wait_until


class Peer:
    """A paho client with a user name; records messages, PUBACK results and disconnects."""

    def __init__(self, host: str, port: int, user: str, password: str, *, v5: bool = True) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, bool] = {}
        self.subacks: list[list[int]] = []
        self.disconnects = 0
        self.connects = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"peer-{uuid.uuid4().hex[:10]}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        self.client.username_pw_set(user, password)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        wait_until(lambda: self.connects > 0, 20, f"{user} connected")

    def _on_connect(self, *args: Any) -> None:
        reason = args[3]
        if not reason.is_failure:
            with self._lock:
                self.connects += 1

    def _on_disconnect(self, *args: Any) -> None:
        with self._lock:
            self.disconnects += 1

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.pubacks[mid] = not reason.is_failure

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            self.subacks.append([r.value for r in reasons])

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _ in self.messages]

    def subscribe(self, topic: str) -> None:
        before = len(self.subacks)
        self.client.subscribe(topic, 1)
        wait_until(lambda: len(self.subacks) > before or self.disconnects > 0, 20, f"SUBACK for {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def gate_link(
    tmp: Path,
    site: str,
    gate: str,
    host: str,
    port: int,
    user: str,
    password: str,
    **overrides: Any,
) -> tuple[Outbox, MqttLink]:
    values: dict[str, Any] = {
        "host": host,
        "port": port,
        "tls": False,
        "cert_credential": None,
        "key_credential": None,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        "username": user,
    }
    values.update(overrides)
    outbox = Outbox(tmp / f"{site}-{gate}-outbox.sqlite", OutboxConfig(), gate)

    def status() -> StatusPayload:
        return StatusPayload(state="online", site=site, gate=gate, mode="exit")

    link = MqttLink(
        LinkConfig(**values),
        site,
        gate,
        outbox,
        status,
        LinkCredentials(username=user, password=password.encode()),
        bundle_dir=tmp / f"{site}-{gate}-bundles",
    )
    return outbox, link
