"""The broker connection options every ops command that talks to gates takes (`--host` ... `--prefix`).

Declared once: `@broker_options` adds them to a command's parameters and hands the command one
`BrokerConn` (its `conn` parameter) instead of eight loose values.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from egate.tools.ops.client import OpsClient, OpsError, OpsTls

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS: dict[str, tuple[Any, Any]] = {
    "host": (str, typer.Option("localhost", "--host", envvar="EGATE_OPS_HOST", help="Broker host.")),
    "port": (
        int,
        typer.Option(
            8883, "--port", envvar="EGATE_OPS_PORT", help="Broker port: 8883 is MQTT over TLS (give --ca), 1883 plain."
        ),
    ),
    "ca": (
        Path | None,
        typer.Option(None, "--ca", envvar="EGATE_OPS_CA", help="CA of the broker (PEM); enables TLS (port 8883)."),
    ),
    "cert": (Path | None, typer.Option(None, "--cert", envvar="EGATE_OPS_CERT", help="TLS client certificate (PEM).")),
    "key": (Path | None, typer.Option(None, "--tls-key", envvar="EGATE_OPS_KEY", help="TLS client private key (PEM).")),
    "user": (str | None, typer.Option(None, "--user", envvar="EGATE_OPS_USER", help="MQTT user name.")),
    "password_file": (
        Path | None,
        typer.Option(None, "--password-file", envvar="EGATE_OPS_PASSWORD_FILE", help="File holding the password."),
    ),
    "prefix": (str, typer.Option("egate/v1", "--prefix", help="Topic prefix (link.topic_prefix of the gates).")),
    "protocol": (
        str,
        typer.Option(
            "5",
            "--protocol",
            envvar="EGATE_OPS_PROTOCOL",
            help="MQTT version: 5, or 3.1.1 (RabbitMQ 3.x, older brokers).",
        ),
    ),
    "nodes": (
        list[str] | None,
        typer.Option(
            None, "--node", envvar="EGATE_OPS_NODES", help="Further broker cluster nodes as host:port (repeatable)."
        ),
    ),
}
PROTOCOLS = ("5", "3.1.1")


def parse_nodes(nodes: list[str] | None) -> tuple[tuple[str, int], ...]:
    """`--node host:port` values (each may also list several, comma-separated)."""
    out = []
    for node in nodes or []:
        for part in node.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise typer.BadParameter(f"{part!r}: use host:port", param_hint="--node")
            out.append((host, int(port)))
    return tuple(out)


@dataclass(frozen=True)
class BrokerConn:
    """Where the broker is and how to log in: what the options said, turned into clients on demand."""

    host: str
    port: int
    ca: Path | None
    cert: Path | None
    key: Path | None
    user: str | None
    password_file: Path | None
    prefix: str
    protocol: str = "5"
    nodes: tuple[tuple[str, int], ...] = ()  # further cluster nodes, tried in turn

    @classmethod
    def of(cls, **options: Any) -> BrokerConn:
        """From the shared CLI options (checks --protocol and --node)."""
        if options["protocol"] not in PROTOCOLS:
            raise typer.BadParameter(f"{options['protocol']!r}: use 5 or 3.1.1", param_hint="--protocol")
        return cls(**{**options, "nodes": parse_nodes(options["nodes"])})

    def client(self, **extra: Any) -> OpsClient:
        """A client of the first node (the others as fallbacks); `extra` goes to OpsClient."""
        return self.client_at(self.host, self.port, fallback_hosts=list(self.nodes), **extra)

    def client_at(self, host: str, port: int, **extra: Any) -> OpsClient:
        if port == 8883 and self.ca is None:
            raise OpsError(
                "port 8883 is MQTT over TLS but no --ca was given (the connection would wait in vain)",
                "give the broker's CA with --ca (or EGATE_OPS_CA), or --port 1883 for a plain lab broker",
            )
        tls = OpsTls(self.ca, self.cert, self.key) if self.ca is not None else None
        password = self.password_file.read_text().strip() if self.password_file is not None else None
        options: dict[str, Any] = {"protocol": self.protocol, "check_reach": True, **extra}
        return OpsClient(host, port, prefix=self.prefix, tls=tls, username=self.user, password=password, **options)

    def require_online(self, client: OpsClient, site: str, gate: str) -> None:
        """The gate's retained status must say online. On a cluster every node is asked (RabbitMQ keeps a
        retained message on the node it was published to) and the newest status counts."""
        from egate.tools.ops.precheck import require_online

        others: list[OpsClient] = []
        for host, port in [(self.host, self.port), *self.nodes]:
            if (host, port) == (client.host, client.port):
                continue
            try:
                probe = self.client_at(host, port)
                probe.connect(timeout=10)
            except OpsError:
                continue  # a node that is down holds nothing we could read
            others.append(probe)
        try:
            require_online(client, site, gate, also=others)
        finally:
            for probe in others:
                probe.close()


def broker_options(command: F) -> F:
    """Give `command` the broker options after its own; it receives them as `conn: BrokerConn`."""
    own = inspect.signature(command, eval_str=True)
    params = [p for name, p in own.parameters.items() if name != "conn"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in _OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_conn(*args: Any, **kwargs: Any) -> Any:
        conn = BrokerConn.of(**{name: kwargs.pop(name) for name in _OPTIONS})
        return command(*args, conn=conn, **kwargs)

    with_conn.__signature__ = own.replace(parameters=params + added)  # type: ignore[attr-defined]
    with_conn.__annotations__ = {p.name: p.annotation for p in params + added}
    return with_conn  # type: ignore[return-value]
