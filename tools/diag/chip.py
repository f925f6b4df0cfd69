"""`egate diag chip`: is the chip reader there, is a card on it, and does the chip read and
authenticate with a given MRZ? For technicians at the gate; prints fix hints, never personal data.

    egate diag chip                                   # readers, card presence, ATR
    egate diag chip --mrz 'P<UTO...' --mrz 'L898...' --csca csca.pem [--timeout 10] [--json]
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

HINTS = {
    "no_pcscd": "pcscd is not running: start it (systemctl start pcscd.socket, or pcscd -f for a test)",
    "no_reader": "no PC/SC reader: plug the reader in, check `pcsc_scan`, and that the CCID driver lists it",
    "no_card": "no card on the reader: place the passport's data page on the reader window",
    "chip_not_emrtd": "the card has no eMRTD application: not an ePassport (or an ID card read in the wrong slot)",
    "chip_access_denied": "the chip refused the MRZ key: re-read the MRZ (number, birth and expiry dates)",
    "chip_unreadable": "the chip stopped answering: hold the document still on the reader and retry",
    "chip_malformed": "the chip sent data that does not parse: try again; if it repeats, refer the document",
    "pa_no_trust_list": "no CSCA certificates: push a csca bundle (egate ops csca build) or pass --csca",
    "pa_untrusted_csca": "the Document Signer's CSCA is not trusted: add that state's CSCA to the csca bundle",
    "pa_ds_expired": "the Document Signer certificate is outside its validity: check the gate clock (NTP)",
    "pa_ds_revoked": "the Document Signer is on its CSCA's CRL: refer the document",
    "pa_hash_mismatch": "a data group does not match its signed hash: possible tampering, refer the document",
    "pa_signature": "EF.SOD's signature does not verify: possible tampering, refer the document",
    "pa_malformed": "EF.SOD does not parse: refer the document",
    "chip_aa_failed": "Active Authentication failed: the chip may be a copy, refer the document",
    "chip_ca_failed": "Chip Authentication failed: the chip may be a copy, refer the document",
}


def _key_from_mrz(lines: list[str]) -> Any:
    from egate.drivers.chip.access import AccessKey
    from egate.drivers.document import parse_mrz

    result = parse_mrz("\n".join(lines))
    doc = result.document
    if doc is None or doc.birth_date is None or doc.expiry_date is None:
        raise typer.BadParameter(f"--mrz does not parse: {[e.message for e in result.errors]}")
    return AccessKey(doc.number, doc.birth_date.strftime("%y%m%d"), doc.expiry_date.strftime("%y%m%d"))


def diagnose(
    reader: str, mrz: list[str], csca: list[Path], timeout_s: float, apdu_timeout_s: float = 5.0
) -> dict[str, Any]:
    from egate.drivers.chip.apdu import ChipIOError
    from egate.drivers.chip.pa import TrustList
    from egate.drivers.chip.pcsc import PcscTransport, list_readers, probe
    from egate.drivers.chip.reader import read_document
    from egate.tools.ops.csca import load_certificates

    report: dict[str, Any] = {"pcscd": "running", "readers": [], "reader": None, "card_present": False, "hints": []}
    try:
        report["readers"] = list_readers()
    except ChipIOError:
        report["pcscd"] = "not running"
        report["hints"].append(HINTS["no_pcscd"])
        return report
    matching = [r for r in report["readers"] if reader.lower() in r.lower()]
    if not matching:
        report["hints"].append(HINTS["no_reader"])
        return report
    report["reader"] = matching[0]
    info = probe(matching[0])[0]
    report["card_present"] = info.card_present
    report["atr"] = info.atr.hex().upper() if info.atr else None
    if not mrz:
        if not info.card_present:
            report["hints"].append(HINTS["no_card"])
        return report
    key = _key_from_mrz(mrz)
    certificates = [c for path in csca for c in load_certificates(path)]
    trust = TrustList.from_der(certificates) if certificates else None
    try:
        transport = PcscTransport.open(matching[0], timeout_s=timeout_s, apdu_timeout_s=apdu_timeout_s)
    except ChipIOError as exc:
        report["error"] = str(exc)
        report["hints"].append(HINTS["no_card"])
        return report
    report["card_present"] = True
    report["atr"] = transport.atr.hex().upper()
    try:
        result = read_document(transport, key, trust, datetime.now(timezone.utc), atr=transport.atr)
    finally:
        transport.close()
    report["chip"] = {
        "authentic": result.authentic,
        "reason": result.reason,
        "detail": result.detail,
        "access_protocol": result.access_protocol,
        "extended_length": result.extended_length,
        "data_groups": list(result.data_groups),
        "face_decoded": result.face is not None,
        "passive_authentication": None if result.pa is None else asdict(result.pa),
        "chip_authentication": result.chip_authentication,
        "active_authentication": result.active_authentication,
        "timings": [asdict(t) for t in result.timings],
    }
    if result.reason in HINTS:
        report["hints"].append(HINTS[result.reason])
    return report


def chip_command(
    reader: str = typer.Option("", "--reader", help="Part of the PC/SC reader name (default: the first)."),
    mrz: list[str] = typer.Option([], "--mrz", help="An MRZ line of the document on the reader; repeat per line."),
    csca: list[Path] = typer.Option([], "--csca", help="CSCA certificate (PEM/DER) for Passive Authentication."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.0, help="Seconds to wait for a card."),
    apdu_timeout: float = typer.Option(5.0, "--apdu-timeout", min=0.1, help="Seconds the chip may take per command."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check the chip reader and, with --mrz, read and authenticate the chip on it."""
    report = diagnose(reader, mrz, csca, timeout, apdu_timeout)
    if json_out:
        typer.echo(json.dumps(report))
    else:
        typer.echo(f"pcscd: {report['pcscd']}; readers: {', '.join(report['readers']) or 'none'}")
        typer.echo(f"reader: {report['reader']}; card present: {report['card_present']}; ATR: {report.get('atr')}")
        chip = report.get("chip")
        if chip:
            typer.echo(f"access: {chip['access_protocol']}; authentic: {chip['authentic']}; reason: {chip['reason']}")
            typer.echo(
                f"chip authentication: {chip['chip_authentication']}; "
                f"active authentication: {chip['active_authentication']}"
            )
            for t in chip["timings"]:
                typer.echo(
                    f"  {t['step']:6s} {t['apdus']:4d} APDUs {t['bytes_in'] + t['bytes_out']:6d} B {t['seconds']:.3f} s"
                )
        for hint in report["hints"]:
            typer.echo(f"hint: {hint}")
    ok = report["card_present"] and (not mrz or bool(report.get("chip", {}).get("authentic")))
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    """Add `chip` to the `diag` group."""
    app.command("chip")(chip_command)
