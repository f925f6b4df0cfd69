"""Helpers of the diag tests: a long-lived TLS PKI, an encrypted gallery on disk, CLI invocation."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from egate.edge.gallery.store import GALLERY_FILE_NAME, write_encrypted
from egate.tools.paths import DEMO_MEDIA
from tests.support.gallery_fixtures import GALLERY_KEY, gallery_bundle, new_ops_key, random_subjects

ROOT = Path(__file__).resolve().parents[2]
DEMO_GIF = DEMO_MEDIA / "head-pose-face-detection-female.gif"


@dataclass(frozen=True)
class LongPki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_long_pki(folder: Path, days: int = 400) -> LongPki:
    """A CA and a server certificate for 127.0.0.1 valid `days` days (a healthy, not-expiring setup)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "diag test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days + 100))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM

    def leaf(cn: str, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(pem), key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    paths = LongPki(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    paths.ca.write_bytes(ca.public_bytes(pem))
    for (cert_path, key_path), (cn, server) in zip(
        ((paths.server_cert, paths.server_key), (paths.client_cert, paths.client_key)),
        (("localhost", True), ("egate-diag-client", False)),
        strict=True,
    ):
        cert_pem, key_pem = leaf(cn, server)
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
    return paths


def write_gallery(
    state_dir: Path,
    *,
    expires_at: dt.datetime,
    issued_at: dt.datetime,
    subjects: int = 3,
    site: str = "site-t",
    model_id: str | None = None,
) -> Path:
    """An encrypted gallery file as the daemon stores it (key: tests.support.gallery_fixtures.GALLERY_KEY), for
    `site` and the face model the daemon runs (the daemon checks both at start, as for a pushed one)."""
    from egate.edge.trust.bundles import BundleScope
    from egate.engines.models import default_model_dir, load_manifest

    model = model_id or load_manifest(default_model_dir()).model_id
    assert model is not None
    raw = gallery_bundle(
        new_ops_key(),
        random_subjects(subjects),
        version=7,
        model_id=model,
        scope=BundleScope(site=site),
        issued_at=issued_at,
        expires_at=expires_at,
    )
    path = state_dir / "gallery" / GALLERY_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_encrypted(path, raw, GALLERY_KEY)
    return path


def diag_cli() -> typer.Typer:
    """The `egate` app with only the diag group, as tools/cli.py wires it."""
    from egate.tools.diag import commands as diag

    app = typer.Typer()
    group = typer.Typer()
    diag.register(group)
    app.add_typer(group, name="diag")
    return app


def run_diag(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, Any]:
    """Run `egate diag ...`; (exit code, output, parsed JSON when --json was given)."""
    result = CliRunner().invoke(diag_cli(), ["diag", *args], env=env, catch_exceptions=False)
    parsed = None
    if "--json" in args:
        first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else "null"
        parsed = json.loads(first)
    return result.exit_code, result.output, parsed
