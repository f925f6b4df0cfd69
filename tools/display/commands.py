"""`egate display serve`: the traveller's screen (kiosk page) as its own process; see edge/display."""

from __future__ import annotations

from pathlib import Path

import typer

from egate.tools.cli import DEFAULT_CONFIG


def serve_command(
    config: Path = typer.Option(
        DEFAULT_CONFIG, "--config", "-c", help="The daemon's TOML config (its display section)."
    ),
    port: int | None = typer.Option(None, "--port", help="Override display.port (0: any free port)."),
) -> None:
    """Serve the kiosk page on loopback from the daemon's read-only feed, until SIGTERM or Ctrl-C.

    Prints {"display_url": ...} on stdout once listening."""
    import asyncio

    from egate.edge.display.languages import CatalogueError
    from egate.edge.display.server import serve
    from egate.edge.settings import ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"egate display: invalid config:\n{exc}", err=True)
        raise typer.Exit(2) from None
    try:
        asyncio.run(serve(settings.display, port=port))
    except CatalogueError as exc:
        typer.echo(f"egate display: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
