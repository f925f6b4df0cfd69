"""Checks the ops tools make before they send anything: is the broker there, and is the gate?

A push to a gate that never reported, or that is offline, would otherwise wait in silence for an ack
that cannot come. The gate's retained `.../status` (docs/mqtt.md) answers at once: `online`, `offline`
(the broker's last will) or `stopped` (a clean exit); no retained status means no gate of that id has
ever connected to this broker.
"""

from __future__ import annotations

import errno
import json
import queue
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from egate.tools.ops.client import OpsClient

REACH_TIMEOUT_S = 5.0
STATUS_WAIT_S = 3.0  # retained messages arrive right after SUBACK; this covers a slow broker


class PrecheckError(RuntimeError):
    """A reason not to send, with the fix."""

    def __init__(self, error: str, hint: str) -> None:
        super().__init__(error)
        self.error = error
        self.hint = hint


def reach_broker(host: str, port: int, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Resolve and open TCP to the broker, telling DNS failure, refusal and silence apart."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PrecheckError(
            f"cannot resolve the broker host {host!r}: {exc.strerror}",
            "check the name in --host (or EGATE_OPS_HOST) and this machine's DNS",
        ) from None
    family, kind, proto, _name, address = addresses[0]
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout_s)
            sock.connect(address)
    except ConnectionRefusedError:
        raise PrecheckError(
            f"broker {host}:{port} refused the connection: nothing listens on port {port}",
            "start the broker, or fix --port (or EGATE_OPS_PORT); 8883 is MQTT over TLS, 1883 plain",
        ) from None
    except TimeoutError:
        raise PrecheckError(
            f"broker {host}:{port} unreachable: no answer within {timeout_s:.0f} s",
            "check the network path and firewall to the broker (routing, VPN, port filtered)",
        ) from None
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            raise PrecheckError(
                f"broker {host}:{port} unreachable: {exc.strerror}",
                "check the network path to the broker (routing, VPN)",
            ) from None
        raise PrecheckError(f"cannot reach broker {host}:{port}: {exc.strerror}", "check --host and --port") from None


@dataclass(frozen=True)
class GatePresence:
    state: str  # online, offline, stopped
    since: datetime | None
    mode: str | None
    raw: dict[str, Any]


def _local(ts: datetime | None) -> str:
    return "an unknown time" if ts is None else ts.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def gate_presence(client: OpsClient, site: str, gate: str, wait_s: float = STATUS_WAIT_S) -> GatePresence | None:
    """The gate's retained status, or None when no gate of that id ever reported to this broker."""
    got: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    client.subscribe(client.topics(site, gate).status, lambda message: got.put(bytes(message.payload)), retained=True)
    try:
        payload = got.get(timeout=wait_s)
    except queue.Empty:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        data = {}
    ts = None
    if isinstance(data.get("ts"), str):
        try:
            ts = datetime.fromisoformat(data["ts"].replace("Z", "+00:00"))
        except ValueError:
            ts = None
    return GatePresence(str(data.get("state", "?")), ts, data.get("mode"), data)


def known_gates(client: OpsClient, site: str, wait_s: float = 1.0) -> list[str]:
    """Gate ids of `site` with a retained status on this broker (to suggest the right one)."""
    got: queue.SimpleQueue[str] = queue.SimpleQueue()
    topic = f"{client.prefix}/{site}/+/status"

    def on_message(message: Any) -> None:
        parts = str(message.topic).split("/")
        if len(parts) >= 2:
            got.put(parts[-2])

    client.subscribe(topic, on_message, retained=True)
    found: set[str] = set()
    try:
        while True:
            found.add(got.get(timeout=wait_s))
    except queue.Empty:
        return sorted(found)


def _newest(presences: list[GatePresence]) -> GatePresence | None:
    if not presences:
        return None
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return max(presences, key=lambda p: p.since if p.since is not None and p.since.tzinfo else epoch)


def require_online(client: OpsClient, site: str, gate: str, *, also: Sequence[OpsClient] = ()) -> GatePresence:
    """The gate's presence when it is online; otherwise PrecheckError saying what is wrong.

    `also`: clients connected to the other nodes of a broker cluster whose retained messages stay on the
    node they were published to (RabbitMQ): every node is asked and the newest status counts."""
    found = [p for p in (gate_presence(c, site, gate) for c in (client, *also)) if p is not None]
    presence = _newest(found)
    if presence is None:
        others = sorted({g for c in (client, *also) for g in known_gates(c, site)})
        listed = (
            f"gates of site {site} on this broker: {', '.join(others)}"
            if others
            else (f"no gate of site {site!r} has reported to this broker")
        )
        raise PrecheckError(
            f"unknown gate {site}/{gate}: it has never reported to {client.host}:{client.port}"
            + (f" nor to the {len(also)} other cluster node(s)" if also else ""),
            f"check --gate and --site ({listed})",
        )
    if presence.state == "offline":
        raise PrecheckError(
            f"gate {site}/{gate} is offline (its link dropped; last connected at {_local(presence.since)})",
            "the gate's broker connection is down: on the gate run egate diag mqtt; the push can be retried "
            "once egate ops watch shows it online",
        )
    if presence.state == "stopped":
        raise PrecheckError(
            f"gate {site}/{gate} is stopped (its daemon exited cleanly at {_local(presence.since)})",
            "start the daemon on the gate (systemctl start egate), then retry",
        )
    return presence
