"""`egate diag ...`: field technician tools. Every command says what is wrong and what to do next.

When the daemon runs, commands go through its control socket (it owns the camera, reader and serial
port); when it does not, they open the devices themselves. `--json` on every command; rich tables for
people, colour only on a terminal. Errors exit 1 with the error and a one-line hint.

Registered into the `diag` group by tools/cli.py (`egate.tools.diag.commands`); `diag engines` and `diag reader` come
from tools/diag/engines.py and tools/diag_reader.py.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from egate.drivers.compat import StrEnum
from egate.tools.cli import DEFAULT_CONFIG

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from egate.edge.lane.replies import GateCycleReply, GateLockReply, GateOpenReply, GateStatusReply
    from egate.edge.service.control_socket import ControlClient
    from egate.edge.settings import Settings
    from egate.tools.diag.selftest_checks import CheckResult

_CONFIG_HELP = "TOML config file (default $EGATE_CONFIG or /etc/egate/egate.toml, like `egate run`)."
_JSON_HELP = "Print the result as JSON."
_CONFIG = typer.Option(DEFAULT_CONFIG, "--config", "-c", help=_CONFIG_HELP)
_JSON = typer.Option(False, "--json", help=_JSON_HELP)
_VERDICT_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}
_SINCE = re.compile(r"^(\d+)\s*(s|m|h|d)$")


class DiagFailure(Exception):
    def __init__(self, error: str, hint: str = "", code: int = 1) -> None:
        super().__init__(error)
        self.error = error
        self.hint = hint
        self.code = code


# ------------------------------------------------------------------------------------------ plumbing


def console() -> Console:
    from rich.console import Console

    # rich turns colour off by itself when stdout is not a terminal (and honours NO_COLOR).
    # Piped output (a ticket, a file) is not cut to 80 columns.
    width = None if sys.stdout.isatty() else 160
    return Console(highlight=False, soft_wrap=False, width=width)


class _Stderr:
    """Writes to whatever sys.stderr is at the time (a test runner swaps and closes it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def quiet_logs() -> None:
    """Library logs (camera, outbox, turnstile opened locally) go to stderr at warning level, so stdout
    carries only the command's table or JSON. The previous logging setup is restored when the command
    ends (the commands also run inside other programs: tests, end-to-end runners)."""
    import logging

    import click
    import structlog

    from egate.edge.service.logs import configure_logging

    saved = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(level="warning", fmt="console", stream=_Stderr())  # type: ignore[arg-type]

    def restore() -> None:
        structlog.configure(**saved)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(restore)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str))


def fail(exc: DiagFailure, as_json: bool) -> NoReturn:
    if as_json:
        emit_json({"ok": False, "error": exc.error, "hint": exc.hint})
    else:
        err = console()
        err.print(f"[bold red]error:[/] {exc.error}", markup=True)
        if exc.hint:
            err.print(f"[yellow]fix:[/] {exc.hint}", markup=True)
    raise typer.Exit(exc.code)


@contextmanager
def reported(as_json: bool) -> Iterator[None]:
    """Turn control/diag errors into the uniform error output and exit code 1."""
    from egate.edge.service.control_socket import ControlError, ControlRefused

    try:
        yield
    except DiagFailure as exc:
        fail(exc, as_json)
    except ControlRefused as exc:
        fail(DiagFailure(exc.error, exc.hint), as_json)
    except ControlError as exc:
        fail(DiagFailure(exc.error, exc.hint), as_json)


def load(config: Path) -> Settings:
    from egate.edge.settings import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        raise DiagFailure(
            f"config {config} is invalid: {exc.issues[0]}", f"fix it, then check with: egate config check {config}", 2
        ) from None


def client_for(settings: Settings, timeout_s: float = 15.0) -> ControlClient:
    from egate.edge.service.control_socket import ControlClient

    return ControlClient(settings.control.socket_path, timeout_s=timeout_s)


def daemon_or_none(settings: Settings, timeout_s: float = 15.0) -> ControlClient | None:
    """A client when the daemon answers; None when it is not running (permission problems raise)."""
    from egate.edge.service.control_socket import DaemonNotRunning

    client = client_for(settings, timeout_s)
    try:
        client.ping()
    except DaemonNotRunning:
        return None
    return client


def human_value(key: str, value: Any) -> str:
    """One value for people: yes/no, local times, units from the key's suffix, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_at") and isinstance(value, int | float) and value > 1e9:
        from datetime import datetime

        return datetime.fromtimestamp(value).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    if key.endswith("_at") and isinstance(value, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        except ValueError:
            return value
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_bytes", "bytes")):
        if key.endswith(suffix) and isinstance(value, int | float):
            return f"{value:g} {unit}"
    if isinstance(value, list):
        return ", ".join(human_value(key, v) for v in value) or "-"
    return str(value)


def flat_rows(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as `parent child` rows (no JSON blobs in a table for people)."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flat_rows(value, f"{name} ") if value else [(name, "-")]
        else:
            rows.append((name.replace("_", " "), human_value(str(key), value)))
    return rows


def _for_people(reply: dict[str, Any]) -> dict[str, Any]:
    """A reply for a table: without its version field (the JSON output keeps it)."""
    return {k: v for k, v in reply.items() if k != "v"}


def kv_table(title: str, data: dict[str, Any]) -> RenderableType:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in flat_rows(data):
        table.add_row(key, value)
    return table


# ------------------------------------------------------------------------------------------ selftest


def checks_table(results: list[CheckResult], mode: str) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    where = {"daemon": "through the daemon", "denied": "daemon not reachable"}.get(mode, "devices opened locally")
    table = Table(title=f"egate self-test ({where})")
    table.add_column("check", style="bold")
    table.add_column("verdict")
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for r in results:
        table.add_row(r.name, Text(r.verdict, style=_VERDICT_STYLE[r.verdict]), r.detail, r.hint)
    return table


def selftest(
    config: Path = _CONFIG,
    as_json: bool = _JSON,
    golden: Path | None = typer.Option(None, "--golden", help="Image/GIF with one face for the engine check."),
    local: bool = typer.Option(
        False, "--local", help="Open the devices here instead of asking the daemon (refused while it runs)."
    ),
) -> None:
    """Does this gate serve travellers now? Every check PASS/WARN/FAIL with a fix; exit 1 on any FAIL.

    FAIL when the daemon is not running, the lane is out of service, in maintenance or in alarm, a
    device fails, or the lane's mode has no usable gallery.
    """
    quiet_logs()
    from egate.tools.diag.selftest import daemon_is_running, run_selftest, summary

    if local:
        from egate.edge.settings import ConfigError, load_settings

        try:
            running = daemon_is_running(load_settings(config))
        except ConfigError:
            running = False  # the config row reports it
        if running:
            fail(
                DiagFailure(
                    "the egate daemon is running and owns the camera, reader and gate controller: "
                    "--local would fight it for the devices and blame them wrongly",
                    "run egate diag selftest without --local (it asks the daemon), or stop the daemon first: "
                    "systemctl stop egate",
                ),
                as_json,
            )
    if not as_json and sys.stderr.isatty():
        from rich.console import Console

        # The engine and device checks take seconds: say that work is going on.
        with Console(stderr=True).status("running the checks (engine, devices, link) ..."):
            results, mode = run_selftest(config, golden=golden, use_daemon=not local)
    else:
        results, mode = run_selftest(config, golden=golden, use_daemon=not local)
    counts = summary(results)
    if as_json:
        emit_json(
            {"ok": counts["FAIL"] == 0, "mode": mode, "summary": counts, "checks": [r.as_dict() for r in results]}
        )
    else:
        out = console()
        out.print(checks_table(results, mode))
        style = "bold red" if counts["FAIL"] else ("yellow" if counts["WARN"] else "green")
        out.print(f"[{style}]{counts['PASS']} passed, {counts['WARN']} warnings, {counts['FAIL']} failed[/]")
    if counts["FAIL"]:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ camera


def camera(
    snapshot: Path = typer.Option(..., "--snapshot", help="Write the annotated frame (JPEG) here."),
    config: Path = _CONFIG,
    as_json: bool = _JSON,
) -> None:
    """Save a camera frame with face boxes and quality drawn; print fps and exposure."""
    quiet_logs()
    with reported(as_json):
        settings = load(config)
        client = daemon_or_none(settings)
        if client is not None:
            from egate.edge.lane.replies import parse_reply
            from egate.edge.lane.snapshot import Snapshot

            result = parse_reply(Snapshot, client.call("camera.snapshot")).model_dump(mode="json")
        else:
            from egate.tools.diag.local import local_snapshot

            result = local_snapshot(settings)
        jpeg = base64.b64decode(result.pop("jpeg_base64"))
        try:
            snapshot.write_bytes(jpeg)
        except OSError as exc:
            raise DiagFailure(f"cannot write {snapshot}: {exc.strerror}", "choose a writable path") from None
        result["snapshot"] = str(snapshot)
        result["source"] = "daemon" if client is not None else "local"
    if as_json:
        emit_json({"ok": True, **result})
        return
    out = console()
    cam = result.get("camera", {})
    out.print(
        kv_table(
            f"camera snapshot -> {snapshot}",
            {
                "size": f"{result['width']}x{result['height']}",
                "fps": cam.get("fps"),
                "state": cam.get("state"),
                "dropped": cam.get("dropped"),
                "mean level (0-255)": result.get("mean_level"),
                "faces": len(result.get("faces", [])),
                "source": result["source"],
                **({"note": result["note"]} if "note" in result else {}),
            },
        )
    )
    for i, face in enumerate(result.get("faces", []), start=1):
        q = face.get("quality", {})
        out.print(
            f"face #{i}: det {face['det_score']:.2f}, yaw {q.get('yaw_deg', 0):.0f}, pitch {q.get('pitch_deg', 0):.0f}, "
            f"sharpness {q.get('sharpness', 0):.0f}, exposure {q.get('exposure_mean', 0):.0f}"
            + (f", fails: {', '.join(face['problems'])}" if face.get("problems") else ", passes the quality gate")
        )


# ------------------------------------------------------------------------------------------ gate


class GateAction(StrEnum):
    status = "status"
    open = "open"
    lock = "lock"
    cycle = "cycle"


def gate(
    action: GateAction = typer.Argument(..., help="status, open (one passage), lock, or cycle (open, pass, lock)."),
    config: Path = _CONFIG,
    as_json: bool = _JSON,
    timeout_s: float = typer.Option(
        8.0,
        "--passage-time",
        min=0.5,
        max=12.0,
        help="How long the gate stays open for the passage (open, cycle), in s.",
    ),
) -> None:
    """Gate controller: status, open, lock, cycle. With the daemon running, only in maintenance mode."""
    quiet_logs()
    with reported(as_json):
        settings = load(config)
        # A cycle waits for the passage (up to twice the passage time) before it answers.
        client = daemon_or_none(settings, timeout_s=15.0 + 2 * timeout_s)
        from egate.edge.lane.replies import REPLY_MODELS, GateStatusReply, parse_reply

        reply: GateStatusReply | GateOpenReply | GateLockReply | GateCycleReply
        if client is not None:
            args: dict[str, Any] = {} if action in (GateAction.status, GateAction.lock) else {"timeout_s": timeout_s}
            cmd = f"gate.{action.value}"
            reply = parse_reply(REPLY_MODELS[cmd], client.call(cmd, **args))  # type: ignore[assignment]
            source = "daemon"
        else:
            from egate.tools.diag.local import LocalGate

            with LocalGate(settings) as local_gate:
                if action is GateAction.status:
                    reply = local_gate.status()
                elif action is GateAction.open:
                    reply = local_gate.open(timeout_s)
                elif action is GateAction.lock:
                    reply = local_gate.lock()
                else:
                    reply = local_gate.cycle(timeout_s)
            source = "local"
        if not isinstance(reply, GateStatusReply) and reply.ok is False:
            raise gate_refusal(action.value, reply)
        result = reply.model_dump(mode="json")
    if as_json:
        emit_json({"ok": True, "source": source, "result": result})
    else:
        console().print(kv_table(f"gate {action.value} ({source})", _for_people(result)))


def gate_refusal(action: str, reply: GateOpenReply | GateLockReply | GateCycleReply) -> DiagFailure:
    """Why the controller did not do `action`, read from the gate's state after the attempt."""
    from egate.edge.lane.replies import GateCycleReply

    status = reply.status
    state = status.gate_state
    if isinstance(reply, GateCycleReply) and reply.opened and reply.passage != "passage_completed":
        return DiagFailure(
            f"gate cycle: opened, but the passage ended as {reply.passage}"
            + ("" if reply.locked else ", and the lock was not acknowledged"),
            "walk through within the passage time (--passage-time) or check the passage sensors: "
            "egate diag gate status shows the inputs",
        )
    if state in ("released", "passing"):
        return DiagFailure(
            f"gate {action} refused: an earlier passage is still pending (decision "
            f"{status.pending_decision or '?'}, gate {state})",
            "wait for that passage to end (its passage time) or end it now: egate diag gate lock",
        )
    if state in ("emergency", "emergency_release") or status.emergency:
        return DiagFailure(
            f"gate {action} refused: the emergency input is active (all leaves released)",
            "clear the emergency input at the gate controller",
        )
    if status.link_state != "up" or state == "safe":
        return DiagFailure(
            f"gate {action} failed: the controller link is {status.link_state}",
            "check the link: egate diag selftest (turnstile row)",
        )
    return DiagFailure(
        f"gate {action} was not acknowledged by the controller (link up, gate {state or 'unknown'})",
        "retry once; if it repeats, check the controller's output wiring and egate diag logs --since 10m",
    )


# ------------------------------------------------------------------------------------------ maintenance


class OnOff(StrEnum):
    on = "on"
    off = "off"


def maintenance(
    state: OnOff = typer.Argument(..., help="on: lane out of service, gate commands allowed; off: back in service."),
    config: Path = _CONFIG,
    as_json: bool = _JSON,
) -> None:
    """Put the running lane in (or out of) maintenance mode."""
    quiet_logs()
    with reported(as_json):
        settings = load(config)
        client = daemon_or_none(settings)
        if client is None:
            raise DiagFailure(
                "the egate daemon is not running: there is no lane to put in maintenance",
                "gate commands work directly while it is stopped (egate diag gate status); start it with "
                "systemctl start egate",
            )
        from egate.edge.lane.replies import MaintenanceReply, parse_reply

        reply = parse_reply(MaintenanceReply, client.call("maintenance", on=state is OnOff.on))
        result = reply.model_dump(mode="json")
    if as_json:
        emit_json({"ok": True, "result": result})
    else:
        console().print(kv_table(f"maintenance {state.value}", _for_people(result)))


# ------------------------------------------------------------------------------------------ mqtt


def mqtt(
    config: Path = _CONFIG,
    as_json: bool = _JSON,
) -> None:
    """The daemon's link state (when running) and a fresh test connection with the link's TLS settings."""
    quiet_logs()
    from egate.tools.diag import selftest_checks as checks
    from egate.tools.diag.selftest import diag_client_id, link_credentials, outbox_path

    with reported(as_json):
        settings = load(config)
        client = daemon_or_none(settings)
        daemon_view = None
        if client is not None:
            from egate.edge.lane.replies import MqttStatusReply, parse_reply

            daemon_view = parse_reply(MqttStatusReply, client.call("mqtt.status")).model_dump(mode="json")
        probe = checks.check_mqtt(settings.link, link_credentials(settings), client_id=diag_client_id(settings))
        outbox = checks.check_outbox(outbox_path(settings), settings.outbox)
    ok = probe.verdict != "FAIL"
    if as_json:
        emit_json({"ok": ok, "daemon": daemon_view, "checks": [probe.as_dict(), outbox.as_dict()]})
    else:
        out = console()
        if daemon_view is not None:
            out.print(kv_table("link as the daemon sees it", _for_people(daemon_view)))
        else:
            out.print("daemon not running: testing the broker directly")
        out.print(checks_table([probe, outbox], "daemon" if client is not None else "local"))
    if not ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ status


def _status_view(status: dict[str, Any], outcomes: list[dict[str, Any]]) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    state = str(status.get("state", "?"))
    colour = {"IDLE": "green", "ACCEPT": "green", "REFER": "yellow", "ALARM": "bold red"}.get(state.upper(), "cyan")
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text(f"gate {status.get('gate_id', '?')}", style="bold"),
        Text(state, style=colour),
        Text(f"mode {status.get('mode', '?')}"),
        Text(f"txn {status.get('txn_id') or '-'}"),
        (
            Text("MAINTENANCE (" + ", ".join(status.get("maintenance_owners") or ["?"]) + ")", style="bold yellow")
            if status.get("maintenance")
            else Text("")
        ),
    )
    parts: list[RenderableType] = [head]
    reasons = status.get("out_of_service_reasons") or []
    if reasons:
        parts.append(Text("out of service: " + "; ".join(reasons), style="bold red"))
    devices = status.get("devices") or {}
    if devices:
        dev = Table(title="devices", title_justify="left")
        dev.add_column("device", style="bold")
        dev.add_column("ok")
        dev.add_column("detail", overflow="fold")
        for name, info in devices.items():
            info = info if isinstance(info, dict) else {"ok": bool(info)}
            dev.add_row(
                name,
                Text("ok" if info.get("ok") else "DOWN", style="green" if info.get("ok") else "red"),
                str(info.get("detail", "")),
            )
        parts.append(dev)
    table = Table(title="last outcomes (no personal data)", title_justify="left")
    for column in ("ended (local)", "txn", "mode", "decision", "reasons", "score/threshold", "quality", "total ms"):
        table.add_column(column)
    for o in outcomes:
        comps = o.get("comparisons") or []
        best = comps[0] if comps else None
        table.add_row(
            human_value("ended_at", o.get("ended_at"))[11:19],
            str(o.get("txn_id", ""))[-8:],
            str(o.get("mode", "")),
            Text(str(o.get("decision", "")), style="green" if str(o.get("decision")).upper() == "ACCEPT" else "yellow"),
            ",".join(str(r) for r in o.get("reasons", [])),
            f"{best['score']:.3f}/{best['threshold']:.3f}" if best else "-",
            f"{o['quality']:.2f}" if isinstance(o.get("quality"), int | float) else "-",
            f"{(o.get('timings_ms') or {}).get('total', 0):.0f}",
        )
    parts.append(table)
    versions = status.get("versions")
    if versions:
        parts.append(Text("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), style="dim"))
    return Group(*parts)


_PERSONAL_KEYS = {"subject_id", "document", "boarding_pass"}


def strip_personal(outcome: dict[str, Any]) -> dict[str, Any]:
    """Outcomes shown to a technician: no subject ids, document or boarding-pass data."""
    clean = {k: v for k, v in outcome.items() if k not in _PERSONAL_KEYS}
    clean["comparisons"] = [
        {k: v for k, v in c.items() if k != "subject_id"}
        for c in outcome.get("comparisons") or []
        if isinstance(c, dict)
    ]
    return clean


def status(
    config: Path = _CONFIG,
    as_json: bool = _JSON,
    watch: bool = typer.Option(False, "--watch", "-w", help="Live view until Ctrl-C (JSON: one line per refresh)."),
    interval_s: float = typer.Option(1.0, "--interval", min=0.2, max=60.0, help="Refresh period for --watch (s)."),
    last: int = typer.Option(10, "--last", min=1, max=100, help="How many recent outcomes to show."),
    count: int = typer.Option(0, "--count", min=0, help="With --watch: stop after this many refreshes (0 = never)."),
) -> None:
    """Lane state, device health and the last outcomes (through the daemon)."""
    quiet_logs()

    def fetch(client: ControlClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from egate.edge.lane.replies import OutcomesReply, StatusReply, parse_reply

        state = parse_reply(StatusReply, client.call("status")).model_dump(mode="json")
        outcomes = parse_reply(OutcomesReply, client.call("outcomes", n=last)).model_dump(mode="json")["outcomes"]
        return state, [strip_personal(o) for o in outcomes]

    with reported(as_json):
        settings = load(config)
        client = daemon_or_none(settings)
        if client is None:
            raise DiagFailure(
                f"the egate daemon is not running (no answer on {settings.control.socket_path})",
                "start it: systemctl start egate; see why it stopped: egate diag logs --since 1h; "
                "devices can be checked without it: egate diag selftest",
            )
        state, outcomes = fetch(client)
        if not watch:
            if as_json:
                emit_json({"ok": True, "status": state, "outcomes": outcomes})
            else:
                console().print(_status_view(state, outcomes))
            return
        _watch(lambda: fetch(client), as_json, interval_s, count, first=(state, outcomes))


def _watch(
    fetch: Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]],
    as_json: bool,
    interval_s: float,
    count: int,
    first: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    from egate.edge.service.control_socket import ControlError

    shown = 0
    current = first
    try:
        if as_json:
            while True:
                emit_json({"ok": True, "at": time.time(), "status": current[0], "outcomes": current[1]})
                sys.stdout.flush()
                shown += 1
                if count and shown >= count:
                    return
                time.sleep(interval_s)  # the refresh period itself, not synchronisation
                current = fetch()
        from rich.live import Live
        from rich.text import Text

        out = console()
        with Live(_status_view(*current), console=out, refresh_per_second=4, screen=False) as live:
            while True:
                shown += 1
                if count and shown >= count:
                    return
                time.sleep(interval_s)
                try:
                    current = fetch()
                    live.update(_status_view(*current))
                except ControlError as exc:
                    live.update(Text(f"daemon unreachable: {exc.error} - {exc.hint}", style="bold red"))
    except KeyboardInterrupt:
        return


# ------------------------------------------------------------------------------------------ logs


def journal_since(since: str) -> str:
    """`10m` -> `-10m` (journalctl's relative time); absolute times pass unchanged."""
    match = _SINCE.match(since.strip())
    if match:
        return f"-{match.group(1)}{match.group(2)}"
    return since


def journald_has_unit(unit: str = "egate") -> bool:
    if shutil.which("journalctl") is None:
        return False
    probe = subprocess.run(
        ["journalctl", "-u", unit, "-n", "1", "-o", "cat", "--no-pager", "-q"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return probe.returncode == 0 and bool(probe.stdout.strip())


def logs(
    since: str = typer.Option("10m", "--since", help="How far back: 30s, 10m, 2h, 1d, or a journalctl time."),
    config: Path = _CONFIG,
    as_json: bool = _JSON,
) -> None:
    """The daemon's log lines since a time (journald), or where to find them."""
    quiet_logs()
    with reported(as_json):
        if not journald_has_unit():
            raise DiagFailure(
                "no egate entries in journald here (not running under systemd, or journald has none)",
                "the daemon logs JSON lines to its stdout: under systemd use journalctl -u egate; for `make run` "
                "read the terminal (or the file it was redirected to)",
            )
        run = subprocess.run(
            ["journalctl", "-u", "egate", "-o", "cat", "--no-pager", "--since", journal_since(since)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if run.returncode != 0:
            raise DiagFailure(
                f"journalctl failed: {run.stderr.strip()}", "check --since (e.g. 10m, 2h, '2026-11-28 05:00')"
            )
    lines = run.stdout.splitlines()
    if as_json:
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                parsed.append({"raw": line})
        emit_json({"ok": True, "source": "journald", "since": since, "lines": parsed})
    else:
        typer.echo(run.stdout, nl=False)


# ------------------------------------------------------------------------------------------ register


def register(app: typer.Typer) -> None:
    app.command("selftest")(selftest)
    app.command("camera")(camera)
    app.command("gate")(gate)
    app.command("maintenance")(maintenance)
    app.command("mqtt")(mqtt)
    app.command("status")(status)
    app.command("logs")(logs)
