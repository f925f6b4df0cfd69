"""The daemon's configuration: TOML files validated by pydantic, with `EGATE_...` overrides.

One pydantic model per section (Frigate's layout); sections that belong to a driver or engine
live in that package, so `drivers/` and `engines/` never import `edge`. `config/default.toml`
documents every setting; `egate config schema` prints the JSON Schema.
"""

from __future__ import annotations

import os
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from egate.drivers.camera import CameraConfig
from egate.drivers.chip.config import ChipReaderConfig
from egate.drivers.credentials import CREDENTIAL_NAME_PATTERN, CREDENTIAL_NAME_WORDS
from egate.drivers.document.config import ReaderConfig
from egate.drivers.turnstile.config import GateDriverConfig
from egate.drivers.turnstile.registry import default_gate_config, gate_config_annotation, gate_drivers
from egate.edge.ids import ID_PATTERN, ID_WORDS
from egate.edge.settings.core import (
    ControlConfig,
    GateConfig,
    HealthConfig,
    LoggingConfig,
    StateConfig,
    drop_legacy_privacy,
)
from egate.edge.settings.display import DisplayConfig
from egate.edge.settings.gallery import GalleryConfig
from egate.edge.settings.lane import LaneConfig, Mode
from egate.edge.settings.limits import LimitError, check_limits
from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.settings.locate import key_lines, line_of
from egate.engines.config import EngineConfig, moved_engine_settings

if TYPE_CHECKING:
    TurnstileSection = GateDriverConfig  # what every driver's config has in common
else:
    # `[turnstile]` validates against the registered driver chosen by its `type` (default osdp).
    TurnstileSection = gate_config_annotation()

SCHEMA_VERSION: Literal[1] = 1
ENV_PREFIX = "EGATE_"
ENV_NESTING = "__"


class Settings(BaseModel):
    """Root of the config file. Every section has working defaults except where a site must decide."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(
        SCHEMA_VERSION, description="Config layout version; older files are migrated on load."
    )
    gate: GateConfig = Field(default_factory=GateConfig, description="Who this gate is and its lane mode.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log level and format.")
    state: StateConfig = Field(default_factory=StateConfig, description="Where state lives on disk.")
    control: ControlConfig = Field(default_factory=ControlConfig, description="Local control API for tools.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health checks and stop budget.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Face engine backend and quality.")
    reader: ReaderConfig = Field(default_factory=ReaderConfig, description="Document and boarding-pass reader.")
    chip: ChipReaderConfig = Field(default_factory=ChipReaderConfig, description="ePassport chip reader (PC/SC).")
    turnstile: TurnstileSection = Field(
        default_factory=default_gate_config, description="Gate controller: its driver (`type`) and link."
    )
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Gallery, bundles and matching.")
    link: LinkConfig = Field(default_factory=LinkConfig, description="MQTT link to central ops.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="On-disk store-and-forward queue.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Lane camera.")
    lane: LaneConfig = Field(default_factory=LaneConfig, description="Traveller sessions and decision policy.")
    display: DisplayConfig = Field(default_factory=DisplayConfig, description="The traveller's screen (kiosk page).")

    @model_validator(mode="after")
    def _lane_identity_from_gate(self) -> Settings:
        # The lane's gate id and start-up mode are the gate's: one place to set them, never two that disagree.
        for name in ("gate_id", "mode"):
            if name in self.lane.model_fields_set and str(getattr(self.lane, name)) != str(getattr(self.gate, name)):
                raise ValueError(f"lane.{name} is taken from gate.{name}; remove it from [lane] and set gate.{name}")
        self.lane = self.lane.model_copy(update={"gate_id": self.gate.gate_id, "mode": Mode(self.gate.mode)})
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_privacy_switches(cls, data: Any) -> Any:
        if isinstance(data, dict) and "privacy" in data:
            data = dict(data)
            drop_legacy_privacy(data.pop("privacy"))
        return data

    @model_validator(mode="after")
    def _limits_the_parts_can_honour(self) -> Settings:
        issues = check_limits(self)
        if issues:
            raise LimitError(issues)
        return self


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config source: where it is and what to do."""

    key: str
    line: int | None
    message: str
    source: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.key}: {self.message}"


class ConfigError(ValueError):
    """The config is invalid; `.issues` lists every problem with its key path and line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


# Migrations from older schema versions: version -> function returning the next version's dict.
MIGRATIONS: dict[int, Any] = {}


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    version = data.get("schema_version", SCHEMA_VERSION)
    while isinstance(version, int) and version < SCHEMA_VERSION and version in MIGRATIONS:
        data = MIGRATIONS[version](data)
        version = data["schema_version"]
    return data


def _parse_env_value(raw: str) -> Any:
    """Env values are TOML literals when they parse as one (`true`, `8883`, `["a"]`), else strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], Any]:
    """`EGATE_LINK__PORT=1883` -> {("link", "port"): 1883}. Only double-underscore paths count."""
    found: dict[tuple[str, ...], Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_NESTING not in name:
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTING))
        found[path] = _parse_env_value(raw)
    return found


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


# Settings every real gate must set in its file (or environment): the defaults only serve examples.
REQUIRED_KEYS: dict[tuple[str, ...], str] = {
    ("gate", "site_id"): 'this gate\'s site (airport/terminal) id, used in MQTT topics: e.g. site_id = "ams-t2"',
    ("gate", "gate_id"): 'this gate\'s id, unique within the site, as ops address it: e.g. gate_id = "g07"',
}
# The word that turns an optional setting off (`buzzer_output = "none"`): TOML has no null.
NONE_WORD = "none"


def _none_words(node: Any) -> Any:
    """`"none"` -> None everywhere, so optional settings can be switched off explicitly."""
    if isinstance(node, dict):
        return {key: _none_words(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_none_words(value) for value in node]
    if isinstance(node, str) and node.strip().lower() == NONE_WORD:
        return None
    return node


def _missing_required(data: Mapping[str, Any], source: str) -> list[ConfigIssue]:
    issues = []
    for path, what in REQUIRED_KEYS.items():
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            issues.append(ConfigIssue(".".join(path), None, f"required, not set: {what}", source))
    return issues


def load_settings_text(
    text: str,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
    require_identity: bool = False,
) -> Settings:
    """Validate TOML text (plus env overrides) or raise ConfigError listing every issue.

    `require_identity` (a gate's own config file) also requires the keys in REQUIRED_KEYS.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError has no lineno attribute; the position is in the message.
        match = re.search(r"at line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError([ConfigIssue("<syntax>", line, f"not valid TOML: {exc}", source)]) from None
    overrides = env_overrides(os.environ if environ is None else environ)
    for path, value in overrides.items():
        _apply(data, path, value)
    data = _none_words(_migrate(data))
    missing = _missing_required(data, source) if require_identity else []
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        lines = key_lines(text)
        env_paths = {path: ENV_PREFIX + ENV_NESTING.join(p.upper() for p in path) for path in overrides}
        issues = []
        for err in exc.errors(include_url=False):
            cause = (err.get("ctx") or {}).get("error")
            found: list[tuple[tuple[Any, ...], str]]
            if isinstance(cause, LimitError):
                found = [(i.loc, i.message) for i in cause.issues]
            else:
                err_loc: tuple[Any, ...] = _without_driver_tag(tuple(err["loc"]))
                if err["type"] == "union_tag_invalid":
                    err_loc = (*err_loc, "type")
                if err["type"] == "value_error":
                    err_loc = _named_key(str(err["msg"]), err_loc)
                err_loc, moved = _as_written(err_loc, data)
                found = [(err_loc, _explain(err) + moved)]
            for loc, message in found:
                key = ".".join(str(part) for part in loc) or "<root>"
                env_name = next((name for path, name in env_paths.items() if loc[: len(path)] == path), None)
                where = f"env {env_name}" if env_name else source
                line = None if env_name else line_of(lines, loc)
                issues.append(ConfigIssue(key, line, message, where))
        raise ConfigError(issues + missing) from None
    if missing:
        raise ConfigError(missing)
    return settings


_KEY_PATH = re.compile(r"\b([a-z_]+(?:\.[a-z_]+)+)\b")


def _named_key(message: str, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A cross-field rule reports at its section; point at the first setting its message names instead."""
    prefix = ".".join(str(part) for part in loc)
    for match in _KEY_PATH.finditer(message):
        path = match.group(1)
        if not prefix or path.startswith(prefix + "."):
            return tuple(path.split("."))
    return loc


# Plain words for the patterns the settings use (a raw regex helps nobody at a gate).
_PATTERN_WORDS = {
    ID_PATTERN: ID_WORDS,
    CREDENTIAL_NAME_PATTERN: CREDENTIAL_NAME_WORDS,
    r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$": "words of letters, digits, '-' or '_' joined by '/' (no leading or "
    "trailing '/')",
    r"^[A-Za-z0-9_-]{0,32}$": "at most 32 letters, digits, '-' or '_'",
}


def _without_driver_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """`turnstile.modbus.baud` -> `turnstile.baud`: the driver's name is the union's tag, not a key."""
    if len(loc) >= 2 and loc[0] == "turnstile" and loc[1] in gate_drivers():
        return (loc[0], *loc[2:])
    return loc


def _as_written(loc: tuple[Any, ...], data: Mapping[str, Any]) -> tuple[tuple[Any, ...], str]:
    """A setting that moved into its backend's table is reported under the old key the config still uses
    (its line, its environment variable), with the new name to write instead."""
    if len(loc) < 3 or loc[0] != "engine":
        return loc, ""
    old = moved_engine_settings().get((str(loc[1]), str(loc[2])))
    engine = data.get("engine")
    if old is None or not isinstance(engine, Mapping) or old not in engine:
        return loc, ""
    return ("engine", old, *loc[3:]), f" (engine.{old} is now written as [engine.{loc[1]}] {loc[2]})"


def _explain(err: Any) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        return f"no gate driver called {tag!r}: use one of {', '.join(sorted(gate_drivers()))}"
    if kind == "extra_forbidden":
        return "unknown setting: remove it or check its spelling against `egate config schema`"
    if kind == "missing":
        return "required setting is missing"
    if kind == "value_error":
        # A cross-field rule: its message already names the keys and the fix.
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        pattern = str((err.get("ctx") or {}).get("pattern", ""))
        return f"{got!r} is not allowed here: use {_PATTERN_WORDS.get(pattern, 'letters, digits, - and _ only')}"
    if got is None:
        return "cannot be none: give a value (see config/default.toml)"
    if kind in ("int_type", "int_parsing", "float_type", "float_parsing") and isinstance(got, str):
        return f"must be a number, written without quotes (got the text {got!r})"
    if isinstance(got, dict | list):
        return str(err["msg"])
    return f"{err['msg']} (got {got!r})"


def load_settings(path: Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [
                ConfigIssue(
                    "<file>",
                    None,
                    f"cannot read config: {exc.strerror}; pass an existing TOML file",
                    str(path),
                )
            ]
        ) from None
    return load_settings_text(text, source=str(path), environ=environ, require_identity=True)


def json_schema() -> dict[str, Any]:
    return Settings.model_json_schema()


PUSHED_CONFIG = Path("config") / "pushed.toml"  # under state.state_dir; written by a verified config bundle


def with_pushed_config(base: Settings, *, environ: Mapping[str, str] | None = None) -> tuple[Settings, str]:
    """The config to run: the last config bundle ops pushed (verified and stored by the lane), else `base`.

    `[state]` always stays the local file's, since that is where the pushed file was found. A stored
    config that no longer validates (an upgrade changed a rule) is ignored with a reason, and the local
    file runs (safe mode, as Frigate does): the gate keeps working and ops sees why in the log.
    """
    path = base.state.state_dir / PUSHED_CONFIG
    if not path.exists():
        return base, "local config"
    try:
        pushed = load_settings_text(path.read_text(encoding="utf-8"), source=str(path), environ=environ)
    except (ConfigError, OSError) as exc:
        return base, f"pushed config {path} ignored, running the local file: {exc}"
    return pushed.model_copy(update={"state": base.state}), f"pushed config {path}"
