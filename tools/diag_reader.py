"""`egate diag reader`: read one document from an image file or a serial reader and print it.

egate diag reader --image page.jpg [--json]
egate diag reader --serial /dev/ttyUSB1 [--timeout 20] [--json]
"""

from __future__ import annotations

import json
import queue
import sys
from datetime import date
from pathlib import Path

import typer

from drivers.document.models import BcbpResult, MrzResult, ReaderError, ReaderResult


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

    from drivers.document.reader import read_image

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return ReaderError(source=str(path), message=f"cannot read image {path}: missing or not an image file")
    return read_image(image)


def read_serial_once(url: str, timeout_s: float) -> ReaderResult:
    from drivers.document.serial_reader import SerialDocumentReader

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
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Read one document (MRZ or boarding pass) and print what was read."""
    if (image is None) == (serial is None):
        typer.echo("give exactly one of --image FILE or --serial URL", err=True)
        raise typer.Exit(2)
    result = read_image_file(image) if image is not None else read_serial_once(str(serial), timeout)
    if as_json:
        sys.stdout.write(json.dumps(result_json(result), default=str) + "\n")
    else:
        typer.echo(_human(result))
    raise typer.Exit(0 if result.valid else 1)


def register(app: typer.Typer) -> None:
    """Add `reader` to the `diag` group."""
    app.command("reader")(reader_command)
