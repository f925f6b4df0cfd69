"""`egate ops config build`: a validated, signed config bundle for gates."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer

from egate.edge.trust.bundles import BundleScope, sign_bundle
from egate.tools.ops.keys import load_signing_key, parse_expiry


def register(app: typer.Typer) -> None:
    config = typer.Typer(no_args_is_help=True, help="Config bundles.")
    app.add_typer(config, name="config")

    @config.command("build")
    def build(
        file: Path = typer.Argument(..., help="TOML config to push (validated exactly as the gate will)."),
        key: Path = typer.Option(..., "--signing-key", "--key", help="Ops signing key (Ed25519 private PEM)."),
        out: Path = typer.Option(..., "--out", help="Bundle file to write."),
        version: int = typer.Option(0, "--version", min=0, help="Config version; 0 = current Unix time."),
        scope: str = typer.Option(..., "--scope", help="SITE or SITE:GATE1,GATE2."),
        expires: str = typer.Option("365d", "--expires", help="Bundle validity: 365d, 12h or ISO time."),
        json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Validate FILE.toml as a gate config and sign it into a config bundle."""
        from egate.edge.settings import ConfigError, load_settings_text

        text = file.read_text(encoding="utf-8")
        try:
            load_settings_text(text, source=str(file), environ={})
        except ConfigError as exc:
            typer.echo(f"config {file} is invalid, no bundle written:\n{exc}", err=True)
            raise typer.Exit(2) from None
        private, key_id = load_signing_key(key)
        now = datetime.now(timezone.utc)
        raw = sign_bundle(
            kind="config",
            version=version or int(now.timestamp()),
            payload=text.encode("utf-8"),
            private_key=private,
            key_id=key_id,
            scope=BundleScope.parse(scope),
            issued_at=now,
            expires_at=parse_expiry(expires, now),
        )
        out.write_bytes(raw)
        result = {"out": str(out), "bytes": len(raw), "key_id": key_id}
        typer.echo(json.dumps(result) if json_out else f"wrote {out} ({len(raw)} bytes), signed by {key_id}")
