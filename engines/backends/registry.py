"""Inference backends as plug-ins: `engine.backend` names one of the modules in `egate.engines.backends.plugins`.

Each module there exposes `BACKEND = BackendPlugin(...)`: its `Backend` class (whose `name` is what the
config says), a one-line summary and, when the backend has settings, their pydantic model (validated as
the `[engine.<name>]` table). This module finds them, creates the configured backend (or the CPU fallback
when it cannot run here) and loads sessions that fall back model by model. Nothing else names a backend,
so a new one is one new module and its tests.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from egate.engines.backends import plugins
from egate.engines.backends.base import Backend, BackendUnavailable, FallbackSession, Session, is_device_error

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BackendPlugin:
    """One inference backend plug-in."""

    backend: type[Backend]
    summary: str
    # The backend's own settings, the `[engine.<name>]` table; None for a backend without any.
    settings: type[BaseModel] | None = None
    # Settings the backend kept at the top of `[engine]` before it had its own table: the old key there ->
    # its key in the table. Configs written with the old key still load (`EngineConfig` moves them).
    moved_settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def is_device(self) -> bool:
        return self.backend.is_device


@functools.cache
def backend_plugins() -> dict[str, BackendPlugin]:
    """Every backend in `egate.engines.backends.plugins`, by name.

    Every module there must be a plug-in: a module without `BACKEND` is a helper in the wrong place,
    and would otherwise be silently missing from the choices.
    """
    found: dict[str, BackendPlugin] = {}
    for module in pkgutil.iter_modules(plugins.__path__):
        plugin = getattr(importlib.import_module(f"{plugins.__name__}.{module.name}"), "BACKEND", None)
        if not isinstance(plugin, BackendPlugin):
            raise RuntimeError(
                f"{plugins.__name__}.{module.name} has no BACKEND = BackendPlugin(...); "
                f"helpers belong beside {plugins.__name__}, not in it"
            )
        if plugin.name in found:
            raise RuntimeError(f"two inference backends are called {plugin.name!r}")
        found[plugin.name] = plugin
    return found


def cpu_backend_names() -> list[str]:
    """The backends that run on the CPU: what `engine.fallback_backend` may name."""
    return sorted(name for name, plugin in backend_plugins().items() if not plugin.is_device)


def registered_backends() -> dict[str, type[Backend]]:
    return {name: plugin.backend for name, plugin in backend_plugins().items()}


def backend_class(name: str) -> type[Backend]:
    """The backend class called `name`; a KeyError-free error that lists the valid names."""
    backends = registered_backends()
    if name not in backends:
        raise ValueError(f"engine.backend={name!r} is not a known backend; use one of {sorted(backends)}")
    return backends[name]


def _configured(cls: type[Backend], settings: Mapping[str, BaseModel] | None, model_dir: Path | None) -> Backend:
    plugin = backend_plugins()[cls.name]
    own = (settings or {}).get(cls.name)
    if own is None and plugin.settings is not None:
        own = plugin.settings()
    return cls.configured(own, model_dir)


def create_backend(
    name: str,
    fallback: str | None = None,
    *,
    settings: Mapping[str, BaseModel] | None = None,
    model_dir: Path | None = None,
) -> Backend:
    """Backend `name`, or `fallback` when `name` cannot run here (the reason is logged).

    `settings` are the backends' `[engine.<name>]` tables by name (`EngineConfig.backend_settings()`;
    defaults for a backend missing there) and `model_dir` the model cache the sessions load from.
    """
    cls = backend_class(name)
    reason = cls.unavailable_reason()
    if reason is not None:
        if fallback is None or fallback == name:
            raise BackendUnavailable(
                f"engine.backend={name!r} cannot run here: {reason}; "
                f"set engine.fallback_backend to a CPU backend ({' or '.join(cpu_backend_names())})"
            )
        fb_cls = backend_class(fallback)
        fb_reason = fb_cls.unavailable_reason()
        if fb_reason is not None:
            raise BackendUnavailable(
                f"engine.backend={name!r} cannot run here ({reason}) and "
                f"engine.fallback_backend={fallback!r} cannot either ({fb_reason})"
            )
        log.warning("engine_backend_fallback", backend=name, fallback=fallback, reason=reason)
        cls = fb_cls
    return _configured(cls, settings, model_dir)


def load_session(
    backend: Backend,
    onnx_path: Path,
    *,
    threads: int = 1,
    fallback: str | None = None,
    settings: Mapping[str, BaseModel] | None = None,
) -> Session:
    """`backend.load(onnx_path)`, or the `fallback` backend's session when that load is refused.

    A backend can be available in principle and still refuse one model (TensorRT without a built
    engine for it, a CUDA error while deserializing); the gate then runs on the CPU instead of staying
    out of service. A device session is wrapped so that a GPU error while running also moves that
    model to the CPU for good (`FallbackSession`). `settings` configure the fallback (`create_backend`).
    """
    can_fall_back = fallback is not None and fallback != backend.name
    try:
        session = backend.load(onnx_path, threads=threads)
    except Exception as exc:
        if not can_fall_back or not is_device_error(exc):
            raise
        assert fallback is not None  # narrowed by can_fall_back
        reason = f"{backend.name} could not load {onnx_path.name}: {exc}"
        log.warning(
            "engine_backend_fallback", backend=backend.name, fallback=fallback, model=onnx_path.name, reason=str(exc)
        )
        cpu = create_backend(fallback, settings=settings).load(onnx_path, threads=threads)
        cpu.backend_name = fallback
        cpu.fallback_reason = reason
        return cpu
    session.backend_name = backend.name
    if not can_fall_back or not backend.is_device:
        return session
    assert fallback is not None
    cpu_name = fallback
    return FallbackSession(
        session, cpu_name, lambda: create_backend(cpu_name, settings=settings).load(onnx_path, threads=threads)
    )


def describe_backends() -> list[dict[str, Any]]:
    """Every registered backend with `available` and the `reason` when it is not (for diag tools)."""
    rows: list[dict[str, Any]] = []
    for name, cls in sorted(registered_backends().items()):
        reason = cls.unavailable_reason()
        rows.append({"name": name, "available": reason is None, "reason": reason})
    return rows
