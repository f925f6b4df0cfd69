"""The `egate` command: run the daemon, check config, and the technician, ops and bench tools.

Subcommand groups are filled by small modules, each exposing `register(app)`; heavy imports
(OpenCV, onnxruntime, passporteye) stay inside the commands so `egate --help` answers at once.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import structlog
import typer

app = typer.Typer(no_args_is_help=True, help="egate: edge software for automated border-control e-gates.")
config_app = typer.Typer(no_args_is_help=True, help="Validate the config and print its schema.")
app.add_typer(config_app, name="config")

# group name -> modules that add commands to it (each has `register(app: typer.Typer)`).
GROUPS: dict[str, tuple[str, list[str]]] = {
    "models": ("Provision the face models (build, show).", ["tools.models_cmd"]),
    "bench": (
        "Measure speed and accuracy; JSON with --json.",
        [
            "tools.bench_engine",
            "tools.bench_verify",
            "tools.bench_mrz",
            "tools.mrz_synth",
            "tools.bench_gate",
            "tools.bench_search",
            "tools.bench_link",
            "tools.bench_lane",
        ],
    ),
    "diag": (
        "Field technician diagnostics.",
        [
            "tools.diag",
            "tools.diag_engines",
            "tools.diag_reader",
        ],
    ),
    "ops": (
        "Central-ops tools: keys, bundles, galleries, push, watch.",
        [
            "tools.ops_keys",
            "tools.ops_gallery",
            "tools.ops_bundle",
            "tools.ops_config",
            "tools.ops_link",
        ],
    ),
}

DEFAULT_CONFIG = Path(os.environ.get("EGATE_CONFIG", "/etc/egate/egate.toml"))


def _register_groups() -> None:
    for name, (help_text, modules) in GROUPS.items():
        group = typer.Typer(no_args_is_help=True, help=help_text)
        for module in modules:
            importlib.import_module(module).register(group)
        app.add_typer(group, name=name)
    importlib.import_module("tools.demo").register(app)  # `egate demo`: the demo lane of `make run`


@app.command()
def version() -> None:
    """Print egate's version."""
    from importlib.metadata import version as pkg_version

    typer.echo(f"egate {pkg_version('egate')}")


@app.command()
def run(
    config: Path = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="TOML config file."),
) -> None:
    """Run the daemon until SIGTERM or Ctrl-C."""
    from edge.app import build_components
    from edge.daemon import Daemon
    from edge.logs import configure_logging
    from edge.settings import ConfigError, load_settings, with_pushed_config

    try:
        settings, config_source = with_pushed_config(load_settings(config))
    except ConfigError as exc:
        typer.echo(f"egate: invalid config, not starting:\n{exc}", err=True)
        typer.echo("fix the lines above, then check with: egate config check " + str(config), err=True)
        raise typer.Exit(2) from None
    configure_logging(gate_id=settings.gate.gate_id, level=settings.logging.level, fmt=settings.logging.format)
    structlog.get_logger("egate").info("config_loaded", source=config_source)
    daemon = Daemon(
        build_components(settings),
        check_interval_s=settings.health.check_interval_s,
        stop_timeout_s=settings.health.stop_timeout_s,
    )
    daemon.install_signal_handlers()
    raise typer.Exit(daemon.run())


@config_app.command("check")
def config_check(
    file: Path = typer.Argument(..., help="TOML config file to validate."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate FILE; print every error with its key path and line; exit 2 when invalid."""
    from edge.settings import ConfigError, load_settings

    try:
        load_settings(file)
    except ConfigError as exc:
        if as_json:
            issues = [{"key": i.key, "line": i.line, "message": i.message, "source": i.source} for i in exc.issues]
            typer.echo(json.dumps({"valid": False, "file": str(file), "errors": issues}))
        else:
            for issue in exc.issues:
                typer.echo(str(issue), err=True)
            typer.echo(f"{len(exc.issues)} error(s) in {file}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"valid": True, "file": str(file)}) if as_json else f"{file}: OK")


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON Schema."""
    from edge.settings import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def main() -> None:
    if sys.argv[1:2] != ["run"]:
        # Tools print their results (often --json) on stdout: their logs go to stderr, warnings and up.
        from edge.logs import configure_logging

        configure_logging(level="warning", fmt="auto", stream=sys.stderr)
    _register_groups()
    app(prog_name="egate")


if __name__ == "__main__":
    sys.exit(main())
