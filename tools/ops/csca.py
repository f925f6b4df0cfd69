"""`egate ops csca build`: a signed `csca` bundle from CSCA certificates (PEM/DER files or folders),
CRLs and/or an ICAO CSCA master list (ICAO Doc 9303 part 12 §9)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from asn1crypto import cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from egate.edge.trust.csca_payload import encode_csca_payload
from egate.tools.ops.keys import BundleSigner

CERT_SUFFIXES = {".pem", ".crt", ".cer", ".der"}
CRL_SUFFIXES = {".crl", ".pem", ".der"}
MASTER_LIST_OID = "2.23.136.1.1.2"


class CscaMasterList(core.Sequence):
    _fields = [("version", core.Integer), ("cert_list", core.SetOf, {"spec": ax509.Certificate})]  # noqa: RUF012


def _files(paths: list[Path], suffixes: set[str]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes))
        elif path.is_file():
            out.append(path)
        else:
            raise typer.BadParameter(f"{path}: no such file or folder")
    return out


def load_certificates(path: Path) -> list[bytes]:
    """Every certificate in a PEM file (one or many) or a DER file, as DER."""
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(data)]
    try:
        return [x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.DER)]
    except ValueError:
        raise typer.BadParameter(f"{path}: not a PEM or DER X.509 certificate") from None


def load_crl(path: Path) -> bytes:
    data = path.read_bytes()
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN X509 CRL-----" in data else x509.load_der_x509_crl(data)
    except ValueError:
        raise typer.BadParameter(f"{path}: not a PEM or DER X.509 CRL") from None
    return crl.public_bytes(serialization.Encoding.DER)


def master_list_certificates(data: bytes) -> list[bytes]:
    """The CSCA certificates inside a master list (CMS SignedData, eContent CscaMasterList).

    The master list's own signature is not checked here: ops decides which master list to trust
    (obtained from the ICAO PKD or a state's website); the gate trusts the ops signature on the bundle.
    """
    try:
        info = cms.ContentInfo.load(data)
        encap = info["content"]["encap_content_info"]
        if encap["content_type"].dotted != MASTER_LIST_OID:
            raise ValueError(f"content type {encap['content_type'].dotted} is not a CSCA master list")
        master = CscaMasterList.load(encap["content"].native)
        return [c.dump() for c in master["cert_list"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise typer.BadParameter(f"not a CSCA master list: {exc}") from None


def register(app: typer.Typer) -> None:
    csca = typer.Typer(no_args_is_help=True, help="CSCA trust-list bundles for ePassport Passive Authentication.")
    app.add_typer(csca, name="csca")

    @csca.command("build")
    def build(
        out: Path = typer.Option(..., "--out", help="Bundle file to write."),
        key: Path = typer.Option(..., "--signing-key", "--key", help="Ops signing key (Ed25519 private PEM)."),
        cert: list[Path] = typer.Option([], "--cert", help="CSCA certificate file (PEM/DER) or folder; repeatable."),
        crl: list[Path] = typer.Option([], "--crl", help="CRL file (PEM/DER) or folder; repeatable."),
        master_list: list[Path] = typer.Option([], "--master-list", help="ICAO CSCA master list (DER CMS)."),
        expires: str = typer.Option("30d", "--expires", help="Trust-list lifetime: 30d, 12h or ISO time."),
        scope: str = typer.Option("*", "--scope", help="SITE, SITE:GATE1,GATE2 or * (all)."),
        version: int = typer.Option(0, "--version", min=0, help="Bundle version; 0 = current Unix time."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Collect CSCA certificates (duplicates removed) and CRLs into one signed bundle."""
        certificates: list[bytes] = []
        for path in _files(cert, CERT_SUFFIXES):
            certificates.extend(load_certificates(path))
        for path in master_list:
            certificates.extend(master_list_certificates(path.read_bytes()))
        unique = list(dict.fromkeys(certificates))
        if not unique:
            raise typer.BadParameter("no CSCA certificate given: use --cert and/or --master-list")
        crls = list(dict.fromkeys(load_crl(p) for p in _files(crl, CRL_SUFFIXES)))
        signer = BundleSigner.from_options(key, scope, expires)
        raw = signer.sign("csca", encode_csca_payload(unique, crls), version=version)
        out.write_bytes(raw)
        subjects = [x509.load_der_x509_certificate(c).subject.rfc4514_string() for c in unique]
        result = {
            "out": str(out),
            "cscas": len(unique),
            "crls": len(crls),
            "subjects": subjects,
            "expires_at": signer.expires_at.isoformat(),
        }
        if json_out:
            typer.echo(json.dumps(result))
        else:
            typer.echo(
                f"wrote {out}: {len(unique)} CSCA certificates, {len(crls)} CRLs, expires {signer.expires_at.isoformat()}"
            )
