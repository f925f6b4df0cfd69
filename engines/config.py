"""`[engine]` config section: which backend runs the face models and with what thresholds.

Owned by the face-engine work; `egate.edge.settings` composes it into the daemon's config. The backends
are plug-ins (`egate.engines.backends.registry`): `backend` and `fallback_backend` accept the names of the
ones found, and each backend with settings gets its own table, `[engine.<name>]` (`[engine.tensorrt]`),
validated by its own model. `EngineConfig` is therefore built from the registry when this module loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from egate.engines.backends.registry import BackendPlugin, backend_plugins, cpu_backend_names
from egate.engines.quality import QualityThresholds

SettingsModel = TypeVar("SettingsModel", bound=BaseModel)

_FALLBACK_HELP = "CPU backend used when `backend` cannot run here (no TensorRT/CUDA, no built engine)."


class EngineSettings(BaseModel):
    """What `[engine]` has whichever backends exist; `EngineConfig` adds a table per backend with settings."""

    model_config = ConfigDict(extra="forbid")

    backend: str = Field("onnxruntime", description="Inference backend (a module in egate/engines/backends/plugins).")
    fallback_backend: str = Field("onnxruntime", description=_FALLBACK_HELP)
    threads: int = Field(1, ge=1, le=16, description="CPU threads per model session.")
    detector_variant: Literal["short", "full"] = Field(
        "short",
        description="BlazeFace model: short (faces within ~2 m, 128x128, fast) or full (~5 m, 192x192).",
    )
    detector_min_score: float = Field(
        0.5, ge=0.05, le=0.99, description="BlazeFace score below which a candidate is dropped (MediaPipe: 0.5)."
    )
    detector_retry_pad: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description=(
            "When no face is found, detect again inside a black border of this fraction of the longer "
            "side (faces that fill the image, e.g. document portraits); 0 disables the retry."
        ),
    )
    min_face_px: int = Field(
        40, ge=0, le=4000, description="Faces whose detector box is narrower than this (pixels) are ignored."
    )
    quality: QualityThresholds = Field(default_factory=QualityThresholds, description="Live-capture quality gate.")

    @model_validator(mode="before")
    @classmethod
    def _moved_backend_settings(cls, data: Any) -> Any:
        """Backend settings that used to sit at the top of `[engine]` move into their backend's table."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, plugin in backend_plugins().items():
            for old, new in plugin.moved_settings.items():
                if old not in data:
                    continue
                table = data.get(name, {})
                if not isinstance(table, dict):
                    continue  # not a table: validation says so at `[engine.<name>]`
                table = dict(table)
                if new in table:
                    raise ValueError(
                        f"engine.{old} is the old name of engine.{name}.{new} and both are set: remove engine.{old}"
                    )
                table[new] = data.pop(old)
                data[name] = table
        return data

    @field_validator("backend", mode="before")
    @classmethod
    def _a_known_backend(cls, value: Any) -> Any:
        names = sorted(backend_plugins())
        if value not in names:
            raise ValueError(f"no inference backend called {value!r}: use one of {', '.join(names)}")
        return value

    @field_validator("fallback_backend", mode="before")
    @classmethod
    def _a_cpu_backend(cls, value: Any) -> Any:
        cpu = cpu_backend_names()
        if value not in cpu:
            what = "runs on a device, which is what fails" if value in backend_plugins() else "is not a backend"
            raise ValueError(f"{value!r} {what}: the fallback must be a CPU backend, one of {', '.join(cpu)}")
        return value

    def backend_settings(self) -> dict[str, BaseModel]:
        """Every backend's `[engine.<name>]` settings by backend name (backends without settings have none)."""
        return {name: getattr(self, name) for name, plugin in backend_plugins().items() if plugin.settings is not None}

    def settings_of(self, model: type[SettingsModel]) -> SettingsModel:
        """The settings table whose model is `model` (e.g. `TensorRTSettings`), typed as such."""
        for found in self.backend_settings().values():
            if isinstance(found, model):
                return found
        raise KeyError(f"no backend has settings of type {model.__name__}")


def moved_engine_settings() -> dict[tuple[str, str], str]:
    """(backend, its key in `[engine.<backend>]`) -> the key's old name at the top of `[engine]`."""
    return {
        (name, new): old for name, plugin in backend_plugins().items() for old, new in plugin.moved_settings.items()
    }


def _choices(plugins: dict[str, BackendPlugin]) -> str:
    return ", ".join(f"{name} (device)" if plugins[name].is_device else name for name in sorted(plugins))


def _engine_config_model() -> type[EngineSettings]:
    """`EngineSettings` with the registry's names as the choices and one table per backend with settings."""
    plugins = backend_plugins()
    names = tuple(sorted(plugins))
    fields: dict[str, Any] = {
        "backend": (
            Literal[names],  # type: ignore[valid-type]  # the choices are the plug-ins found at run time
            Field("onnxruntime", description=f"Inference backend: {_choices(plugins)}."),
        ),
        "fallback_backend": (
            Literal[tuple(cpu_backend_names())],  # type: ignore[valid-type]
            Field("onnxruntime", description=_FALLBACK_HELP),
        ),
    }
    for name, plugin in sorted(plugins.items()):
        if plugin.settings is None:
            continue
        if name in EngineSettings.model_fields:
            raise RuntimeError(f"inference backend {name!r} has the name of an [engine] setting: rename it")
        fields[name] = (plugin.settings, Field(default_factory=plugin.settings, description=plugin.summary))
    return create_model(
        "EngineConfig",
        __base__=EngineSettings,
        __module__=__name__,
        __doc__="Face engine: inference backend, detector and the live-capture quality gate.",
        **fields,
    )


if TYPE_CHECKING:
    EngineConfig = EngineSettings  # what every EngineConfig has; backend tables via backend_settings()
else:
    EngineConfig = _engine_config_model()
