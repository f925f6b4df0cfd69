"""`egate ops keys`: make ops signing keys, install one on a gate, and sign a rotation (keys) bundle."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from egate.edge.trust.bundles import BundleKind, BundleScope, GalleryLayout, sign_bundle
from egate.edge.trust.keys import KeysPayload, PublicKeyEntry, TrustStore, key_id_for
from egate.tools.cli import DEFAULT_CONFIG


def load_signing_key(path: Path) -> tuple[Ed25519PrivateKey, str]:
    """An ops private key file (PEM PKCS#8, as `egate ops keys new` writes) and its key id."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"--signing-key {path}: not a readable unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise typer.BadParameter(f"--signing-key {path}: not an Ed25519 key; make one with `egate ops keys new`")
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, key_id_for(raw)


def daemon_on_trust_dir(config: Path, trust_dir: Path) -> bool:
    """Whether the daemon of `config` runs and keeps its trust store in `trust_dir`."""
    from egate.edge.service.control_socket import ControlClient, ControlError
    from egate.edge.settings import ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError:
        return False
    if (settings.state.state_dir / "trust").resolve() != trust_dir.resolve():
        return False
    try:
        ControlClient(settings.control.socket_path, timeout_s=3.0).ping()
    except ControlError:
        return False
    return True


def signing_key_id(path: Path) -> str:
    """The key id of an ops signing key file (derived from its public half, as the gates compute it)."""
    from egate.tools.ops.client import OpsError

    try:
        return load_signing_key(path)[1]
    except typer.BadParameter as exc:
        raise OpsError(str(exc), "pass the .key file `egate ops keys new` wrote") from None


def parse_expiry(text: str, now: datetime) -> datetime:
    """`--expires`: a duration (`90m`, `12h`, `30d`) or an ISO 8601 time with a zone."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1:] in units:
        return now + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"--expires {text!r}: use 90m, 12h, 30d or an ISO time like 2026-12-01T06:00Z"
        ) from None
    if when.tzinfo is None:
        raise typer.BadParameter("--expires needs a time zone (e.g. ...Z or +01:00)")
    return when


@dataclass(frozen=True)
class BundleSigner:
    """The ops key, scope and expiry a bundle command was given, read once: signs bundles issued now."""

    private_key: Ed25519PrivateKey
    key_id: str
    scope: BundleScope
    issued_at: datetime
    expires_at: datetime

    @classmethod
    def from_options(cls, key: Path, scope: str, expires: str) -> BundleSigner:
        """From `--signing-key`, `--scope` and `--expires`; a bad option fails here, before any work."""
        private_key, key_id = load_signing_key(key)
        now = datetime.now(timezone.utc)
        return cls(private_key, key_id, BundleScope.parse(scope), now, parse_expiry(expires, now))

    def sign(
        self, kind: BundleKind, payload: bytes, *, version: int | None = None, gallery: GalleryLayout | None = None
    ) -> bytes:
        """`version` defaults to the issue time in Unix seconds (a gate takes only newer versions of a kind)."""
        return sign_bundle(
            kind=kind,
            version=version or int(self.issued_at.timestamp()),
            payload=payload,
            private_key=self.private_key,
            key_id=self.key_id,
            scope=self.scope,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            gallery=gallery,
        )


def register(app: typer.Typer) -> None:
    keys = typer.Typer(no_args_is_help=True, help="Ops signing keys and key rotation.")
    app.add_typer(keys, name="keys")

    @keys.command("new")
    def new(
        out: Path = typer.Option(Path("."), "--out", help="Folder for <key_id>.key and <key_id>.pub.json."),
        comment: str = typer.Option("", "--comment", help="Who holds the key (goes in the public file)."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Create an Ed25519 signing key: private PEM (mode 0600) and public JSON for gates."""
        private = Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        key_id = key_id_for(raw)
        out.mkdir(parents=True, exist_ok=True)
        key_path = out / f"{key_id}.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        entry = PublicKeyEntry(key_id=key_id, public_key=base64.b64encode(raw).decode(), comment=comment)
        pub_path = out / f"{key_id}.pub.json"
        pub_path.write_text(entry.model_dump_json(indent=2) + "\n")
        result = {"key_id": key_id, "private_key": str(key_path), "public_key": str(pub_path)}
        typer.echo(json.dumps(result) if json_out else f"key {key_id}: private {key_path}, public {pub_path}")

    @keys.command("install")
    def install(
        public: Path = typer.Argument(..., help="A .pub.json file from `egate ops keys new`."),
        trust_dir: Path = typer.Option(..., "--trust-dir", help="The gate's <state_dir>/trust folder."),
        config: Path = typer.Option(
            DEFAULT_CONFIG,
            "--config",
            "-c",
            help="The gate's config, to tell whether its running daemon sees the key (default $EGATE_CONFIG "
            "or /etc/egate/egate.toml).",
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Provision a gate: trust this ops key on disk (first key; later keys come in signed keys bundles).

        A running daemon reads its trust store at start: it trusts the new key only after a restart
        (this command says so when it finds the daemon running on that trust folder).
        """
        entry = PublicKeyEntry.model_validate_json(public.read_text())
        store = TrustStore(trust_dir)
        store.install(entry)
        running = daemon_on_trust_dir(config, trust_dir)
        result = {
            "installed": entry.key_id,
            "trusted": store.key_ids(),
            "daemon_running": running,
            "active_now": not running,
        }
        if json_out:
            typer.echo(json.dumps(result))
            return
        typer.echo(f"trusted on disk in {trust_dir}: {', '.join(store.key_ids())}")
        if running:
            typer.echo(
                f"note: the running daemon read its trust store at start and does not trust {entry.key_id} yet\n"
                "fix: restart it (systemctl restart egate), or send the key in a keys bundle signed by a key "
                "it already trusts (egate ops keys bundle, then egate ops push)",
                err=True,
            )

    @keys.command("bundle")
    def bundle(
        trusted: list[Path] = typer.Option(..., "--trusted", help="Public key files the gates trust afterwards."),
        key: Path = typer.Option(
            ..., "--signing-key", "--key", help="Ops signing key (private PEM) of a key the gates trust now."
        ),
        version: int = typer.Option(..., "--version", min=1, help="Keys bundle version (newer than the last)."),
        out: Path = typer.Option(..., "--out", help="Bundle file to write."),
        revoke: list[str] = typer.Option([], "--revoke", help="Key id to revoke for good (repeatable)."),
        scope: str = typer.Option("*", "--scope", help="SITE, SITE:GATE1,GATE2 or * (default: all)."),
        expires: str = typer.Option("30d", "--expires", help="Bundle validity: 30d, 12h or ISO time."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Sign a key rotation: the complete trusted set plus revocations."""
        signer = BundleSigner.from_options(key, scope, expires)
        payload = KeysPayload(
            trusted=[PublicKeyEntry.model_validate_json(p.read_text()) for p in trusted], revoked=list(revoke)
        )
        raw = signer.sign("keys", payload.model_dump_json().encode(), version=version)
        out.write_bytes(raw)
        result = {
            "out": str(out),
            "signed_by": signer.key_id,
            "trusted": [k.key_id for k in payload.trusted],
            "revoked": revoke,
        }
        typer.echo(json.dumps(result) if json_out else f"wrote {out} ({len(raw)} bytes), signed by {signer.key_id}")
