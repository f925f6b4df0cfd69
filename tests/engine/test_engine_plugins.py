"""Inference backends are plug-ins: the registry finds the modules in `egate.engines.backends.plugins`,
`[engine]` accepts their names and validates each backend's own `[engine.<name>]` table, a config written
before the TensorRT settings had their table still loads, and a backend module placed on the plug-in path
is all it takes to add a backend (config, docs, creation, diag listing)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from egate.edge.settings import ConfigError, load_settings_text
from egate.engines.backends import plugins
from egate.engines.backends.base import BackendUnavailable
from egate.engines.backends.plugins.tensorrt import TensorRTBackend, TensorRTSettings
from egate.engines.backends.registry import backend_plugins, cpu_backend_names, create_backend
from egate.engines.config import EngineConfig
from egate.tools.models import commands as models_cmd

BASE = '[gate]\nsite_id = "ams"\ngate_id = "g1"\n'


def test_the_registry_lists_exactly_the_modules_in_the_plugin_package() -> None:
    modules = {module.name for module in pkgutil.iter_modules(plugins.__path__)}
    found = backend_plugins()
    assert set(found) == modules == {"onnxruntime", "opencv", "tensorrt"}
    for name, plugin in found.items():
        assert plugin.backend.__module__ == f"{plugins.__name__}.{name}"
    # Helpers stay beside the plug-ins, out of discovery.
    assert not modules & {"base", "registry", "onnx_io", "tensorrt_cache", "jetson_devices"}
    assert cpu_backend_names() == ["onnxruntime", "opencv"]
    assert [name for name, plugin in found.items() if plugin.settings is not None] == ["tensorrt"]


def test_engine_config_is_built_from_the_registry() -> None:
    schema = EngineConfig.model_json_schema()
    assert schema["properties"]["backend"]["enum"] == ["onnxruntime", "opencv", "tensorrt"]
    assert schema["properties"]["fallback_backend"]["enum"] == ["onnxruntime", "opencv"]
    tables = {name for name, prop in schema["properties"].items() if "$ref" in prop or "allOf" in prop}
    assert tables == {"quality", "tensorrt"}
    config = EngineConfig(backend="tensorrt")
    assert config.backend_settings() == {"tensorrt": TensorRTSettings()}
    assert config.settings_of(TensorRTSettings).precision == "auto"


def _only_issue(text: str, environ: dict[str, str] | None = None) -> tuple[str, int | None, str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings_text(text, source="egate.toml", environ=environ or {})
    (issue,) = caught.value.issues
    return issue.key, issue.line, issue.message, issue.source


def _line_of(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if line.startswith(start))


@pytest.mark.parametrize(
    ("table", "key", "at", "words"),
    [
        (
            '[engine]\nthreads = 2\nbackend = "cuda"',
            "engine.backend",
            "backend",
            "no inference backend called 'cuda': use one of onnxruntime, opencv, tensorrt",
        ),
        (
            '[engine]\nfallback_backend = "tensorrt"',
            "engine.fallback_backend",
            "fallback_backend",
            "'tensorrt' runs on a device, which is what fails: the fallback must be a CPU backend, "
            "one of onnxruntime, opencv",
        ),
        (
            '[engine]\nbackend = "tensorrt"\n[engine.tensorrt]\nprecision = "int8"',
            "engine.tensorrt.precision",
            "precision",
            "Input should be 'auto', 'fp16' or 'fp32' (got 'int8')",
        ),
        ("[engine.tensorrt]\nworkspace_mib = 512", "engine.tensorrt.workspace_mib", "workspace_mib", "unknown setting"),
        ("[engine.opencv]\nthreads = 2", "engine.opencv", "[engine.opencv]", "unknown setting"),
        (  # a config written before [engine.tensorrt]: the error is at the key the file has
            '[engine]\ntensorrt_precision = "int8"',
            "engine.tensorrt_precision",
            "tensorrt_precision",
            "(got 'int8') (engine.tensorrt_precision is now written as [engine.tensorrt] precision)",
        ),
        (
            '[engine]\ntensorrt_precision = "fp16"\n[engine.tensorrt]\nprecision = "fp32"',
            "engine.tensorrt_precision",
            "tensorrt_precision",
            "engine.tensorrt_precision is the old name of engine.tensorrt.precision and both are set: "
            "remove engine.tensorrt_precision",
        ),
    ],
)
def test_config_check_names_the_key_and_line_of_a_backend_setting(table: str, key: str, at: str, words: str) -> None:
    text = BASE + table + "\n"
    found_key, line, message, source = _only_issue(text)
    assert (found_key, line, source) == (key, _line_of(text, at), "egate.toml")
    assert words in message


def test_a_backend_named_in_the_environment_is_blamed_on_its_variable() -> None:
    key, line, message, source = _only_issue(BASE, {"EGATE_ENGINE__BACKEND": "cuda"})
    assert (key, line, source) == ("engine.backend", None, "env EGATE_ENGINE__BACKEND")
    assert "use one of onnxruntime, opencv, tensorrt" in message
    key, line, message, source = _only_issue(BASE, {"EGATE_ENGINE__TENSORRT_PRECISION": "int4"})
    assert (key, source) == ("engine.tensorrt_precision", "env EGATE_ENGINE__TENSORRT_PRECISION")


def test_a_config_written_for_the_old_precision_key_still_loads(tmp_path: Path) -> None:
    old = BASE + '[engine]\nbackend = "tensorrt"\ntensorrt_precision = "fp32"\n'
    assert load_settings_text(old).engine.settings_of(TensorRTSettings).precision == "fp32"
    from_env = load_settings_text(BASE, environ={"EGATE_ENGINE__TENSORRT_PRECISION": "fp16"})
    assert from_env.engine.settings_of(TensorRTSettings).precision == "fp16"
    # ...and the build oneshot builds the precision such a file asks for.
    config = tmp_path / "egate.toml"
    config.write_text(old)
    assert models_cmd.configured_precision(config) == "fp32"


def test_the_backend_is_created_with_its_own_settings_and_the_model_cache(tmp_path: Path) -> None:
    settings = load_settings_text(BASE + '[engine]\nbackend = "tensorrt"\n[engine.tensorrt]\nprecision = "fp16"\n')
    backend = TensorRTBackend.configured(settings.engine.settings_of(TensorRTSettings), tmp_path)
    assert (backend.precision, backend.cache_dir) == ("fp16", tmp_path / "tensorrt")
    reason = TensorRTBackend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT runs here: create_backend would not refuse it")
    with pytest.raises(
        BackendUnavailable, match=r"set engine.fallback_backend to a CPU backend \(onnxruntime or opencv\)"
    ):
        create_backend("tensorrt", settings=settings.engine.backend_settings(), model_dir=tmp_path)


def test_validating_config_imports_no_inference_runtime() -> None:
    code = (
        "import sys\n"
        "from egate.edge.settings import Settings\n"
        "Settings()\n"
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'tensorrt', 'pycuda') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.strip() == "[]"


def test_a_module_without_a_backend_in_the_plugin_package_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shapes.py").write_text("SHAPE = (1, 3, 128, 128)\n")
    monkeypatch.setattr(plugins, "__path__", [*plugins.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"{plugins.__name__}.shapes", raising=False)
    backend_plugins.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"plugins\.shapes has no BACKEND = BackendPlugin"):
            backend_plugins()
    finally:
        monkeypatch.undo()
        sys.modules.pop(f"{plugins.__name__}.shapes", None)
        backend_plugins.cache_clear()
    assert set(backend_plugins()) == {"onnxruntime", "opencv", "tensorrt"}


# A whole backend in one module: settings, a session and the plug-in descriptor, nothing else touched.
_EXTRA_BACKEND = '''
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from egate.engines.backends.base import Backend, Session
from egate.engines.backends.registry import BackendPlugin


class ScaledSettings(BaseModel):
    """Multiplies every input (a backend for tests)."""

    model_config = ConfigDict(extra="forbid")

    factor: float = Field(1.0, gt=0, description="What every input is multiplied by.")


class ScaledSession(Session):
    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.input_names, self.output_names = ["x"], ["y"]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [inputs["x"] * self.factor]


class ScaledBackend(Backend):
    name = "scaled"

    def __init__(self, factor: float) -> None:
        self.factor = factor

    @classmethod
    def configured(cls, settings, model_dir):
        return cls(settings.factor)

    def load(self, onnx_path: Path, *, threads: int = 1) -> Session:
        return ScaledSession(self.factor)


BACKEND = BackendPlugin(ScaledBackend, "CPU: multiplies its input", settings=ScaledSettings)
'''

# Runs in a fresh interpreter so the extra plug-in is on the path before the config model is built.
_PROBE = """
import json, sys
from pathlib import Path

import numpy as np

from egate.engines.backends import plugins

plugins.__path__.append(sys.argv[1])

from egate.edge.settings import ConfigError, load_settings_text
from egate.engines.backends.registry import create_backend, describe_backends
from egate.tools.config.doc import render_default_toml

base = '[gate]\\nsite_id = "ams"\\ngate_id = "g1"\\n'
settings = load_settings_text(
    base + '[engine]\\nbackend = "scaled"\\nfallback_backend = "scaled"\\n[engine.scaled]\\nfactor = 3.0\\n', environ={}
)
backend = create_backend(settings.engine.backend, settings=settings.engine.backend_settings())
out = backend.load(Path("unused.onnx")).run({"x": np.array([1.0, 2.0])})[0]
issues = []
for text in ('[engine.scaled]\\nfactor = -1\\n', '[engine]\\nbackend = "nope"\\n'):
    try:
        load_settings_text(base + text, source="egate.toml", environ={})
    except ConfigError as exc:
        issues += [[i.key, i.line, i.message] for i in exc.issues]
print(json.dumps({
    "output": out.tolist(),
    "issues": issues,
    "listed": [row["name"] for row in describe_backends()],
    "documented": "[engine.scaled]\\n# Multiplies every input (a backend for tests).\\n" in render_default_toml(),
}))
"""


def test_a_backend_module_on_the_plugin_path_is_all_a_new_backend_takes(tmp_path: Path) -> None:
    (tmp_path / "scaled.py").write_text(textwrap.dedent(_EXTRA_BACKEND))
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["output"] == [3.0, 6.0]
    assert result["listed"] == ["onnxruntime", "opencv", "scaled", "tensorrt"]
    assert result["documented"]
    assert result["issues"] == [
        ["engine.scaled.factor", 5, "Input should be greater than 0 (got -1)"],
        ["engine.backend", 5, "no inference backend called 'nope': use one of onnxruntime, opencv, scaled, tensorrt"],
    ]
