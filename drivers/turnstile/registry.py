"""Gate drivers as plug-ins: `[turnstile] type` picks one of the modules in `egate.drivers.turnstile.gates`.

Each module there exposes `DRIVER = GateDriver(...)`: its config model (a pydantic model whose `type`
field is a one-value Literal naming the driver) and a factory. This module finds them, builds the config
union the settings validate `[turnstile]` against (a missing `type` means OSDP, the driver every config
written before plug-ins used) and builds the configured driver. Nothing else names a driver, so a new gate
controller is one new module, its config model and its tests.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, Discriminator, Tag

from egate.drivers.turnstile import gates
from egate.drivers.turnstile.base import GateController, GateEventCallback
from egate.drivers.turnstile.config import GateDriverConfig

DEFAULT_GATE_DRIVER = "osdp"

# Reads one credential (a file in $CREDENTIALS_DIRECTORY) by name; raises when it is missing.
CredentialReader = Callable[[str], bytes]


class GateSetupError(Exception):
    """The configured driver cannot be built (a missing or malformed credential): message and fix."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class GateDriver:
    """One gate driver plug-in."""

    config_model: type[GateDriverConfig]
    build: Callable[[Any, CredentialReader, GateEventCallback], GateController]
    summary: str

    @property
    def type(self) -> str:
        return str(self.config_model.model_fields["type"].default)


@functools.cache
def gate_drivers() -> dict[str, GateDriver]:
    """Every driver in `egate.drivers.turnstile.gates`, by type name."""
    found: dict[str, GateDriver] = {}
    for module in pkgutil.iter_modules(gates.__path__):
        driver = getattr(importlib.import_module(f"{gates.__name__}.{module.name}"), "DRIVER", None)
        if isinstance(driver, GateDriver):
            if driver.type in found:
                raise RuntimeError(f"two gate drivers are called {driver.type!r}")
            found[driver.type] = driver
    return found


def _driver_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", DEFAULT_GATE_DRIVER))
    return str(getattr(value, "type", DEFAULT_GATE_DRIVER))


def gate_config_annotation() -> Any:
    """The type `[turnstile]` validates against: the union of every driver's config, chosen by `type`."""
    members = tuple(Annotated[d.config_model, Tag(name)] for name, d in sorted(gate_drivers().items()))
    return Annotated[Union[members], Discriminator(_driver_type)]  # noqa: UP007 (a runtime-built union)


def default_gate_config() -> GateDriverConfig:
    config = gate_drivers()[DEFAULT_GATE_DRIVER].config_model.model_validate({})
    assert isinstance(config, GateDriverConfig)
    return config


def build_gate(config: BaseModel, read_credential: CredentialReader, on_event: GateEventCallback) -> GateController:
    """The configured gate driver, not yet started. Raises GateSetupError with a fix hint."""
    driver = gate_drivers().get(_driver_type(config))
    if driver is None:
        raise GateSetupError(
            f"no gate driver {_driver_type(config)!r}", f"set [turnstile] type to one of {sorted(gate_drivers())}"
        )
    return driver.build(config, read_credential, on_event)
