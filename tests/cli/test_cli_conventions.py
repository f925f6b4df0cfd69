"""Every `egate` command's `--help`, walked from the real command tree: one vocabulary across the CLI.

The same flag name for the same thing, boolean flags shown as flags, --json on every tool command,
and every command explained. New commands are checked as soon as tools/cli.py registers them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from egate.tools.cli import DEFAULT_CONFIG, build_command

ROOT = build_command()
# Groups whose commands are tools (README: every tool command takes --json).
TOOL_GROUPS = ("diag", "ops", "bench", "models")


def leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = getattr(command, "commands", None)
    if not subs:
        yield path, command
        return
    for name, sub in sorted(subs.items()):
        yield from leaves(sub, (*path, name))


COMMANDS = list(leaves(ROOT))
IDS = [" ".join(path) for path, _ in COMMANDS]


def options(command: Any) -> list[Any]:
    return [p for p in command.params if getattr(p, "param_type_name", "") == "option"]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`egate ARGS` in this process, on the same command tree `egate` runs."""
    try:
        code = ROOT.main(args=args, prog_name="egate", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # typer's own click raises its Exit/usage errors with an exit_code
        code = getattr(exc, "exit_code", 1)
        if hasattr(exc, "show"):
            exc.show()
    captured = capsys.readouterr()
    return int(code or 0), captured.out + captured.err


def help_text(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    code, text = run([*path, "--help"], capsys)
    assert code == 0, text
    return text


def test_the_tree_holds_every_group() -> None:
    groups = {path[0] for path, _ in COMMANDS}
    assert {"config", "demo", "diag", "ops", "bench", "models", "run"} <= groups


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_renders_flags_as_flags_and_explains_the_command(
    path: tuple[str, ...], command: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(path, capsys)
    assert "<bool>" not in text, "a boolean flag takes no value: do not show one"
    assert (command.help or "").strip(), f"egate {' '.join(path)} has no help text"
    for option in options(command):
        assert (option.help or "").strip(), f"{option.opts} of egate {' '.join(path)} has no help"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_one_name_for_one_thing(path: tuple[str, ...], command: Any) -> None:
    where = f"egate {' '.join(path)}"
    for option in options(command):
        names = set(option.opts) | set(option.secondary_opts)
        words = (option.help or "").lower()
        if "model cache" in words:
            assert option.opts[0] == "--model-dir", f"{where}: the model cache is --model-dir, not {option.opts}"
        if "signing key" in words or "ops private key" in words:
            assert option.opts[0] == "--signing-key", f"{where}: the ops signing key is --signing-key"
        if "--key" in names:
            assert "signing" in words, f"{where}: --key means the signing key only (TLS: --tls-key)"
        if "--config" in names:
            assert option.default == DEFAULT_CONFIG, f"{where}: --config defaults like `egate run`"
        if "--timeout" in names:
            # --timeout is always how long to wait; a gate's passage time is --passage-time.
            assert "passage" not in words, f"{where}: --timeout is a wait, not a passage time"
        if "--site" in names and not words.startswith("only") and "every site" not in words:
            # A filter over stored data may default to every site; a command that reaches gates may not.
            assert option.required, f"{where}: --site is required (a default site would hit the wrong gates)"
        if "--port" in names and "broker" in words:
            assert "tls" in words, f"{where}: say which broker port is TLS"


@pytest.mark.parametrize(
    ("path", "command"), [(p, c) for p, c in COMMANDS if p[0] in TOOL_GROUPS or p[:2] == ("config", "check")]
)
def test_tool_commands_take_json(path: tuple[str, ...], command: Any) -> None:
    names = {name for option in options(command) for name in option.opts}
    assert "--json" in names, f"egate {' '.join(path)} has no --json"


def test_error_format_is_error_then_fix(capsys: pytest.CaptureFixture[str]) -> None:
    """One error format: `error: ...` then `fix: ...` (diag, config, ops)."""
    pattern = re.compile(r"^error: .*\nfix: ", re.MULTILINE)
    code, text = run(["diag", "status", "--config", "/nonexistent/egate.toml"], capsys)
    assert code == 2 and pattern.search(text), text
    code, text = run(["config", "check", "/nonexistent/egate.toml"], capsys)
    assert code == 2 and pattern.search(text), text
    args = ["ops", "cmd", "set-mode", "--mode", "banana", "--gate", "g", "--site", "s", "--signing-key", "/x"]
    code, text = run(args, capsys)
    assert code == 2 and pattern.search(text), text
