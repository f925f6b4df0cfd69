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
}


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

    def client(self, **extra: Any) -> OpsClient:
        if self.port == 8883 and self.ca is None:
            raise OpsError(
                "port 8883 is MQTT over TLS but no --ca was given (the connection would wait in vain)",
                "give the broker's CA with --ca (or EGATE_OPS_CA), or --port 1883 for a plain lab broker",
            )
        tls = OpsTls(self.ca, self.cert, self.key) if self.ca is not None else None
        password = self.password_file.read_text().strip() if self.password_file is not None else None
        return OpsClient(
            self.host,
            self.port,
            prefix=self.prefix,
            tls=tls,
            username=self.user,
            password=password,
            check_reach=True,
            **extra,
        )


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
        conn = BrokerConn(**{name: kwargs.pop(name) for name in _OPTIONS})
        return command(*args, conn=conn, **kwargs)

    with_conn.__signature__ = own.replace(parameters=params + added)  # type: ignore[attr-defined]
    with_conn.__annotations__ = {p.name: p.annotation for p in params + added}
    return with_conn  # type: ignore[return-value]
