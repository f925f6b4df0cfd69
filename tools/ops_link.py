"""`egate ops watch|push|cmd`: the central-ops end of the MQTT contract (docs/mqtt.md).

Connection options are shared by the three commands and default from the environment
(`EGATE_OPS_HOST`, `EGATE_OPS_PORT`, `EGATE_OPS_CA`, `EGATE_OPS_CERT`, `EGATE_OPS_KEY`, `EGATE_OPS_USER`,
`EGATE_OPS_PASSWORD_FILE`), so an ops workstation sets them once.
"""

from __future__ import annotations

import base64
import json
import queue
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from edge.topics import site_wildcard, split_topic
from tools.ops_client import OpsClient, OpsError, OpsTls, PushProgress, read_bundle_file

_HOST = typer.Option("localhost", "--host", envvar="EGATE_OPS_HOST", help="Broker host.")
_PORT = typer.Option(8883, "--port", envvar="EGATE_OPS_PORT", help="Broker port.")
_CA = typer.Option(None, "--ca", envvar="EGATE_OPS_CA", help="CA of the broker (PEM); enables TLS.")
_CERT = typer.Option(None, "--cert", envvar="EGATE_OPS_CERT", help="Client certificate (PEM).")
_KEY = typer.Option(None, "--key", envvar="EGATE_OPS_KEY", help="Client private key (PEM).")
_USER = typer.Option(None, "--user", envvar="EGATE_OPS_USER", help="MQTT user name.")
_PWFILE = typer.Option(None, "--password-file", envvar="EGATE_OPS_PASSWORD_FILE", help="File holding the password.")
_PREFIX = typer.Option("egate/v1", "--prefix", help="Topic prefix (link.topic_prefix of the gates).")
_JSON = typer.Option(False, "--json", help="Machine-readable JSON output.")


@dataclass(frozen=True)
class _Conn:
    host: str
    port: int
    ca: Path | None
    cert: Path | None
    key: Path | None
    user: str | None
    password_file: Path | None
    prefix: str

    def client(self, **extra: Any) -> OpsClient:
        tls = OpsTls(self.ca, self.cert, self.key) if self.ca is not None else None
        password = self.password_file.read_text().strip() if self.password_file is not None else None
        return OpsClient(
            self.host, self.port, prefix=self.prefix, tls=tls, username=self.user, password=password, **extra
        )


def _fail(message: str, as_json: bool, code: int = 2) -> None:
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message}))
    else:
        typer.echo(f"egate ops: {message}", err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------- watch


def summarize(rest: str, payload: bytes) -> Any:
    """What `watch` shows of a payload: JSON as is, chunk data and signed commands by size only."""
    if rest == "cmd":
        return {"signed_bytes": len(payload)}
    try:
        value = json.loads(payload)
    except ValueError:
        return {"bytes": len(payload), "base64": base64.b64encode(payload[:64]).decode()}
    if rest.startswith("bundle/") and rest != "bundle/ack" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "data"}
    return value


def _short(rest: str, value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)[:80]
    if rest == "status":
        flights = ",".join(value.get("flights") or []) or "any"
        return f"{value.get('state')} mode={value.get('mode')} gallery={value.get('gallery_version')} flights={flights}"
    if rest in ("outcome", "event"):
        payload = value.get("payload", {})
        kind = payload.get("type") or payload.get("decision") or ""
        if rest == "outcome":  # a decision record, or the passage record of an ACCEPT (same txn)
            kind = f"{payload.get('record', 'decision')} {kind} {payload.get('passage') or ''}".rstrip()
            kind += f" txn={str(payload.get('txn_id'))[:13]}"
        return f"seq={value.get('seq')} {kind} id={str(value.get('id'))[:13]}"
    if rest == "health":
        return f"fps={value.get('fps')} outbox={value.get('outbox_depth')}"
    if rest == "bundle/ack":
        return f"{value.get('status')} {value.get('code') or ''} {value.get('received')}/{value.get('count')}"
    if rest.startswith("bundle/"):
        return f"chunk {value.get('index')}/{value.get('count')} of {value.get('transfer_id')}"
    if rest == "cmd/ack":
        return f"{value.get('cmd_id')} {value.get('status')} {value.get('code') or ''}"
    return json.dumps(value)[:80]


def watch_command(
    site: str = typer.Option(..., "--site", help="Site id whose gates to watch."),
    as_json: bool = _JSON,
    count: int = typer.Option(0, "--count", help="Stop after this many messages (0: run until Ctrl-C)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Stop after this many seconds (0: no limit)."),
    host: str = _HOST,
    port: int = _PORT,
    ca: Path | None = _CA,
    cert: Path | None = _CERT,
    key: Path | None = _KEY,
    user: str | None = _USER,
    password_file: Path | None = _PWFILE,
    prefix: str = _PREFIX,
) -> None:
    """Print outcomes, events, health and status of every gate of a site, live."""
    conn = _Conn(host, port, ca, cert, key, user, password_file, prefix)
    inbox: queue.SimpleQueue[tuple[str, str, str, bool, Any]] = queue.SimpleQueue()
    client = conn.client()
    try:
        client.connect()
        client.subscribe(
            site_wildcard(prefix, site),
            lambda m: _enqueue(inbox, prefix, m.topic, bytes(m.payload), bool(m.retain)),
        )
    except OpsError as exc:
        _fail(str(exc), as_json)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    try:
        if as_json:
            _watch_json(inbox, count, deadline)
        else:
            _watch_table(inbox, count, deadline, site)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _enqueue(inbox: queue.SimpleQueue[Any], prefix: str, topic: str, payload: bytes, retain: bool) -> None:
    parts = split_topic(prefix, topic)
    if parts is None:
        return
    site, gate, rest = parts
    inbox.put((site, gate, rest, retain, summarize(rest, payload)))


def _next(inbox: queue.SimpleQueue[Any], deadline: float | None) -> Any:
    while True:
        wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if wait <= 0:
            return None
        try:
            return inbox.get(timeout=wait)
        except queue.Empty:
            continue


def _watch_json(inbox: queue.SimpleQueue[Any], count: int, deadline: float | None) -> None:
    seen = 0
    while count == 0 or seen < count:
        item = _next(inbox, deadline)
        if item is None:
            return
        site, gate, rest, retain, value = item
        line = {"site": site, "gate": gate, "topic": rest, "retain": retain, "payload": value}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        seen += 1


def _watch_table(inbox: queue.SimpleQueue[Any], count: int, deadline: float | None, site: str) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table

    statuses: dict[str, str] = {}
    rows: list[tuple[str, str, str, str]] = []

    def render() -> Group:
        gates = Table(title=f"gates of {site}")
        for column in ("gate", "status"):
            gates.add_column(column)
        for gate, text in sorted(statuses.items()):
            gates.add_row(gate, text)
        recent = Table(title="latest messages")
        for column in ("time", "gate", "topic", "summary"):
            recent.add_column(column)
        for row in rows[-25:]:
            recent.add_row(*row)
        return Group(gates, recent)

    seen = 0
    with Live(render(), refresh_per_second=4) as live:
        while count == 0 or seen < count:
            item = _next(inbox, deadline)
            if item is None:
                return
            _site, gate, rest, _retain, value = item
            text = _short(rest, value)
            if rest == "status":
                statuses[gate] = text
            rows.append((datetime.now().strftime("%H:%M:%S"), gate, rest, text))
            live.update(render())
            seen += 1


# ---------------------------------------------------------------- push


def push_command(
    file: Path = typer.Argument(..., help="Bundle file (signed envelope, e.g. from the gallery tools)."),
    gate: str = typer.Option(..., "--gate", help="Target gate id."),
    site: str = typer.Option("demo-site", "--site", help="Target site id."),
    kind: str = typer.Option("gallery", "--kind", help="Bundle kind: gallery, config, keys, ..."),
    chunk_bytes: int = typer.Option(256 * 1024, "--chunk-bytes", help="Chunk size (AWS IoT Core: <= 128 KiB)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the gate's final ack."),
    as_json: bool = _JSON,
    host: str = _HOST,
    port: int = _PORT,
    ca: Path | None = _CA,
    cert: Path | None = _CERT,
    key: Path | None = _KEY,
    user: str | None = _USER,
    password_file: Path | None = _PWFILE,
    prefix: str = _PREFIX,
) -> None:
    """Send a bundle to a gate in chunks (resuming over reconnects) and wait for its ack."""
    conn = _Conn(host, port, ca, cert, key, user, password_file, prefix)
    try:
        data = read_bundle_file(file)
        progress = PushProgress()
        with conn.client() as client:
            ack = client.push_bundle(
                site, gate, kind, data, chunk_bytes=chunk_bytes, timeout=timeout, progress=progress
            )
    except (OpsError, ValueError) as exc:
        _fail(str(exc), as_json)
        return
    ok = ack.status == "applied"
    if as_json:
        out = {"ok": ok, "ack": ack.model_dump(mode="json"), "chunks": progress.count, "resent": progress.resent}
        typer.echo(json.dumps(out))
    else:
        verdict = "applied" if ok else f"REJECTED ({ack.code}): {ack.message}"
        typer.echo(f"{site}/{gate}: {kind} bundle {file.name} {verdict} [{progress.count} chunks]")
    raise typer.Exit(0 if ok else 1)


# ---------------------------------------------------------------- cmd


def build_signed_command(
    *,
    site: str,
    gate: str,
    name: str,
    args: dict[str, str],
    key_file: Path,
    key_id: str,
    valid_for_s: float,
    version: int | None = None,
    command_id: str | None = None,
) -> tuple[str, bytes]:
    """Sign a command as a bundle of kind `command` with edge.bundles (the gate verifies it the same way)."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from edge.bundles import BundleScope, CommandPayload, canonical_json, sign_bundle
    except ImportError as exc:  # pragma: no cover - the bundle module is part of egate
        raise OpsError(f"signing needs edge.bundles ({exc}); this egate build has no bundle signer") from None
    key = load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise OpsError(f"{key_file} is not an Ed25519 private key (ops signing keys are Ed25519)")
    cmd_id = command_id or f"cmd-{uuid.uuid4().hex[:16]}"
    payload = CommandPayload(command_id=cmd_id, name=name, args=args)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    raw = sign_bundle(
        kind="command",
        # Versions only go up per kind (rollback guard): milliseconds since the epoch do, across ops hosts.
        version=version if version is not None else int(now.timestamp() * 1000),
        payload=canonical_json(payload.model_dump(mode="json")),
        private_key=key,
        key_id=key_id,
        scope=BundleScope(site=site, gates=(gate,)),
        issued_at=now,
        expires_at=now + timedelta(seconds=valid_for_s),
    )
    return cmd_id, raw


def cmd_command(
    action: str = typer.Argument(..., help="set-mode, set-flights, purge-gallery or request-status."),
    gate: str = typer.Option(..., "--gate", help="Target gate id."),
    site: str = typer.Option("demo-site", "--site", help="Target site id."),
    mode: str | None = typer.Option(None, "--mode", help="For set-mode: open, closed, maintenance, exit, ..."),
    flights: str | None = typer.Option(
        None, "--flights", help="For set-flights: comma-separated flights departing now (LH123,LH124); '' = any."
    ),
    signing_key: Path = typer.Option(..., "--signing-key", help="Ed25519 private key (PEM) of an ops key."),
    key_id: str = typer.Option(..., "--key-id", help="Id of that key in the gates' trust store."),
    valid_for: float = typer.Option(300.0, "--valid-for", help="Seconds until the command expires."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the gate's ack."),
    as_json: bool = _JSON,
    host: str = _HOST,
    port: int = _PORT,
    ca: Path | None = _CA,
    cert: Path | None = _CERT,
    key: Path | None = _KEY,
    user: str | None = _USER,
    password_file: Path | None = _PWFILE,
    prefix: str = _PREFIX,
) -> None:
    """Send a signed command to a gate and wait for its ack."""
    names = {
        "set-mode": "set_mode",
        "set-flights": "set_flights",
        "purge-gallery": "purge_gallery",
        "request-status": "request_status",
    }
    if action not in names:
        _fail(f"unknown action {action!r}: use one of {', '.join(names)}", as_json)
    args: dict[str, str] = {}
    if action == "set-mode":
        if not mode:
            _fail("set-mode needs --mode (open, closed, maintenance, exit, entry, boarding)", as_json)
        args["mode"] = str(mode)
    if action == "set-flights":
        from edge.lane_ops import parse_flights  # the gate's own rule; imported late: `egate --help` stays fast

        if flights is None:
            _fail("set-flights needs --flights (e.g. LH123,LH124; an empty string means any flight)", as_json)
        try:
            args["flights"] = ",".join(parse_flights(str(flights)))
        except ValueError as exc:
            _fail(str(exc), as_json)
    conn = _Conn(host, port, ca, cert, key, user, password_file, prefix)
    try:
        cmd_id, raw = build_signed_command(
            site=site,
            gate=gate,
            name=names[action],
            args=args,
            key_file=signing_key,
            key_id=key_id,
            valid_for_s=valid_for,
        )
        with conn.client() as client:
            ack = client.send_command(site, gate, raw, cmd_id=cmd_id, timeout=timeout)
    except (OpsError, OSError, ValueError) as exc:
        _fail(str(exc), as_json)
        return
    ok = ack.status == "done"
    if as_json:
        typer.echo(json.dumps({"ok": ok, "cmd_id": cmd_id, "ack": ack.model_dump(mode="json")}))
    else:
        verdict = "done" if ok else f"REJECTED ({ack.code}): {ack.message}"
        typer.echo(f"{site}/{gate}: {action} {cmd_id} {verdict}")
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    """Add `watch`, `push` and `cmd` to the `ops` group."""
    app.command("watch")(watch_command)
    app.command("push")(push_command)
    app.command("cmd")(cmd_command)
