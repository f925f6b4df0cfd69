"""`egate ops config build`: a validated, signed config bundle for gates."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from egate.tools.ops.keys import BundleSigner


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
        signer = BundleSigner.from_options(key, scope, expires)
        raw = signer.sign("config", text.encode("utf-8"), version=version)
        out.write_bytes(raw)
        result = {"out": str(out), "bytes": len(raw), "key_id": signer.key_id}
        typer.echo(json.dumps(result) if json_out else f"wrote {out} ({len(raw)} bytes), signed by {signer.key_id}")
