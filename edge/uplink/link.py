"""MQTT link to central ops: forwards the outbox, keeps the retained status, receives bundles and commands.

Threads (all stopped by `close()` within the 5 s systemd allows):
- paho's network thread (`loop_start`): socket I/O and callbacks only; the callbacks never touch the
  disk or call user code that may be slow, they hand work to the two threads below.
- the forwarder: publishes outbox items in `seq` order at QoS 1 with at most `max_inflight` unacknowledged,
  and deletes them from the outbox when their PUBACK arrives. It publishes only on a settled session
  (the broker answered its subscription and `online` status). When a connection drops with items
  unacknowledged, the link starts a fresh paho client (paho would re-send them before the new session
  settles) and publishes them again from the outbox, oldest first, so the broker sees every gate's
  messages in order.
- the worker: writes bundle chunks to disk, verifies, calls the daemon's bundle and command handlers
  and publishes their acks. It takes work from a bounded queue (signed commands ahead of chunks, each with
  its own bound); when the queue is full, paho's thread refuses the message with a short `busy` ack
  (rate-limited) instead of growing memory or blocking.

Every downlink message is bounded before it costs anything: its size (`link.max_chunk_message_bytes`,
`link.max_command_bytes`), the queue (`link.work_queue_length`), the transfers held at once
(`link.max_concurrent_transfers`) and their idle age (`link.incomplete_bundle_max_age_s`); a transfer's
chunk 0 is authenticated before anything of it is written (egate.edge.uplink.chunks).

Topic contract and payloads: docs/mqtt.md and edge/messages.py.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ValidationError

from egate.drivers.clock import utc_now
from egate.edge.settings.link import LinkConfig
from egate.edge.uplink.chunks import ChunkAssembler, ChunkResult, TransferAuthenticator
from egate.edge.uplink.messages import BundleAck, BundleChunk, CmdAck, HealthPayload, StatusPayload
from egate.edge.uplink.outbox import Outbox, OutboxError
from egate.edge.uplink.publish_refusals import RefusalTracker
from egate.edge.uplink.topics import GateTopics

log = structlog.get_logger(__name__)

BundleHandler = Callable[[str, bytes], BundleAck]
"""`handler(kind, data)`: `data` is the complete bundle, SHA-256 checked (it never touches the disk in clear)."""
CommandHandler = Callable[[bytes], CmdAck]
"""`handler(raw)`: the `.../cmd` payload as received (signed envelope); verify it, act, return the ack."""

_CLOSE_BUDGET_S = 4.0
_REJECTED_PUBLISH_PAUSE_S = 5.0
_EXPIRE_EVERY_S = 60.0
_BUSY_ACKS_PER_S = 10.0
_ACK_TEXT_MAX = 300  # characters of a reason in an ack: far below BundleAck's and CmdAck's own limits


def short_text(text: str, limit: int = _ACK_TEXT_MAX) -> str:
    """A reason cut to fit an ack (and a log line): never the whole of something a peer sent."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _WorkQueue:
    """The worker's two bounded lanes: signed commands first, then chunks. `put` never blocks."""

    def __init__(self, length: int) -> None:
        self._length = length
        self._cond = threading.Condition()
        self._urgent: collections.deque[tuple[str, Any]] = collections.deque()
        self._chunks: collections.deque[tuple[str, Any]] = collections.deque()

    def put(self, task: str, arg: Any, *, urgent: bool = False, force: bool = False) -> bool:
        lane = self._urgent if urgent else self._chunks
        with self._cond:
            if not force and len(lane) >= self._length:
                return False
            lane.append((task, arg))
            self._cond.notify()
            return True

    def get(self, timeout: float) -> tuple[str, Any] | None:
        with self._cond:
            if not self._urgent and not self._chunks:
                self._cond.wait(timeout)
            if self._urgent:
                return self._urgent.popleft()
            if self._chunks:
                return self._chunks.popleft()
            return None

    def __len__(self) -> int:
        with self._cond:
            return len(self._urgent) + len(self._chunks)


# A message the broker refuses this many times in a row (a failing PUBACK, or the connection closed while
# it was the only one in flight: RabbitMQ's answer to a topic-ACL denial) is parked: it stays in the
# outbox, the rest of the traffic flows past it, and it is tried again after _PARKED_RETRY_S, doubling
# per refusal up to _PARKED_RETRY_MAX_S (see edge/uplink/publish_refusals.py).
_STRIKES_TO_PARK = 3
_PARKED_RETRY_S = 30.0
_PARKED_RETRY_MAX_S = 600.0
# In `auto` mode, a broker that closes TCP this many times without a CONNACK to our v5 CONNECT (and never
# accepted v5 on this link) is taken to speak 3.1.1 only (RabbitMQ 3.x does exactly that).
_V5_SILENT_CLOSES_TO_FALL_BACK = 2
# Connections that end this soon after CONNACK with nothing of ours in flight, this many times in a row,
# point at a topic ACL refusing the gate's own status/subscriptions.
_SHORT_SESSION_S = 2.0
# MQTT re-sends an unacknowledged publish only after a reconnect. A broker that lost track of it (a
# cluster node died between our PUBLISH and its PUBACK) would hold the in-flight window full forever;
# after this long without any PUBACK while connected, start over with a fresh client.
_PUBACK_TIMEOUT_S = 30.0
_SHORT_SESSIONS_TO_ALARM = 3
# A session is "settled" once the broker answered its subscription and its `online` status (or it stayed
# up this long). Outbox messages go out only on a settled session, so a broker that closes the
# connection over the session itself (a refused subscription, a queue that nacks the status: RabbitMQ
# after a node crash) is never mistaken for one refusing an outbox message.
_SETTLE_MAX_S = 5.0


@dataclass(frozen=True)
class LinkCredentials:
    """Paths and secrets for the broker connection, resolved from `$CREDENTIALS_DIRECTORY` by the daemon."""

    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_credentials_dir(cls, config: LinkConfig) -> LinkCredentials:
        """Resolve the credentials `config` names (raises egate.edge.service.secrets.CredentialError naming the missing one)."""
        from egate.edge.service.secrets import credential_path, read_credential

        if not config.tls:
            ca = cert = key = None
        else:
            ca = credential_path(config.ca_credential)
            cert = credential_path(config.cert_credential) if config.cert_credential else None
            key = credential_path(config.key_credential) if config.key_credential else None
        password = read_credential(config.password_credential).strip() if config.password_credential else None
        return cls(ca, cert, key, config.username, password)


@dataclass(frozen=True)
class LinkError:
    """Why the link is not up, in words a technician can act on."""

    category: str  # bad_credentials, not_authorised, tls_failure, unreachable, refused, protocol, lost, ...
    message: str
    at: float


@dataclass(frozen=True)
class LinkStats:
    connected: bool
    protocol: str
    connect_attempts: int
    connects: int
    published: int
    acked: int
    inflight: int
    outbox_depth: int
    work_queued: int = 0
    downlink_refused: int = 0
    parked: int = 0  # outbox messages the broker keeps refusing, held back (see MqttLink.publish_refused)


class _Client(mqtt.Client):
    """paho client that remembers why the last connection attempt failed.

    paho's loop catches the OSError of a failed connect (refused port, TLS handshake) and calls
    `on_connect_fail` without it; the reason is what a technician needs ("certificate verify failed").
    """

    connect_error: BaseException | None = None
    attempts: int = 0

    def reconnect(self) -> MQTTErrorCode:
        self.attempts += 1
        try:
            rc = super().reconnect()
        except OSError as exc:
            self.connect_error = exc
            raise
        self.connect_error = None
        return rc


def classify_connack(reason: ReasonCode, host: str, port: int) -> LinkError:
    """Turn a refusing CONNACK (MQTT 5.0 section 3.2.2.2; 3.1.1 section 3.2.2.3) into an actionable error."""
    value = reason.value
    name = str(reason)
    now = time.time()
    if value in (0x86, 4):
        return LinkError(
            "bad_credentials",
            f"broker {host}:{port} refused the user name or password ({name}): check link.username and the "
            "credential named by link.password_credential",
            now,
        )
    if value in (0x87, 5):
        # mosquitto 2 answers a wrong password with 0x87 too, so name both causes.
        return LinkError(
            "not_authorised",
            f"broker {host}:{port} says this gate is not authorised ({name}): check link.username and the "
            "password credential (link.password_credential) or the client certificate, and that the broker "
            "allows this client id",
            now,
        )
    if value in (0x84, 1):
        return LinkError(
            "protocol",
            f"broker {host}:{port} does not accept this MQTT version ({name}); set link.protocol to 3.1.1 or auto",
            now,
        )
    if value in (0x85, 2):
        return LinkError("refused", f"broker {host}:{port} rejected the client id ({name})", now)
    if value in (0x88, 0x89, 3):
        return LinkError("refused", f"broker {host}:{port} is unavailable or busy ({name}); will retry", now)
    if value == 0x8A:
        return LinkError("not_authorised", f"broker {host}:{port} has banned this client ({name})", now)
    return LinkError("refused", f"broker {host}:{port} refused the connection ({name})", now)


def classify_connect_error(exc: BaseException | None, host: str, port: int) -> LinkError:
    now = time.time()
    if isinstance(exc, ssl.SSLCertVerificationError):
        return LinkError(
            "tls_failure",
            f"TLS: the certificate of broker {host}:{port} is not trusted ({exc.verify_message}): check that "
            "the credential named by link.ca_credential is the CA that signed the broker, and that "
            "link.host matches the broker certificate's name",
            now,
        )
    if isinstance(exc, ssl.SSLError):
        return LinkError(
            "tls_failure",
            f"TLS handshake with broker {host}:{port} failed ({exc.reason or exc}): check the client certificate "
            "and key credentials, and that the broker port speaks TLS (link.tls)",
            now,
        )
    if isinstance(exc, ConnectionRefusedError):
        return LinkError("unreachable", f"nothing accepts connections at {host}:{port}; is the broker up?", now)
    if isinstance(exc, socket.gaierror):
        return LinkError("unreachable", f"broker host name {host!r} does not resolve ({exc}); check link.host", now)
    if isinstance(exc, TimeoutError):
        return LinkError("unreachable", f"connecting to {host}:{port} timed out; check routes and firewalls", now)
    if exc is None:
        return LinkError("unreachable", f"could not connect to {host}:{port}", now)
    return LinkError("unreachable", f"could not connect to {host}:{port}: {exc}", now)


class MqttLink:
    """The gate's MQTT client. Construct, register handlers, `start()`, and `close()` on the way out."""

    def __init__(
        self,
        config: LinkConfig,
        site_id: str,
        gate_id: str,
        outbox: Outbox,
        status_provider: Callable[[], StatusPayload],
        credentials: LinkCredentials,
        *,
        bundle_dir: Path | None = None,
    ) -> None:
        self._config = config
        self._site = site_id
        self._gate = gate_id
        self._outbox = outbox
        self._status_provider = status_provider
        self._credentials = credentials
        self.topics = GateTopics(config.topic_prefix, site_id, gate_id)
        self.client_id = f"{config.client_id_prefix}{site_id}-{gate_id}"
        self._assembler = ChunkAssembler(
            bundle_dir if bundle_dir is not None else outbox.path.parent / "bundles-incoming",
            max_bundle_bytes=config.max_bundle_bytes,
            max_transfers=config.max_concurrent_transfers,
            idle_max_s=config.incomplete_bundle_max_age_s,
        )
        self._bundle_handler: BundleHandler | None = None
        self._command_handler: CommandHandler | None = None
        self._protocol = MQTTProtocolVersion.MQTTv311 if config.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        self._client_lock = threading.Lock()
        self._client: _Client | None = None
        self._generation = 0
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._started = False
        self._last_error: LinkError | None = None
        self._connects = 0
        self._published = 0
        self._acked = 0
        self._inflight_count = 0
        self._drain_first = False
        self._disconnects = 0  # connections lost after CONNACK
        self._settled_disconnects = 0  # of those, lost after the session settled (the forwarder counts strikes)
        self._settled = threading.Event()
        self._setup_mids: set[int] = set()  # this session's SUBSCRIBE and status PUBLISH, until answered
        self._quick_closes = 0  # sessions in a row that ended unsettled or within _SHORT_SESSION_S
        self._v5_silent_closes = 0
        self._connected_at = 0.0
        self._short_sessions = 0
        self._parked_count = 0
        self._publish_refused: LinkError | None = None
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, bool, str]] = queue.SimpleQueue()
        self._work = _WorkQueue(config.work_queue_length)
        self._refused = 0
        self._busy_ack_at = 0.0
        self._forwarder: threading.Thread | None = None
        self._worker: threading.Thread | None = None
        self._log = log.bind(site_id=site_id, gate_id=gate_id)
        outbox.add_listener(self._wake.set)

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """True only between an accepted CONNACK and the next disconnect."""
        return self._connected.is_set()

    @property
    def last_error(self) -> LinkError | None:
        """Why the link is down (None while connected or before the first attempt)."""
        return self._last_error

    @property
    def publish_refused(self) -> LinkError | None:
        """Alarm: outbox messages the broker keeps refusing (topic ACL), parked so the rest flows; else None."""
        return self._publish_refused

    @property
    def protocol(self) -> str:
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def set_bundle_handler(self, handler: BundleHandler) -> None:
        self._bundle_handler = handler

    def set_command_handler(self, handler: CommandHandler) -> None:
        self._command_handler = handler

    def set_transfer_authenticator(self, authenticator: TransferAuthenticator) -> None:
        """Check each transfer's chunk 0 (its signed header) before anything of the transfer is stored."""
        self._assembler.authenticator = authenticator

    def set_at_rest_key(self, key: bytes) -> None:
        """Seal partial transfers on disk with a key derived from `key` (the gallery key); call before start."""
        self._assembler.set_key(key)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        if self._started:
            raise RuntimeError("MqttLink.start() called twice")
        self._started = True
        self._assembler.expire()
        self._forwarder = threading.Thread(target=self._forward_loop, name="egate-link-forwarder", daemon=True)
        self._worker = threading.Thread(target=self._work_loop, name="egate-link-worker", daemon=True)
        self._forwarder.start()
        self._worker.start()
        with self._client_lock:
            self._client = self._new_client()
            self._connect(self._client)
        self._log.info(
            "link_started",
            host=self._config.host,
            port=self._config.port,
            client_id=self.client_id,
            tls=self._config.tls,
            protocol=self.protocol,
        )

    def close(self, clean: bool = True) -> None:
        """Stop. `clean`: publish retained `stopped` and disconnect normally (no will). Otherwise the broker
        publishes the `offline` will (MQTT 5: DISCONNECT 0x04; 3.1.1: the socket is dropped)."""
        if not self._started or self._stopping.is_set():
            return
        deadline = time.monotonic() + _CLOSE_BUDGET_S
        with self._client_lock:
            client = self._client
        if client is not None:
            if clean and self.connected:
                info = client.publish(self.topics.status, self._status_bytes("stopped"), qos=1, retain=True)
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=max(0.1, (deadline - time.monotonic()) / 2))
            self._stopping.set()
            if clean:
                client.disconnect()
            elif self._protocol == MQTTProtocolVersion.MQTTv5:
                client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
            else:
                sock = client.socket()
                if sock is not None:
                    sock.close()
            self._stop_network_thread(client, deadline)
        self._stopping.set()
        self._connected.clear()
        self._wake.set()
        self._work.put("stop", None, urgent=True, force=True)
        for thread in (self._forwarder, self._worker):
            if thread is not None:
                thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._log.info("link_closed", clean=clean)

    def _stop_network_thread(self, client: _Client, deadline: float) -> None:
        # loop_stop() joins without a timeout; a TCP/TLS connect in progress holds it for up to
        # connect_timeout. Join from a helper so close() keeps its budget (systemd allows 5 s).
        stopper = threading.Thread(target=client.loop_stop, name="egate-link-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=max(0.1, deadline - time.monotonic()))
        if stopper.is_alive():
            self._log.warning("link_network_thread_slow_to_stop")

    def __enter__(self) -> MqttLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(clean=True)

    def publish_health(self, payload: HealthPayload) -> bool:
        """Publish a health sample (QoS 0, not queued). Returns False when offline: the sample is skipped."""
        if not self.connected:
            return False
        return self._publish(self.topics.health, payload.model_dump_json().encode(), qos=0)

    def publish_status(self) -> bool:
        """Re-publish the retained status (after a mode or version change)."""
        if not self.connected:
            return False
        return self._publish(self.topics.status, self._status_bytes("online"), qos=1, retain=True)

    def stats(self) -> LinkStats:
        with self._client_lock:
            attempts = self._client.attempts if self._client is not None else 0
        return LinkStats(
            connected=self.connected,
            protocol=self.protocol,
            connect_attempts=attempts,
            connects=self._connects,
            published=self._published,
            acked=self._acked,
            inflight=self._inflight_count,
            outbox_depth=self._outbox.depth(),
            work_queued=len(self._work),
            downlink_refused=self._refused,
            parked=self._parked_count,
        )

    # ------------------------------------------------------------------ client setup

    def _status_bytes(self, state: str) -> bytes:
        try:
            status = self._status_provider()
            status = status.model_copy(update={"state": state, "site": self._site, "gate": self._gate, "ts": utc_now()})
        except Exception as exc:  # the provider is daemon code; a bug there must not keep ops blind
            self._log.warning("status_provider_failed", error=str(exc))
            status = StatusPayload(state=state, site=self._site, gate=self._gate)  # type: ignore[arg-type]
        return status.model_dump_json().encode()

    def _new_client(self) -> _Client:
        cfg = self._config
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self._protocol,
            clean_session=None if v5 else True,
        )
        client.reconnect_delay_set(self._reconnect_delay_s(), cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)
        # A connect attempt (TCP + TLS + CONNACK) must not outlast the stop budget.
        client.connect_timeout = 3.0
        if cfg.tls:
            client.tls_set(
                ca_certs=str(self._credentials.ca_path) if self._credentials.ca_path else None,
                certfile=str(self._credentials.cert_path) if self._credentials.cert_path else None,
                keyfile=str(self._credentials.key_path) if self._credentials.key_path else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if self._credentials.username is not None:
            password = self._credentials.password.decode() if self._credentials.password is not None else None
            client.username_pw_set(self._credentials.username, password)
        # The broker publishes this if the gate vanishes (crash, power, network): ops sees `offline`.
        client.will_set(self.topics.status, self._status_bytes("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _reconnect_delay_s(self) -> float:
        """First reconnect delay: the configured one, doubled per session in a row the broker ended at
        once (paho starts over at the minimum after every CONNACK, so without this a broker that accepts
        and then drops the gate would be hammered at the minimum delay)."""
        cfg = self._config
        return min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(self._quick_closes, 16))

    def _session_settled(self) -> bool:
        return self._settled.is_set() or (
            self._connected.is_set() and time.monotonic() - self._connected_at >= _SETTLE_MAX_S
        )

    def _setup_answered(self, mid: int) -> None:
        if mid in self._setup_mids:
            self._setup_mids.discard(mid)
            if not self._setup_mids:
                self._settled.set()
                self._wake.set()

    def _connect(self, client: _Client) -> None:
        cfg = self._config
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            # Clean start: the outbox, not the broker session, is what keeps uplink messages; downlink
            # transfers resume by the gate reporting missing chunks on every connect.
            client.connect_async(cfg.host, cfg.port, cfg.keepalive_s, clean_start=True)
        else:
            client.connect_async(cfg.host, cfg.port, cfg.keepalive_s)
        client.loop_start()

    def _fallback_to_311(self) -> None:
        if self._replace_client(MQTTProtocolVersion.MQTTv311):
            self._log.warning("link_protocol_fallback", protocol="3.1.1")

    def _replace_client(self, protocol: MQTTProtocolVersion | None = None) -> bool:
        """Start over with a fresh paho client: it forgets the messages the old one would re-send."""
        with self._client_lock:
            old = self._client
            if old is None or self._stopping.is_set():
                return False
            old.disconnect()
            old.loop_stop()
            if protocol is not None:
                self._protocol = protocol
            self._generation += 1
            self._client = self._new_client()
            self._connect(self._client)
        self._wake.set()
        return True

    # ------------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        if reason_code.is_failure:
            self._connected.clear()
            error = classify_connack(reason_code, self._config.host, self._config.port)
            if self._last_error is None or self._last_error.message != error.message:
                # Logged once per new reason, not once per retry.
                self._log.error("link_refused", category=error.category, reason=str(reason_code), error=error.message)
            self._last_error = error
            if error.category == "protocol" and self._config.protocol == "auto" and self.protocol == "5":
                self._work.put("fallback", None, urgent=True, force=True)
            return
        self._connects += 1
        self._connected_at = time.monotonic()
        self._last_error = None
        self._settled.clear()
        qos: int = self._config.downlink_qos
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            # no_local: bundle/+ also matches our own bundle/ack uplink (MQTT 5.0 section 3.8.3.1).
            _rc, sub_mid = client.subscribe(
                [
                    (self.topics.bundle_wildcard, SubscribeOptions(qos=qos, noLocal=True)),
                    (self.topics.cmd, SubscribeOptions(qos=qos, noLocal=True)),
                ]
            )
        else:
            _rc, sub_mid = client.subscribe([(self.topics.bundle_wildcard, qos), (self.topics.cmd, qos)])
        # `online` goes after the subscriptions: once ops sees it, commands reach the gate.
        info = client.publish(self.topics.status, self._status_bytes("online"), qos=1, retain=True)
        # Answers come on this (paho's) thread after this callback: no lock needed.
        self._setup_mids = {mid for mid in (sub_mid, info.mid) if mid}
        if not self._setup_mids:
            self._settled.set()
        self._connected.set()
        self._work.put("resume", None, urgent=True, force=True)
        self._wake.set()
        self._log.info("link_connected", protocol=self.protocol, session_present=flags.session_present)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is not self._client:
            return
        self._connected.clear()
        error = classify_connect_error(getattr(client, "connect_error", None), self._config.host, self._config.port)
        if self._last_error is None or self._last_error.message != error.message:
            self._log.error("link_connect_failed", category=error.category, error=error.message)
        self._last_error = error

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        was_connected = self._connected.is_set()
        settled = self._session_settled()
        self._settled.clear()
        self._connected.clear()
        self._drain_first = True
        if was_connected:
            self._disconnects += 1
            if settled:
                self._settled_disconnects += 1
        self._wake.set()
        if self._stopping.is_set():
            return
        if not was_connected:
            self._on_closed_before_connack()
            return
        quick = not settled or time.monotonic() - self._connected_at < _SHORT_SESSION_S
        self._quick_closes = self._quick_closes + 1 if quick else 0
        client.reconnect_delay_set(self._reconnect_delay_s(), self._config.reconnect_max_s)  # type: ignore[arg-type]
        self._last_error = LinkError("lost", f"connection to the broker lost ({reason_code})", time.time())
        self._log.warning("link_disconnected", reason=str(reason_code))
        if time.monotonic() - self._connected_at < _SHORT_SESSION_S and self._inflight_count == 0:
            self._short_sessions += 1
        else:
            self._short_sessions = 0
        if self._short_sessions >= _SHORT_SESSIONS_TO_ALARM:
            self._last_error = LinkError(
                "not_authorised",
                f"broker {self._config.host}:{self._config.port} closes the connection right after accepting it: "
                f"its topic ACL probably refuses this gate's own topics ({self.topics.root}/#); check the "
                "gate's user name and the broker's ACL",
                time.time(),
            )
            self._log.error("link_closed_after_connect", sessions=self._short_sessions)

    def _on_closed_before_connack(self) -> None:
        # RabbitMQ 3.x answers an MQTT 5 CONNECT by closing TCP without any CONNACK.
        if self._config.protocol != "auto" or self.protocol != "5" or self._connects > 0:
            return
        self._v5_silent_closes += 1
        if self._v5_silent_closes == _V5_SILENT_CLOSES_TO_FALL_BACK:
            self._last_error = LinkError(
                "protocol",
                f"broker {self._config.host}:{self._config.port} closed the connection without answering an "
                "MQTT 5 CONNECT; retrying with MQTT 3.1.1",
                time.time(),
            )
            self._work.put("fallback", None, urgent=True, force=True)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        self._setup_answered(mid)
        self._acks.put((mid, not reason_code.is_failure, str(reason_code)))
        self._wake.set()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if client is not self._client:
            return
        self._setup_answered(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if client is not self._client:
            return
        # paho's network thread: only size checks and a non-blocking hand-over happen here.
        topic = message.topic
        size = len(message.payload)
        if topic == self.topics.cmd:
            if size > self._config.max_command_bytes:
                self._refuse_command(client, f"command of {size} bytes exceeds link.max_command_bytes")
            elif not self._work.put("cmd", bytes(message.payload), urgent=True):
                self._refuse_command(client, "gate busy: command queue full, send it again")
            return
        prefix = self.topics.root + "/bundle/"
        if topic.startswith(prefix):
            kind = topic[len(prefix) :]
            if kind == "ack" or "/" in kind:
                return
            if size > self._config.max_chunk_message_bytes:
                self._refuse_chunk(
                    client, kind, "too_large", f"chunk message of {size} bytes exceeds link.max_chunk_message_bytes"
                )
            elif not self._work.put("chunk", (kind, bytes(message.payload))):
                self._refuse_chunk(client, kind, "busy", "gate busy: chunk dropped, send it again")

    def _refuse_allowed(self) -> bool:
        # Refusals are answered at most _BUSY_ACKS_PER_S times a second, QoS 0: a flood must not turn into
        # an unbounded queue of answers in paho's memory.
        self._refused += 1
        now = time.monotonic()
        if now - self._busy_ack_at < 1.0 / _BUSY_ACKS_PER_S:
            return False
        self._busy_ack_at = now
        self._log.warning("link_downlink_refused", refused=self._refused, queued=len(self._work))
        return True

    # The refusals publish with the callback's own client, never through `_client_lock`: a protocol fallback
    # holds that lock while it joins this very thread.
    def _refuse_chunk(self, client: mqtt.Client, kind: str, code: str, message: str) -> None:
        if self._refuse_allowed():
            ack = BundleAck(kind=short_text(kind, 32), gate=self._gate, status="rejected", code=code, message=message)
            client.publish(self.topics.bundle_ack, ack.model_dump_json().encode(), qos=0)

    def _refuse_command(self, client: mqtt.Client, message: str) -> None:
        if self._refuse_allowed():
            ack = CmdAck.rejected("", "busy", message).model_copy(update={"gate": self._gate})
            client.publish(self.topics.cmd_ack, ack.model_dump_json().encode(), qos=0)

    # ------------------------------------------------------------------ publishing helpers

    def _publish(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> bool:
        with self._client_lock:
            client = self._client
        if client is None:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)

    def _publish_model(self, topic: str, message: BaseModel) -> None:
        # QoS 1: paho keeps it across a reconnect; acks are answers, not decisions, so not in the outbox.
        self._publish(topic, message.model_dump_json().encode(), qos=1)

    # ------------------------------------------------------------------ forwarder thread

    def _forward_loop(self) -> None:
        inflight: dict[int, int] = {}  # paho mid -> outbox seq
        cursor = 0  # highest seq handed to paho in this client generation
        generation = self._generation
        rewind_to: int | None = None
        paused_until = 0.0
        window = self._config.max_inflight
        refusals = RefusalTracker(
            strikes_to_park=_STRIKES_TO_PARK, retry_s=_PARKED_RETRY_S, retry_max_s=_PARKED_RETRY_MAX_S
        )
        disconnects = self._disconnects
        settled_disconnects = self._settled_disconnects
        last_progress = time.monotonic()  # last PUBACK, or when the window was last empty

        def note_parked(before: int) -> None:
            self._parked_count = refusals.parked_count
            parked = refusals.last_parked
            if refusals.parked_count <= before or parked is None:
                return
            self._publish_refused = LinkError(
                "publish_refused",
                f"broker keeps refusing outbox message seq {parked.seq} ({parked.why}); held back in the "
                f"outbox while other messages flow on, retried from {_PARKED_RETRY_S:.0f} s up to every {_PARKED_RETRY_MAX_S:.0f} s: check the "
                f"broker's topic ACL for {self.topics.root}/#",
                time.time(),
            )
            self._log.error("outbox_publish_parked", seq=parked.seq, reason=parked.why, parked=refusals.parked_count)

        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stopping.is_set():
                break
            if disconnects != self._disconnects:
                disconnects = self._disconnects
                # Only a connection lost after its session settled can have been closed over a message of ours.
                blamable = settled_disconnects != self._settled_disconnects
                settled_disconnects = self._settled_disconnects
                if generation == self._generation and inflight:
                    before = refusals.parked_count
                    if blamable:
                        refusals.connection_lost(inflight.values())
                    note_parked(before)
                    # paho would re-send these right after the next CONNACK, before that session settles
                    # (and a parked one forever): start over with a fresh client; they are re-published
                    # from the outbox once the new session has settled.
                    self._work.put("renew", None, urgent=True, force=True)
            if generation != self._generation:
                # A new paho client lost the old one's in-memory queue: publish again from the oldest.
                generation = self._generation
                inflight.clear()
                cursor = 0
                last_progress = time.monotonic()
            done: list[int] = []
            while True:
                try:
                    mid, ok, reason = self._acks.get_nowait()
                except queue.Empty:
                    break
                seq = inflight.pop(mid, None)
                if seq is None:
                    continue  # a status or ack publish, not from the outbox
                if ok:
                    done.append(seq)
                else:
                    self._log.error("outbox_publish_rejected", seq=seq, reason=reason)
                    self._last_error = LinkError(
                        "refused", f"broker rejected outbox message seq {seq}: {reason}", time.time()
                    )
                    before = refusals.parked_count
                    # 0x87 "Not authorized" is the topic ACL speaking: retrying the same message is pointless.
                    denied = reason == "Not authorized"
                    if not refusals.refused(seq, f"PUBACK {reason}", at_once=denied):
                        rewind_to = seq - 1 if rewind_to is None else min(rewind_to, seq - 1)
                    note_parked(before)
            if done or not inflight or not self._connected.is_set():
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > _PUBACK_TIMEOUT_S:
                self._log.warning("link_puback_timeout", inflight=len(inflight), oldest_seq=min(inflight.values()))
                last_progress = time.monotonic()
                self._work.put("renew", None, urgent=True, force=True)
            if done:
                try:
                    self._acked += self._outbox.ack(done)
                except OutboxError as exc:
                    self._log.error("outbox_ack_failed", error=str(exc))
                if refusals.acked(done):
                    self._parked_count = refusals.parked_count
                    if refusals.parked_count == 0:
                        self._publish_refused = None
            if self._connected.is_set() and refusals.parked_count:
                retry = refusals.due(inflight.values())
                if retry is not None:
                    # Try a parked message again (the ACL may have been fixed); parked anew if refused.
                    self._parked_count = refusals.parked_count
                    rewind_to = retry - 1 if rewind_to is None else min(rewind_to, retry - 1)
            if rewind_to is not None and not inflight:
                cursor, rewind_to = rewind_to, None
                paused_until = time.monotonic() + _REJECTED_PUBLISH_PAUSE_S
            self._inflight_count = len(inflight)
            if self._drain_first:
                if inflight:
                    continue  # paho re-sends these first after the reconnect; keep the order
                self._drain_first = False
            window = refusals.window(self._config.max_inflight)
            if not self._connected.is_set() or len(inflight) >= window or rewind_to is not None:
                continue
            if not self._session_settled():
                continue  # settled wakes us; the 1 s wake-up timeout covers _SETTLE_MAX_S
            if time.monotonic() < paused_until:
                continue  # the 1 s wake-up timeout brings us back
            try:
                items = self._outbox.peek(cursor, window - len(inflight))
            except OutboxError as exc:
                self._log.error("outbox_read_failed", error=str(exc))
                continue
            with self._client_lock:
                client = self._client
            if client is None or generation != self._generation:
                continue
            for item in items:
                if refusals.is_parked(item.seq):
                    cursor = item.seq
                    continue
                info = client.publish(self.topics.for_kind(item.kind), item.body, qos=1)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    break
                # QoS 1 messages stay in paho's queue even when the connection just dropped (NO_CONN).
                inflight[info.mid] = item.seq
                cursor = item.seq
                self._published += 1
            self._inflight_count = len(inflight)
            if items and len(inflight) < window:
                self._wake.set()  # more may be waiting in the outbox

    # ------------------------------------------------------------------ worker thread

    def _work_loop(self) -> None:
        next_expiry = time.monotonic() + _EXPIRE_EVERY_S
        while True:
            item = self._work.get(timeout=_EXPIRE_EVERY_S)
            if time.monotonic() >= next_expiry:
                next_expiry = time.monotonic() + _EXPIRE_EVERY_S
                try:
                    self._assembler.expire()
                except OSError as exc:
                    self._log.error("bundle_expiry_failed", error=str(exc))
            if item is None:
                continue
            task, arg = item
            if task == "stop" or self._stopping.is_set():
                return
            try:
                if task == "chunk":
                    kind, payload = arg
                    self._handle_chunk(kind, payload)
                elif task == "cmd":
                    self._handle_command(arg)
                elif task == "resume":
                    self._report_incomplete()
                elif task == "fallback":
                    self._fallback_to_311()
                elif task == "renew":
                    if self._quick_closes:
                        # A fresh client connects at once: keep the back-off of a broker ending sessions.
                        self._stopping.wait(self._reconnect_delay_s())
                    self._replace_client()
            except Exception as exc:  # one bad message must not kill the downlink
                self._log.error("link_task_failed", task=task, error=type(exc).__name__)

    def _ack(self, result: ChunkResult, status: str, **extra: Any) -> BundleAck:
        return BundleAck(
            transfer_id=result.transfer_id,
            kind=result.kind,
            gate=self._gate,
            status=status,  # type: ignore[arg-type]
            received=result.received,
            count=result.count,
            missing=list(result.missing),
            **extra,
        )

    def _reject(self, kind: str, code: str, message: str, transfer_id: str = "") -> None:
        ack = BundleAck(
            transfer_id=transfer_id,
            kind=short_text(kind, 32),
            gate=self._gate,
            status="rejected",
            code=code,
            message=short_text(message),
        )
        self._publish_model(self.topics.bundle_ack, ack)

    def _handle_chunk(self, kind: str, payload: bytes) -> None:
        try:
            chunk = BundleChunk.model_validate_json(payload)
        except ValidationError as exc:
            # Only where and what kind of error: never the input (it may be a whole chunk of templates).
            first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "<message>"
            self._log.warning("bundle_chunk_invalid", kind=short_text(kind, 32), size=len(payload), field=where)
            self._reject(
                kind, "bad_chunk", f"chunk does not match the BundleChunk v1 schema at {where}: {first['msg']}"
            )
            return
        if chunk.kind != kind:
            self._reject(kind, "bad_chunk", "the chunk's kind differs from its topic", chunk.transfer_id)
            return
        result = self._assembler.add(chunk)
        if result.status == "stored":
            if result.missing:
                # The last chunk arrived with gaps: tell the sender what to resend.
                self._publish_model(self.topics.bundle_ack, self._ack(result, "receiving"))
            return
        if result.status in ("duplicate", "need_first"):
            self._publish_model(self.topics.bundle_ack, self._ack(result, "receiving"))
            return
        if result.status == "already_done":
            assert result.done_ack is not None
            self._publish_model(self.topics.bundle_ack, result.done_ack)
            return
        if result.status == "rejected":
            ack = self._ack(result, "rejected", code=result.code, message=short_text(result.message))
            self._publish_model(self.topics.bundle_ack, ack)
            return
        self._apply_bundle(result)

    def _apply_bundle(self, result: ChunkResult) -> None:
        assert result.data is not None
        handler = self._bundle_handler
        if handler is None:
            self._log.error("bundle_no_handler", transfer_id=result.transfer_id, kind=result.kind)
            ack = self._ack(result, "rejected", code="no_handler", message="this gate has no bundle handler yet")
            self._assembler.mark_done(result.transfer_id, ack)
            self._publish_model(self.topics.bundle_ack, ack)
            return
        try:
            answer = handler(result.kind, result.data)
        except Exception as exc:
            self._log.error(
                "bundle_handler_failed", transfer_id=result.transfer_id, kind=result.kind, error=type(exc).__name__
            )
            ack = self._ack(result, "rejected", code="handler_error", message=short_text(str(exc)))
            self._publish_model(self.topics.bundle_ack, ack)  # not marked done: a resend is tried again
            return
        ack = answer.model_copy(
            update={
                "transfer_id": result.transfer_id,
                "kind": result.kind,
                "gate": self._gate,
                "received": result.count,
                "count": result.count,
                "missing": [],
            }
        )
        self._assembler.mark_done(result.transfer_id, ack)
        self._log.info(
            "bundle_handled", transfer_id=result.transfer_id, kind=result.kind, status=ack.status, code=ack.code
        )
        self._publish_model(self.topics.bundle_ack, ack)

    def _report_incomplete(self) -> None:
        for state in self._assembler.incomplete():
            ack = BundleAck(
                transfer_id=state.transfer_id,
                kind=state.kind,
                gate=self._gate,
                status="receiving",
                received=state.received_count(),
                count=state.count,
                missing=state.missing_ranges(),
            )
            self._log.info(
                "bundle_resume_requested", transfer_id=state.transfer_id, received=ack.received, count=ack.count
            )
            self._publish_model(self.topics.bundle_ack, ack)

    def _handle_command(self, raw: bytes) -> None:
        handler = self._command_handler
        if handler is None:
            ack = CmdAck.rejected("", "no_handler", "this gate has no command handler yet")
        else:
            try:
                ack = handler(raw)
            except Exception as exc:
                self._log.error("command_handler_failed", error=type(exc).__name__)
                ack = CmdAck.rejected("", "handler_error", short_text(str(exc)))
        ack = ack.model_copy(update={"gate": self._gate})
        self._log.info("command_handled", cmd_id=ack.cmd_id, status=ack.status, code=ack.code)
        self._publish_model(self.topics.cmd_ack, ack)
