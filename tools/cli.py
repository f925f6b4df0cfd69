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
from typing import Any

import structlog
import typer

app = typer.Typer(no_args_is_help=True, help="egate: edge software for automated border-control e-gates.")
config_app = typer.Typer(no_args_is_help=True, help="Validate the config and print its schema.")
app.add_typer(config_app, name="config")

# group name -> modules that add commands to it (each has `register(app: typer.Typer)`).
GROUPS: dict[str, tuple[str, list[str]]] = {
    "models": (
        "Provision the face models (build, show) and train the MRZ cell classifier (train-mrz).",
        ["egate.tools.models.commands", "egate.tools.models.mrz_cells"],
    ),
    "bench": (
        "Measure speed and accuracy; JSON with --json.",
        [
            "egate.tools.bench.engine",
            "egate.tools.bench.verify",
            "egate.tools.bench.mrz",
            "egate.tools.sim.mrz_synth",
            "egate.tools.bench.gate",
            "egate.tools.bench.search",
            "egate.tools.bench.link",
            "egate.tools.bench.lane",
            "egate.tools.bench.display",
            "egate.tools.bench.chip",
            "egate.tools.bench.chunks",
            "egate.tools.bench.fuzz",
            "egate.tools.bench.fleet",
            "egate.tools.bench.lane_faults",
        ],
    ),
    "diag": (
        "Field technician diagnostics.",
        [
            "egate.tools.diag.commands",
            "egate.tools.diag.engines",
            "egate.tools.diag.reader",
            "egate.tools.diag.chip",
        ],
    ),
    "display": ("The traveller's screen (kiosk page).", ["egate.tools.display.commands"]),
    "ops": (
        "Central-ops tools: keys, bundles, galleries, push, watch.",
        [
            "egate.tools.ops.keys",
            "egate.tools.ops.gallery",
            "egate.tools.ops.bundle",
            "egate.tools.ops.config",
            "egate.tools.ops.csca",
            "egate.tools.ops.link",
            "egate.tools.ops.collect",
            "egate.tools.ops.rollout",
            "egate.tools.ops.report",
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
    importlib.import_module("egate.tools.demo.run").register(app)  # `egate demo`: the demo lane of `make run`


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
    from egate.edge.service.app import build_components
    from egate.edge.service.daemon import Daemon
    from egate.edge.service.logs import configure_logging
    from egate.edge.settings import ConfigError, load_settings, with_pushed_config

    try:
        settings, config_source = with_pushed_config(load_settings(config))
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(f"error: invalid config, not starting: {issue}", err=True)
        typer.echo(f"fix: the settings above, then check with: egate config check {config}", err=True)
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
    file: Path = typer.Argument(
        DEFAULT_CONFIG, help="TOML config file to validate (default $EGATE_CONFIG or /etc/egate/egate.toml)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate FILE and the paths it names; every problem with its key path and line; exit 2 when invalid.

    Missing devices (serial ports, cameras) are warnings: they may be connected later. Missing files
    the lane reads (a recorded clip, an image folder) are errors.
    """
    from egate.edge.settings import ConfigError, load_settings
    from egate.edge.settings.locate import key_lines, line_of
    from egate.edge.settings.paths import path_issues

    try:
        settings = load_settings(file)
    except ConfigError as exc:
        if as_json:
            issues = [{"key": i.key, "line": i.line, "message": i.message, "source": i.source} for i in exc.issues]
            typer.echo(json.dumps({"valid": False, "file": str(file), "errors": issues, "warnings": []}))
        else:
            for issue in exc.issues:
                typer.echo(f"error: {issue}", err=True)
            if exc.issues[0].key == "<file>":
                typer.echo("fix: write the gate's config there (see config/default.toml), or pass its path", err=True)
            else:
                typer.echo(f"fix: the {len(exc.issues)} setting(s) above in {file}, then check again", err=True)
        raise typer.Exit(2) from None
    found = path_issues(settings)
    lines = key_lines(file.read_text(encoding="utf-8"))

    def where(key: str) -> str:
        line = line_of(lines, tuple(key.split(".")))
        return f"{file}:{line}" if line else str(file)

    errors = [i for i in found if i.severity == "error"]
    warnings = [i for i in found if i.severity == "warning"]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "valid": not errors,
                    "file": str(file),
                    "errors": [
                        {"key": i.key, "line": line_of(lines, tuple(i.key.split("."))), "message": i.message}
                        for i in errors
                    ],
                    "warnings": [{"key": i.key, "message": i.message} for i in warnings],
                }
            )
        )
    else:
        for found_issue in found:
            typer.echo(
                f"{found_issue.severity}: {where(found_issue.key)}: {found_issue.key}: {found_issue.message}", err=True
            )
        if not errors:
            ids = f"site {settings.gate.site_id}, gate {settings.gate.gate_id}, {settings.gate.mode} mode"
            typer.echo(f"{file}: OK ({ids})" + (f", {len(warnings)} warning(s)" if warnings else ""))
    if errors:
        if not as_json:
            typer.echo("fix: correct the paths marked error above, then check again", err=True)
        raise typer.Exit(2)


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON Schema."""
    from egate.edge.settings import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def _flags_as_flags(command: Any) -> None:
    """Boolean flags take no value: show none in help (typer labels them `<bool>`).

    Duck-typed: typer builds its commands from its own copy of click's classes.
    """
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    made_help = command.get_help_option

    def help_option(ctx: Any) -> Any:  # --help is made per invocation: mark it too
        option = made_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _flags_as_flags(sub)


def build_command() -> Any:
    """The whole `egate` command tree as click sees it (also walked by the help-conventions test)."""
    if not _registered:
        _register_groups()
        _registered.append(True)
    command = typer.main.get_command(app)
    _flags_as_flags(command)
    return command


_registered: list[bool] = []


def main() -> None:
    if sys.argv[1:2] != ["run"]:
        # Tools print their results (often --json) on stdout: their logs go to stderr, warnings and up.
        from egate.edge.service.logs import configure_logging

        configure_logging(level="warning", fmt="auto", stream=sys.stderr)
    build_command()(prog_name="egate")


if __name__ == "__main__":
    main()
