"""The central-ops side of the MQTT contract (docs/mqtt.md): watch a site, push bundles, send commands.

Used by `egate ops ...` and by the tests as the peer of `egate.edge.uplink.link.MqttLink`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from egate.edge.uplink.messages import BundleAck, BundleChunk, CmdAck
from egate.edge.uplink.topics import GateTopics

MessageCallback = Callable[[mqtt.MQTTMessage], None]
# Longest wait between probes of a transfer whose gate stays silent (probes start at `probe_s`).
_PROBE_MAX_S = 30.0
# A broker that closes TCP this often after our MQTT 5 CONNECT, without any CONNACK, speaks 3.1.1 only.
_SILENT_CLOSES_MEAN_NO_V5 = 2


@dataclass(frozen=True)
class OpsTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None


@dataclass
class PushProgress:
    """Counters of a running push (read by tests and the CLI's progress line)."""

    count: int = 0
    sent: int = 0
    broker_acked: int = 0
    resent: int = 0
    receiving_acks: int = 0
    history: list[str] = field(default_factory=list)


class OpsError(RuntimeError):
    """An ops operation failed; `hint` says what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class GateOffline(OpsError):
    """The gate did not answer the first chunk of a push in time: it is probably offline."""


class OpsClient:
    """A paho client for ops tools; subscriptions are re-made on every connect."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = "egate/v1",
        tls: OpsTls | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 5.0,
        session_expiry_s: int = 0,
        check_reach: bool = False,
        protocol: str = "5",
        fallback_hosts: list[tuple[str, int]] | None = None,
        manual_ack: bool = False,
    ) -> None:
        """`session_expiry_s` > 0 with a fixed `client_id` keeps the subscription and queues QoS 1 messages
        at the broker while this client is away (MQTT 5.0 section 3.1.2.11.2): a collector misses nothing.
        `protocol` "3.1.1" for brokers without MQTT 5 (RabbitMQ 3.x); there a persistent session is a
        clean_session=false one. `fallback_hosts`: further nodes of a broker cluster, tried in turn when
        the current one is unreachable or drops the connection. `manual_ack`: QoS 1 messages are
        acknowledged only by `ack(message)` (a collector acks after its database commit)."""
        self.host = host
        self.port = port
        # The CLI fails fast on a broker it cannot reach; peers in tests may start before their broker.
        self._check_reach = check_reach
        self._v5 = protocol != "3.1.1"
        self._hosts = [(host, port), *(fallback_hosts or [])]
        self._host_index = 0
        self._session_expiry_s = session_expiry_s
        self.prefix = prefix
        self._subs: dict[str, int] = {}
        self._callbacks: list[tuple[str, MessageCallback]] = []
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"egate-ops-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self._v5 else session_expiry_s <= 0,
        )
        self._client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        self._client.max_inflight_messages_set(16)
        if tls is not None:
            self._client.tls_set(
                ca_certs=str(tls.ca),
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._suback_events: dict[int, threading.Event] = {}
        self._suback_lock = threading.Lock()
        self._manual_ack = manual_ack
        if manual_ack:
            self._client.manual_ack_set(True)
        self._published: set[int] = set()
        self._published_cond = threading.Condition()
        self.refused: str | None = None
        self._ever_connected = False
        self._silent_closes = 0  # connections closed before any CONNACK

    # ------------------------------------------------------------------ lifecycle

    def connect(self, timeout: float = 10.0) -> None:
        from egate.tools.ops.precheck import PrecheckError, reach_broker

        if self._check_reach:
            try:
                reach_broker(self.host, self.port)  # DNS failure, refusal and silence each said as such
            except PrecheckError as exc:
                raise OpsError(exc.error, exc.hint) from None
        if not self._v5:
            self._client.connect_async(self.host, self.port, keepalive=30)
        elif self._session_expiry_s > 0:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self._session_expiry_s
            self._client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        else:
            self._client.connect_async(self.host, self.port, keepalive=30, clean_start=True)
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._connected.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or (self._v5 and self._silent_closes >= _SILENT_CLOSES_MEAN_NO_V5):
                break
        if not self._connected.is_set():
            self.close()
            if self._v5 and self._silent_closes >= _SILENT_CLOSES_MEAN_NO_V5:
                raise OpsError(
                    f"broker {self.host}:{self.port} closed the connection without answering an MQTT 5 CONNECT: "
                    "it speaks MQTT 3.1.1 only (RabbitMQ 3.x does this)",
                    "add --protocol 3.1.1 (or set EGATE_OPS_PROTOCOL=3.1.1)",
                )
            if self.refused:
                raise OpsError(
                    f"broker {self.host}:{self.port} refused this client: {self.refused}",
                    "check --user/--password-file or the client certificate (--cert/--tls-key) and the broker ACL",
                )
            raise OpsError(
                f"broker {self.host}:{self.port} accepted TCP but no MQTT session came up within {timeout} s",
                "check that TLS matches the port (--ca for 8883, none for 1883) and the broker's log",
            )

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> OpsClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Properties | None
    ) -> None:
        if rc.is_failure:
            self.refused = str(rc)
            return
        with self._lock:
            subs = list(self._subs.items())
        if subs:
            client.subscribe(subs)
        self._ever_connected = True
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        if not self._connected.is_set() and not self._ever_connected and self.refused is None:
            self._silent_closes += 1
        self._connected.clear()
        self._next_host(client)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        self._next_host(client)

    def _next_host(self, client: mqtt.Client) -> None:
        # Called in paho's network thread before it reconnects: point it at the next cluster node.
        if len(self._hosts) < 2:
            return
        self._host_index = (self._host_index + 1) % len(self._hosts)
        host, port = self._hosts[self._host_index]
        try:
            client.host = host
            client.port = port
        except RuntimeError:
            return  # paho refuses while a socket is open; the next disconnect moves on
        self.host, self.port = host, port

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, rc: ReasonCode, props: Properties | None
    ) -> None:
        with self._published_cond:
            self._published.add(mid)
            self._published_cond.notify_all()

    def wait_published(self, mid: int, timeout: float) -> bool:
        """Wait for the PUBACK of `mid` (also after paho re-sent it over a new connection)."""
        with self._published_cond:
            ok = self._published_cond.wait_for(lambda: mid in self._published, timeout)
            self._published.discard(mid)
            return ok

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        matched = False
        for topic_filter, callback in callbacks:
            if mqtt.topic_matches_sub(topic_filter, message.topic):
                callback(message)
                matched = True
        if not matched and self._manual_ack and message.qos > 0:
            # Nobody takes it (a resumed session delivers before callbacks exist): an unacknowledged
            # message would hold one of the broker's in-flight slots for this connection forever.
            client.ack(message.mid, message.qos)

    def add_callback(self, topic_filter: str, callback: MessageCallback) -> None:
        """Route messages matching `topic_filter` to `callback` without subscribing (register before
        `connect()` when a persistent session will deliver at once)."""
        with self._lock:
            self._callbacks.append((topic_filter, callback))

    # ------------------------------------------------------------------ primitives

    def subscribe(
        self,
        topic_filter: str,
        callback: MessageCallback | None,
        qos: int = 1,
        timeout: float = 10.0,
        *,
        retained: bool = False,
    ) -> None:
        """Subscribe and wait for the SUBACK, so nothing published afterwards is missed (`callback` None:
        one registered with `add_callback` takes the messages). A filter an existing subscription already
        covers (a gate's topic under a site wildcard) only adds the callback: on a RabbitMQ cluster every
        SUBSCRIBE is a binding written cluster-wide, seconds each on a loaded machine. `retained`: always
        SUBSCRIBE, since the broker sends retained messages only in answer to a SUBSCRIBE."""
        with self._lock:
            covered = not retained and any(
                existing == topic_filter
                or (
                    "+" not in topic_filter
                    and "#" not in topic_filter
                    and mqtt.topic_matches_sub(existing, topic_filter)
                )
                for existing, existing_qos in self._subs.items()
                if existing_qos >= qos
            )
            if callback is not None:
                self._callbacks.append((topic_filter, callback))
            if covered:
                return
            self._subs[topic_filter] = qos
        done = threading.Event()
        with self._suback_lock:
            # Under the lock so the SUBACK (network thread) cannot arrive before its event is registered.
            _rc, mid = self._client.subscribe(topic_filter, qos)
            if mid is not None:
                self._suback_events[mid] = done
        if mid is None or not done.wait(timeout):
            raise OpsError(f"no SUBACK for {topic_filter} within {timeout} s")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, *args: object) -> None:
        with self._suback_lock:
            done = self._suback_events.pop(mid, None)
        if done is not None:
            done.set()

    def unsubscribe_callback(self, topic_filter: str, callback: MessageCallback) -> None:
        """Stop calling `callback` (the broker subscription stays: other callbacks may share it)."""
        with self._lock:
            self._callbacks = [(f, cb) for f, cb in self._callbacks if not (f == topic_filter and cb is callback)]

    def ack(self, message: mqtt.MQTTMessage) -> None:
        """Acknowledge a QoS 1 message received with `manual_ack` (after it is safely stored)."""
        self._client.ack(message.mid, message.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def topics(self, site: str, gate: str) -> GateTopics:
        return GateTopics(self.prefix, site, gate)

    # ------------------------------------------------------------------ bundles

    def push_bundle(
        self,
        site: str,
        gate: str,
        kind: str,
        data: bytes,
        *,
        chunk_bytes: int = 256 * 1024,
        timeout: float = 600.0,
        probe_s: float = 2.0,
        transfer_id: str | None = None,
        progress: PushProgress | None = None,
        window: int = 8,
        before_send: Callable[[int], None] | None = None,
        offline_after_s: float | None = None,
    ) -> BundleAck:
        """Send `data` in chunks to `.../bundle/<kind>` and return the gate's final ack (applied/rejected).

        Resumes by itself: the gate answers `receiving` with the chunk ranges it still needs (after a
        reconnect, or when the last chunk came with gaps); with no answer for `probe_s` the last chunk is
        re-sent as a probe. Raises OpsError when no final ack came within `timeout`.
        `before_send(index)` runs before each chunk of the first pass (progress display, tests).
        `offline_after_s`: send only the last chunk first, which the gate answers at once with the chunks
        it still needs; no answer within that time raises GateOffline, having cost the broker one chunk
        (a rollout tries offline gates again later). With a stable `transfer_id` a gate keeps what it
        already received across attempts.
        """
        if not data:
            raise OpsError("bundle is empty")
        header_end = signed_prefix_bytes(data)
        if header_end > chunk_bytes:
            # The gate authenticates a transfer from chunk 0 alone: it must hold the whole signed header.
            raise OpsError(
                f"--chunk-bytes {chunk_bytes} is smaller than the bundle's signed header ({header_end} bytes): "
                "use bigger chunks"
            )
        topics = self.topics(site, gate)
        tid = transfer_id or uuid.uuid4().hex
        digest = hashlib.sha256(data).hexdigest()
        count = -(-len(data) // chunk_bytes)
        prog = progress if progress is not None else PushProgress()
        prog.count = count
        acks: queue.SimpleQueue[BundleAck] = queue.SimpleQueue()

        def on_ack(message: mqtt.MQTTMessage) -> None:
            try:
                ack = BundleAck.model_validate_json(message.payload)
            except ValidationError:
                return
            if ack.transfer_id == tid:
                acks.put(ack)

        self.subscribe(topics.bundle_ack, on_ack)

        encode = chunk_encoder(
            transfer_id=tid, kind=kind, count=count, chunk_bytes=chunk_bytes, total_bytes=len(data), sha256=digest
        )

        def chunk_bytes_of(index: int) -> bytes:
            return encode(index, data[index * chunk_bytes : (index + 1) * chunk_bytes])

        last_sent: dict[int, float] = {}
        pending: list[int] = []
        # When each copy of the last chunk went out: the gate answers every one with what it still misses.
        asked: list[float] = []

        def send(index: int) -> None:
            # A small window of unacknowledged chunks keeps memory flat for big bundles.
            while len(pending) >= window:
                if not self.wait_published(pending.pop(0), max(0.0, deadline - time.monotonic())):
                    raise OpsError(f"broker did not accept chunks of transfer {tid} within {timeout} s")
                prog.broker_acked += 1
            pending.append(self.publish(topics.bundle(kind), chunk_bytes_of(index), qos=1).mid)
            last_sent[index] = time.monotonic()
            if index == count - 1:
                asked.append(last_sent[index])

        deadline = time.monotonic() + timeout
        try:
            if offline_after_s is not None:
                send(count - 1)
                prog.sent += 1
                # The gate's time to answer counts from when the broker took the chunk: a busy broker
                # (or one blocking publishers over its memory alarm) must not make a gate look offline.
                if not self.wait_published(pending.pop(), max(0.0, deadline - time.monotonic())):
                    raise OpsError(f"broker did not accept chunks of transfer {tid} within {timeout} s")
                prog.broker_acked += 1
                try:
                    first = acks.get(timeout=offline_after_s)
                except queue.Empty:
                    raise GateOffline(f"{site}/{gate} did not answer within {offline_after_s:.0f} s") from None
                acks.put(first)
            else:
                for index in range(count):
                    if before_send is not None:
                        before_send(index)
                    send(index)
                    prog.sent += 1
            return self._finish_push(acks, send, last_sent, asked, prog, count, probe_s, deadline, tid, site, gate)
        finally:
            self.unsubscribe_callback(topics.bundle_ack, on_ack)

    def _finish_push(
        self,
        acks: queue.SimpleQueue[BundleAck],
        send: Callable[[int], None],
        last_sent: dict[int, float],
        asked: list[float],
        prog: PushProgress,
        count: int,
        probe_s: float,
        deadline: float,
        tid: str,
        site: str,
        gate: str,
    ) -> BundleAck:
        """Wait for the final ack; answer `receiving` acks by sending what the gate misses.

        The broker delivers one publisher's messages to a subscriber in order, so when the gate answers
        a copy of the last chunk, every chunk sent before that copy has reached it or is lost: only those
        are sent again. Chunks sent later may still be on their way through a busy broker; re-sending
        them would add load exactly when the broker is slow. Silence is answered with a probe (the last
        chunk again), less often while nothing changes (a gate verifying a big bundle on a busy CPU).
        """
        timeout = deadline - time.monotonic()
        wait = probe_s
        best = -1
        while time.monotonic() < deadline:
            try:
                ack = acks.get(timeout=min(wait, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
                prog.history.append("probe")
                send(count - 1)
                wait = min(wait * 2, _PROBE_MAX_S)
                continue
            if ack.status in ("applied", "rejected"):
                prog.history.append(ack.status)
                return ack
            prog.receiving_acks += 1
            prog.history.append(f"receiving {ack.received}/{ack.count}")
            if ack.received > best:
                best, wait = ack.received, probe_s  # progress: back to quick probes
            # The copy of the last chunk this ack answers (acks come in order); unknown: one probe ago.
            answered = asked.pop(0) if asked else time.monotonic() - probe_s
            for first, last in ack.missing:
                for index in range(first, last + 1):
                    if index not in last_sent or last_sent[index] < answered:
                        fresh = index not in last_sent
                        send(index)
                        if fresh:
                            prog.sent += 1
                        else:
                            prog.resent += 1
        raise OpsError(f"no final ack for bundle transfer {tid} to {site}/{gate} within {timeout:.0f} s")

    # ------------------------------------------------------------------ commands

    def send_command(self, site: str, gate: str, raw: bytes, *, cmd_id: str | None, timeout: float = 30.0) -> CmdAck:
        """Publish a (signed) command and wait for its ack (matched on `cmd_id` when given)."""
        topics = self.topics(site, gate)
        acks: queue.SimpleQueue[CmdAck] = queue.SimpleQueue()

        def on_ack(message: mqtt.MQTTMessage) -> None:
            try:
                ack = CmdAck.model_validate_json(message.payload)
            except ValidationError:
                return
            if cmd_id is None or ack.cmd_id in (cmd_id, ""):
                acks.put(ack)

        self.subscribe(topics.cmd_ack, on_ack)
        self.publish(topics.cmd, raw, qos=1)
        try:
            return acks.get(timeout=timeout)
        except queue.Empty:
            raise OpsError(
                f"no ack from {site}/{gate} within {timeout} s: is the gate online (egate ops watch)?"
            ) from None


def chunk_encoder(
    *, transfer_id: str, kind: str, count: int, chunk_bytes: int, total_bytes: int, sha256: str
) -> Callable[[int, bytes], bytes]:
    """`encode(index, data)` -> the JSON of that `BundleChunk` of one transfer.

    The header is checked once through the BundleChunk model; each chunk's data is then base64-encoded
    straight into the JSON. Building every chunk through the model cost a rollout's sender about half
    of its CPU: pydantic decodes a base64 field to validate it and encodes it again to serialise.
    """
    last = total_bytes - chunk_bytes * (count - 1)
    BundleChunk.make(  # raises ValidationError on a bad header or geometry
        transfer_id=transfer_id,
        kind=kind,
        index=count - 1,
        count=count,
        chunk_bytes=chunk_bytes,
        total_bytes=total_bytes,
        sha256=sha256,
        data=bytes(max(0, last)),
    )
    head = {
        "v": 1,
        "transfer_id": transfer_id,
        "kind": kind,
        "count": count,
        "chunk_bytes": chunk_bytes,
        "total_bytes": total_bytes,
        "sha256": sha256,
    }
    prefix = json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"index":'

    def encode(index: int, data: bytes) -> bytes:
        if not 0 <= index < count or len(data) != (last if index == count - 1 else chunk_bytes):
            raise ValueError(f"chunk {index} of {count} with {len(data)} bytes does not fit this transfer")
        return b"".join((prefix, str(index).encode(), b',"data":"', base64.b64encode(data), b'"}'))

    return encode


def signed_prefix_bytes(data: bytes) -> int:
    """Bytes of the bundle envelope before the payload (magic, header, signature, padding); 0 if not a bundle."""
    if len(data) < 8 or data[:4] != b"EGB1":
        return 0
    header_len = int.from_bytes(data[4:8], "little")
    return min(len(data), (8 + header_len + 64 + 63) // 64 * 64)


def read_bundle_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise OpsError(f"cannot read bundle {path}: {exc.strerror}") from None
