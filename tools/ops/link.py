"""`egate ops watch|push|cmd`: the central-ops end of the MQTT contract (docs/mqtt.md).

Connection options are defined here once, shared by every ops command that talks to the broker
(watch, push, cmd, collect, rollout), and default from the environment (`EGATE_OPS_HOST`,
`EGATE_OPS_PORT`, `EGATE_OPS_CA`, `EGATE_OPS_CERT`, `EGATE_OPS_KEY`, `EGATE_OPS_USER`,
`EGATE_OPS_PASSWORD_FILE`, `EGATE_OPS_PROTOCOL`, `EGATE_OPS_NODES`), so an ops workstation sets them once.
"""

from __future__ import annotations

import base64
import json
import queue
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import typer

from egate.edge.uplink.topics import site_wildcard, split_topic
from egate.tools.ops.broker_options import BrokerConn, broker_options
from egate.tools.ops.client import OpsClient, OpsError, PushProgress, read_bundle_file
from egate.tools.ops.precheck import PrecheckError

_JSON = typer.Option(False, "--json", help="Machine-readable JSON output.")


def _fail(message: str, as_json: bool, code: int = 2, hint: str = "") -> None:
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message, "hint": hint}))
    else:
        typer.echo(f"error: {message}" + (f"\nfix: {hint}" if hint else ""), err=True)
    raise typer.Exit(code)


def _fail_ops(exc: OpsError | PrecheckError, as_json: bool, code: int = 2) -> None:
    if isinstance(exc, PrecheckError):
        _fail(exc.error, as_json, code, exc.hint)
    _fail(str(exc), as_json, code, exc.hint)


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


def _outcome_text(record: dict[str, Any]) -> str:
    """An outcome as ops reads it: decision, reasons, best score against its threshold."""
    decision = str(record.get("decision", "?")).upper()
    reasons = ",".join(str(r) for r in record.get("reasons") or [])
    comps = [c for c in record.get("comparisons") or [] if isinstance(c, dict)]
    score = ""
    if comps and isinstance(comps[0].get("score"), int | float) and isinstance(comps[0].get("threshold"), int | float):
        best = comps[0]
        op = (
            ("<=" if best.get("passed") else ">")
            if not best.get("higher_is_better")
            else (">=" if best.get("passed") else "<")
        )
        score = f" score {best['score']:.3f} {op} {best['threshold']:.3f}"
    return f"{decision} {reasons}{score}".strip()


def _short(rest: str, value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)[:80]
    if rest == "status":
        when = _local_time(value.get("ts"))
        flights = ",".join(value.get("flights") or []) or "any"
        return (
            f"{value.get('state')} since {when}, mode {value.get('mode')}, gallery {value.get('gallery_version')}, "
            f"flights {flights}"
        )
    if rest == "outcome":
        payload = value.get("payload", {})
        if not isinstance(payload, dict):
            return f"seq {value.get('seq')} {payload}"
        # A decision record, or the passage record of an ACCEPT (the same txn).
        record = str(payload.get("record", "decision"))
        passage = f" {payload.get('passage')}" if payload.get("passage") else ""
        return f"seq {value.get('seq')} {record}{passage} txn {str(payload.get('txn_id'))[:13]} " + _outcome_text(
            payload
        )
    if rest == "event":
        payload = value.get("payload", {})
        if isinstance(payload, dict):
            return f"seq {value.get('seq')} {payload.get('severity', '')} {payload.get('type', '')}: " + str(
                payload.get("message", "")
            )
        return f"seq {value.get('seq')} {payload}"
    if rest == "health":
        return f"{value.get('fps')} fps, outbox {value.get('outbox_depth')} queued"
    if rest == "bundle/ack":
        return f"{value.get('status')} {value.get('code') or ''} {value.get('received')}/{value.get('count')}"
    if rest.startswith("bundle/"):
        return f"chunk {value.get('index')}/{value.get('count')} of {value.get('transfer_id')}"
    if rest == "cmd/ack":
        return f"{value.get('cmd_id')} {value.get('status')} {value.get('code') or ''}"
    return json.dumps(value)[:80]


def _local_time(ts: Any) -> str:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return "?"


@broker_options
def watch_command(
    site: str = typer.Option(..., "--site", help="Site id whose gates to watch."),
    as_json: bool = _JSON,
    health: bool = typer.Option(False, "--health", help="Also show the gates' periodic health samples."),
    count: int = typer.Option(0, "--count", help="Stop after this many messages (0: run until Ctrl-C)."),
    timeout: float = typer.Option(0.0, "--timeout", help="Stop after this many seconds (0: no limit)."),
    *,
    conn: BrokerConn,
) -> None:
    """Print outcomes (decision, reasons, score), events and status of every gate of a site, live.

    On a terminal a live table; piped, one line per message, flushed at once. Says when the broker
    connection is lost and when it is back.
    """
    inbox: queue.SimpleQueue[tuple[str, str, str, bool, Any]] = queue.SimpleQueue()

    def on_message(m: Any) -> None:
        _enqueue(inbox, conn.prefix, m.topic, bytes(m.payload), bool(m.retain), health)

    try:
        client = conn.client()
        client.connect()
        client.subscribe(site_wildcard(conn.prefix, site), on_message)
    except OpsError as exc:
        _fail_ops(exc, as_json)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    link = _BrokerWatch(client)
    try:
        if as_json:
            _watch_stream(inbox, count, deadline, link, _json_line)
        elif sys.stdout.isatty():
            _watch_table(inbox, count, deadline, site, link)
        else:
            _watch_stream(inbox, count, deadline, link, _plain_line)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


class _BrokerWatch:
    """Turns the client's connection state into messages when it changes (lost / back)."""

    def __init__(self, client: OpsClient) -> None:
        self.client = client
        self.up = True

    def change(self) -> tuple[str, str, str, bool, Any] | None:
        now = self.client.connected
        if now == self.up:
            return None
        self.up = now
        where = f"{self.client.host}:{self.client.port}"  # on a cluster: the node now in use
        text = (
            f"broker {where} connection back at {datetime.now():%H:%M:%S}"
            if now
            else f"broker {where} connection LOST at {datetime.now():%H:%M:%S}; reconnecting"
        )
        return ("", "", "broker", False, {"connected": now, "message": text})


def _enqueue(
    inbox: queue.SimpleQueue[Any], prefix: str, topic: str, payload: bytes, retain: bool, health: bool = True
) -> None:
    parts = split_topic(prefix, topic)
    if parts is None:
        return
    site, gate, rest = parts
    if rest == "health" and not health:
        return  # periodic samples would bury outcomes and events
    inbox.put((site, gate, rest, retain, summarize(rest, payload)))


def _next(inbox: queue.SimpleQueue[Any], deadline: float | None, link: _BrokerWatch | None = None) -> Any:
    while True:
        if link is not None:
            changed = link.change()
            if changed is not None:
                return changed
        wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if wait <= 0:
            return None
        try:
            return inbox.get(timeout=wait)
        except queue.Empty:
            continue


def _json_line(item: tuple[str, str, str, bool, Any]) -> str:
    site, gate, rest, retain, value = item
    if rest == "broker":
        return json.dumps({"broker": value})
    return json.dumps({"site": site, "gate": gate, "topic": rest, "retain": retain, "payload": value})


def _plain_line(item: tuple[str, str, str, bool, Any]) -> str:
    _site, gate, rest, _retain, value = item
    if rest == "broker":
        return str(value["message"])
    return f"{datetime.now():%H:%M:%S} {gate} {rest}: {_short(rest, value)}"


def _watch_stream(
    inbox: queue.SimpleQueue[Any],
    count: int,
    deadline: float | None,
    link: _BrokerWatch,
    line: Callable[[tuple[str, str, str, bool, Any]], str],
) -> None:
    """Piped output: one line per message, flushed (a `| tee` or `| grep` sees it at once). A broker
    connection change is a line too, but does not count towards `count`."""
    seen = 0
    while count == 0 or seen < count:
        item = _next(inbox, deadline, link)
        if item is None:
            return
        sys.stdout.write(line(item) + "\n")
        sys.stdout.flush()
        if item[2] != "broker":
            seen += 1


def _watch_table(
    inbox: queue.SimpleQueue[Any], count: int, deadline: float | None, site: str, link: _BrokerWatch
) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    statuses: dict[str, str] = {}
    rows: list[tuple[str, str, str, str]] = []
    broker_note = ""

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
        parts: list[Any] = [gates, recent]
        if broker_note:
            parts.insert(0, Text(broker_note, style="bold red" if "LOST" in broker_note else "green"))
        return Group(*parts)

    seen = 0
    with Live(render(), refresh_per_second=4) as live:
        while count == 0 or seen < count:
            item = _next(inbox, deadline, link)
            if item is None:
                return
            _site, gate, rest, _retain, value = item
            if rest == "broker":
                broker_note = value["message"]
                live.update(render())
                continue
            text = _short(rest, value)
            if rest == "status":
                statuses[gate] = text
            rows.append((datetime.now().strftime("%H:%M:%S"), gate, rest, text))
            live.update(render())
            seen += 1


# ---------------------------------------------------------------- push


def bundle_header_of(file: Path) -> Any:
    """The signed header of a bundle file (its kind, version, scope, key id), or OpsError saying why not."""
    from egate.edge.trust.bundles import BundleRejected, parse_header, split_envelope

    data = read_bundle_file(file)
    try:
        return data, parse_header(split_envelope(data).header_bytes)
    except BundleRejected as exc:
        raise OpsError(
            f"{file} is not a signed egate bundle ({exc})",
            "push a file made by egate ops gallery build, ops config build or ops keys bundle",
        ) from None


class _Progress:
    """A progress line on stderr for work that takes more than a second (not with --json, not in a pipe)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.began = time.monotonic()
        self._shown = False

    def say(self, text: str) -> None:
        if not self.enabled or time.monotonic() - self.began < 1.0:
            return
        sys.stderr.write(f"\r{text} ({time.monotonic() - self.began:.0f} s)\033[K")
        sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@broker_options
def push_command(
    file: Path = typer.Argument(..., help="Signed bundle file (gallery, config or keys bundle)."),
    gate: str = typer.Option(..., "--gate", help="Target gate id."),
    site: str = typer.Option(..., "--site", help="Target site id."),
    kind: str | None = typer.Option(
        None, "--kind", help="Expected bundle kind; read from the file (a mismatch is refused)."
    ),
    chunk_bytes: int = typer.Option(
        256 * 1024, "--chunk-bytes", help="Chunk size in bytes (AWS IoT Core: <= 90 KiB, base64 in JSON)."
    ),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for the gate's final ack."),
    as_json: bool = _JSON,
    *,
    conn: BrokerConn,
) -> None:
    """Send a bundle to a gate in chunks (resuming over reconnects) and wait for its ack.

    Checks first that the file is a signed bundle and that the gate is online (its retained status):
    an unknown, offline or stopped gate fails at once with the reason. Exit 0 applied, 1 rejected.
    """
    shown = _Progress(not as_json)
    try:
        data, header = bundle_header_of(file)
        if kind is not None and kind != header.kind:
            raise OpsError(
                f"{file.name} is a {header.kind} bundle, not {kind}", "drop --kind: it is read from the file"
            )
        progress = PushProgress()
        with conn.client() as client:
            conn.require_online(client, site, gate)

            def before_send(index: int) -> None:
                shown.say(f"sending chunk {index + 1}/{progress.count} of {file.name} to {site}/{gate}")

            ack = client.push_bundle(
                site,
                gate,
                header.kind,
                data,
                chunk_bytes=chunk_bytes,
                timeout=timeout,
                progress=progress,
                before_send=before_send,
            )
    except (OpsError, PrecheckError) as exc:
        shown.done()
        _fail_ops(exc, as_json)
        return
    shown.done()
    ok = ack.status == "applied"
    if as_json:
        out = {
            "ok": ok,
            "kind": header.kind,
            "ack": ack.model_dump(mode="json"),
            "chunks": progress.count,
            "resent": progress.resent,
        }
        typer.echo(json.dumps(out))
    else:
        verdict = "applied" if ok else f"REJECTED ({ack.code}): {ack.message}"
        typer.echo(f"{site}/{gate}: {header.kind} bundle {file.name} {verdict} [{progress.count} chunks]")
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
    """Sign a command as a bundle of kind `command` with egate.edge.trust.bundles (the gate verifies it the same way)."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from egate.edge.trust.bundles import BundleScope, CommandPayload, canonical_json, sign_bundle
    except ImportError as exc:  # pragma: no cover - the bundle module is part of egate
        raise OpsError(
            f"signing needs egate.edge.trust.bundles ({exc}); this egate build has no bundle signer"
        ) from None
    key = load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise OpsError(f"{key_file} is not an Ed25519 private key (ops signing keys are Ed25519)")
    cmd_id = command_id or f"cmd-{uuid.uuid4().hex[:16]}"
    payload = CommandPayload(command_id=cmd_id, name=name, args=args)  # type: ignore[arg-type]
    now = datetime.now(timezone.utc)
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


SET_MODES = ("exit", "entry", "boarding", "maintenance", "closed", "open")


@broker_options
def cmd_command(
    action: str = typer.Argument(..., help="set-mode, set-flights, purge-gallery or request-status."),
    gate: str = typer.Option(..., "--gate", help="Target gate id."),
    site: str = typer.Option(..., "--site", help="Target site id."),
    mode: str | None = typer.Option(None, "--mode", help=f"For set-mode: {', '.join(SET_MODES)}."),
    flights: str | None = typer.Option(
        None, "--flights", help="For set-flights: comma-separated flights departing now (LH123,LH124); '' = any."
    ),
    signing_key: Path = typer.Option(..., "--signing-key", help="Ops signing key (Ed25519 private PEM)."),
    key_id: str | None = typer.Option(
        None, "--key-id", help="Key id; read from --signing-key itself (a different one is refused)."
    ),
    valid_for: float = typer.Option(300.0, "--valid-for", help="Seconds until the command expires."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the gate's ack."),
    as_json: bool = _JSON,
    *,
    conn: BrokerConn,
) -> None:
    """Send a signed command to a gate and wait for its ack (exit 0 done, 1 refused by the gate).

    Arguments are checked before anything is signed, and the gate's status before anything is sent.
    """
    names = {
        "set-mode": "set_mode",
        "set-flights": "set_flights",
        "purge-gallery": "purge_gallery",
        "request-status": "request_status",
    }
    if action not in names:
        _fail(f"unknown action {action!r}", as_json, hint=f"use one of {', '.join(names)}")
    args: dict[str, str] = {}
    if action == "set-mode":
        if not mode:
            _fail("set-mode needs --mode", as_json, hint=f"--mode is one of {', '.join(SET_MODES)}")
        if str(mode).lower() not in SET_MODES:
            _fail(f"--mode {mode!r} is not a mode the gate knows", as_json, hint=f"use one of {', '.join(SET_MODES)}")
        args["mode"] = str(mode).lower()
    elif mode:
        _fail(f"--mode does not apply to {action}", as_json, hint="drop --mode")
    if action == "set-flights":
        from egate.edge.lane.ops import parse_flights  # the gate's own rule; imported late: `egate --help` stays fast

        if flights is None:
            _fail("set-flights needs --flights", as_json, hint="e.g. --flights LH123,LH124; an empty string means any")
        try:
            args["flights"] = ",".join(parse_flights(str(flights)))
        except ValueError as exc:
            _fail(str(exc), as_json)
    elif flights is not None:
        _fail(f"--flights does not apply to {action}", as_json, hint="drop --flights")
    from egate.tools.ops.keys import signing_key_id

    try:
        actual_id = signing_key_id(signing_key)
    except OpsError as exc:
        _fail_ops(exc, as_json)
        return
    if key_id is not None and key_id != actual_id:
        _fail(
            f"--key-id {key_id} does not belong to {signing_key} (its id is {actual_id})",
            as_json,
            hint="drop --key-id: it is read from the key",
        )
    try:
        cmd_id, raw = build_signed_command(
            site=site,
            gate=gate,
            name=names[action],
            args=args,
            key_file=signing_key,
            key_id=actual_id,
            valid_for_s=valid_for,
        )
        with conn.client() as client:
            conn.require_online(client, site, gate)
            ack = client.send_command(site, gate, raw, cmd_id=cmd_id, timeout=timeout)
    except (OpsError, PrecheckError) as exc:
        _fail_ops(exc, as_json)
        return
    except (OSError, ValueError) as exc:
        _fail(str(exc), as_json)
        return
    ok = ack.status == "done"
    if as_json:
        typer.echo(json.dumps({"ok": ok, "cmd_id": cmd_id, "ack": ack.model_dump(mode="json")}))
    else:
        verdict = "done" if ok else f"REFUSED by the gate ({ack.code}): {ack.message}"
        typer.echo(f"{site}/{gate}: {action} {cmd_id} {verdict}")
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    """Add `watch`, `push` and `cmd` to the `ops` group."""
    app.command("watch")(watch_command)
    app.command("push")(push_command)
    app.command("cmd")(cmd_command)
