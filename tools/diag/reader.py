"""`egate diag reader`: read one document from an image file or a serial reader and print it.

egate diag reader --image page.jpg [--json]
egate diag reader --serial /dev/ttyUSB1 [--timeout 20] [--json]
egate diag reader [--config FILE] [--json]        # the running daemon's last read (it owns the port)
"""

from __future__ import annotations

import json
import queue
import sys
from datetime import date
from pathlib import Path

import typer

from egate.drivers.document.models import BcbpResult, MrzResult, ReaderError, ReaderResult
from egate.tools.cli import DEFAULT_CONFIG


def result_json(result: ReaderResult) -> dict[str, object]:
    """The JSON the issue fixes: mrz {kind, format, lines, valid, fields, errors} or bcbp {kind, raw, fields}."""
    return result.to_json()


def _human(result: ReaderResult) -> str:
    if isinstance(result, MrzResult):
        out = [f"MRZ {result.format or '?'}  valid={result.valid}"]
        out += [f"  {ln}" for ln in result.lines]
        if result.document is not None:
            d = result.document
            out.append(
                f"  {d.kind} {d.issuer} no {d.masked_number} {d.surname}, {d.given_names} "
                f"nat {d.nationality} born {d.birth_date} sex {d.sex} expires {d.expiry_date}"
            )
    elif isinstance(result, BcbpResult):
        out = [f"BCBP valid={result.valid}", f"  {result.raw}"]
        bp = result.boarding_pass
        if bp is not None:
            out.append(f"  {bp.passenger_name} PNR {bp.pnr} e-ticket={bp.electronic_ticket}")
            out += [
                f"  leg {i + 1}: {leg.carrier}{leg.flight} {leg.from_airport}->{leg.to_airport} day {leg.julian_date} "
                f"seat {leg.seat} seq {leg.sequence}"
                for i, leg in enumerate(bp.legs)
            ]
    else:
        out = [f"ERROR ({result.source}): {result.message}"]
    errors = getattr(result, "errors", [])
    out += [f"  ! {e.field}: {e.message}" for e in errors]
    return "\n".join(out)


def read_image_file(path: Path) -> ReaderResult:
    import cv2

    from egate.drivers.document.reader import read_image

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return ReaderError(source=str(path), message=f"cannot read image {path}: missing or not an image file")
    return read_image(image)


def read_serial_once(url: str, timeout_s: float) -> ReaderResult:
    from egate.drivers.document.serial_reader import SerialDocumentReader

    results: queue.Queue[ReaderResult] = queue.Queue()
    reader = SerialDocumentReader(url, results.put, today=date.today)
    with reader:
        try:
            first = results.get(timeout=timeout_s)
        except queue.Empty:
            return ReaderError(source=url, message=f"nothing read within {timeout_s:.0f} s: present a document")
        if isinstance(first, ReaderError) and not reader.connected.is_set():
            return first
        # A garbage line before the document is reported only if no document follows quickly.
        if isinstance(first, ReaderError):
            try:
                return results.get(timeout=2.0)
            except queue.Empty:
                return first
        return first


def reader_command(
    image: Path | None = typer.Option(None, "--image", help="Image of a data page or boarding pass."),
    serial: str | None = typer.Option(None, "--serial", help="pyserial URL of a document reader."),
    timeout: float = typer.Option(20.0, "--timeout", min=0.5, max=600, help="Seconds to wait on --serial."),
    config: Path = typer.Option(
        DEFAULT_CONFIG,
        "--config",
        "-c",
        help="TOML config file (default $EGATE_CONFIG or /etc/egate/egate.toml); with neither --image nor "
        "--serial: the running daemon's last read.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Read one document (MRZ or boarding pass) and print what was read; or the daemon's last read."""
    if image is None and serial is None:
        _daemon_last_read(config, as_json)
        return
    if image is not None and serial is not None:
        typer.echo("give one of --image FILE or --serial URL (or neither, for the daemon's last read)", err=True)
        raise typer.Exit(2)
    if serial is not None:
        _refuse_port_the_daemon_owns(serial, config)
    result = read_image_file(image) if image is not None else read_serial_once(str(serial), timeout)
    if as_json:
        sys.stdout.write(json.dumps(result_json(result), default=str) + "\n")
    else:
        typer.echo(_human(result))
    raise typer.Exit(0 if result.valid else 1)


def _refuse_port_the_daemon_owns(serial: str, config: Path) -> None:
    """One owner per device: a second reader on the daemon's port would steal its lines."""
    from egate.tools.diag.commands import DiagFailure, daemon_or_none, fail, load

    if not config.exists():
        return
    try:
        settings = load(config)
    except DiagFailure:
        return  # the config is not ours to judge here; the port may be unrelated
    if settings.reader.serial_url == serial and daemon_or_none(settings) is not None:
        fail(
            DiagFailure(
                f"the running daemon owns the reader port {serial}",
                "present a document and run `egate diag reader` (no --serial) to see what the daemon read, "
                "or stop the daemon first (systemctl stop egate)",
            ),
            as_json=False,
        )


def _daemon_last_read(config: Path, as_json: bool) -> None:
    from egate.tools.diag.commands import DiagFailure, daemon_or_none, emit_json, fail, load, reported

    with reported(as_json):
        settings = load(config)
        client = daemon_or_none(settings)
        if client is None:
            fail(
                DiagFailure(
                    "the daemon is not running, and neither --image nor --serial was given",
                    f"egate diag reader --serial {settings.reader.serial_url or 'URL'} or --image FILE",
                ),
                as_json,
            )
        from egate.edge.lane.replies import ReaderLastReply, parse_reply

        last = parse_reply(ReaderLastReply, client.call("reader.last")).model_dump(mode="json")
    if as_json:
        emit_json({"ok": True, "source": "daemon", **last})
        raise typer.Exit(0)
    if last["result"] is None:
        typer.echo(f"no document read yet (reader port {'open' if last['connected'] else 'not open'})")
        raise typer.Exit(1)
    typer.echo(
        f"last read at {last['at']} (personal data masked: names, birth date, raw text and repair values are never shown):"
    )
    typer.echo(json.dumps(last["result"], indent=2, default=str))
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    """Add `reader` to the `diag` group."""
    app.command("reader")(reader_command)
