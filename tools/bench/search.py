"""`egate bench search`: 1:N search speed, memory and load time, beside faiss-cpu on the same data.

Synthetic unit vectors of the model's dimension, one template per subject. The gallery goes the
whole real way: payload, signed bundle, verification, encrypted activation; then it is loaded back
from the encrypted file (timed) and searched one query at a time (the lane's pattern). faiss'
flat L2 index (a dev extra) runs on the same vectors and queries in the same process.
"""

from __future__ import annotations

import gc
import importlib
import json
import re
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from egate.edge.gallery.matching import MatchPolicy, TemplateDtype
from egate.edge.gallery.payload import encode_gallery_arrays
from egate.edge.gallery.store import GalleryStore
from egate.edge.trust.bundles import BundleScope, BundleVerifier, GalleryLayout, Scope, VersionState, sign_bundle
from egate.edge.trust.keys import PublicKeyEntry, TrustStore, key_id_for

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")
BENCH_MODEL = "bench-synthetic"


def parse_gallery_size(text: str) -> int:
    """`1k`, `10k`, `100k`, `1M` or a plain number."""
    match = _SIZE.match(text.strip())
    if not match:
        raise typer.BadParameter(f"gallery size {text!r}: use a number or 1k, 10k, 100k, 1M")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    value = int(float(match.group(1)) * scale)
    if not 2 <= value <= 20_000_000:
        raise typer.BadParameter("gallery size must be between 2 and 20M")
    return value


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def synthetic_templates(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65_536):
        block = rng.standard_normal((min(65_536, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def synthetic_queries(templates: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Half are noisy copies of gallery vectors (a traveller who is there), half random (one who is not)."""
    rng = np.random.default_rng(seed + 1)
    n, dim = templates.shape
    near = templates[rng.integers(0, n, count - count // 2)] + rng.normal(0, 0.02, (count - count // 2, dim))
    far = rng.standard_normal((count // 2, dim))
    queries = np.concatenate([near, far]).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 95)), 3)


def run_search_bench(
    n: int, *, dim: int = 128, queries: int = 200, dtype: TemplateDtype = "float32", seed: int = 7
) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="egate-bench-") as tmp:
        root = Path(tmp)
        key = Ed25519PrivateKey.generate()
        raw_pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        import base64

        entry = PublicKeyEntry(key_id=key_id_for(raw_pub), public_key=base64.b64encode(raw_pub).decode())
        trust = TrustStore(root / "trust")
        trust.install(entry)
        gallery_key = np.random.default_rng(seed).bytes(32)

        templates = synthetic_templates(n, dim, seed)
        q = synthetic_queries(templates, queries, seed)
        ids = [f"t{i:08d}" for i in range(n)]
        payload = encode_gallery_arrays(templates, np.arange(n + 1), ids, model_id=BENCH_MODEL)
        del templates, ids
        bundle = sign_bundle(
            kind="gallery",
            version=1,
            payload=payload,
            private_key=key,
            key_id=entry.key_id,
            scope=BundleScope(site="bench"),
            issued_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(hours=1),
            gallery=GalleryLayout(model_id=BENCH_MODEL, dim=dim, subject_count=n, template_count=n),
        )
        del payload
        verifier = BundleVerifier(trust, Scope(site="bench", gate="g1"), BENCH_MODEL, len(bundle), VersionState(None))
        policy = MatchPolicy(threshold=0.6, margin=0.04, top_k=5)
        with GalleryStore(root / "gallery", gallery_key, dtype=dtype, policy=policy) as store:
            store.activate(verifier.verify(bundle, now))
        del bundle
        gc.collect()

        rss_before = _rss_bytes()
        started = time.perf_counter()
        store = GalleryStore(root / "gallery", gallery_key, dtype=dtype, policy=policy)
        gallery = store.load(now)
        load_s = time.perf_counter() - started
        rss_mb = (_rss_bytes() - rss_before) / 2**20
        assert gallery is not None

        for query in q[:3]:  # warm caches and BLAS threads
            gallery.search(query, 5, now=now)
        egate_times: list[float] = []
        egate_top1: list[int] = []
        for query in q:
            t0 = time.perf_counter()
            result = gallery.search(query, 5, now=now)
            egate_times.append(time.perf_counter() - t0)
            egate_top1.append(int(result.candidates[0].subject_id[1:]))
        store.close()

    faiss_part: dict[str, float] | None = None
    identical: bool | None = None
    try:
        faiss: Any = importlib.import_module("faiss")  # a dev extra: absent on gates
    except ImportError:
        faiss = None
    if faiss is not None:
        index = faiss.IndexFlatL2(dim)
        index.add(synthetic_templates(n, dim, seed))
        for query in q[:3]:
            index.search(query[None, :], 5)
        faiss_times: list[float] = []
        faiss_top1: list[int] = []
        for query in q:
            t0 = time.perf_counter()
            _, labels = index.search(query[None, :], 5)
            faiss_times.append(time.perf_counter() - t0)
            faiss_top1.append(int(labels[0, 0]))
        p50, p95 = _percentiles(faiss_times)
        faiss_part = {"p50_ms": p50, "p95_ms": p95}
        identical = faiss_top1 == egate_top1
        del index

    p50, p95 = _percentiles(egate_times)
    return {
        "gallery": n,
        "dim": dim,
        "egate": {"p50_ms": p50, "p95_ms": p95, "load_s": round(load_s, 3), "rss_mb": round(rss_mb, 1)},
        "faiss": faiss_part,
        "identical_top1": identical,
    }


def register(app: typer.Typer) -> None:
    """Add `search` to the `bench` group."""

    @app.command("search")
    def search(
        gallery: str = typer.Option("10k", "--gallery", help="Gallery size: 1k, 10k, 100k, 1M or a number."),
        queries: int = typer.Option(200, "--queries", min=10, max=100_000, help="Single queries timed."),
        dim: int = typer.Option(128, "--dim", min=2, max=4096, help="Descriptor length (the model's: 128)."),
        dtype: str = typer.Option("float32", "--dtype", help="In-memory template type: float32 or float16."),
        seed: int = typer.Option(7, "--seed", help="Seed of the synthetic data."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """1:N search latency, memory and encrypted-load time, beside a faiss flat index."""
        if dtype not in ("float32", "float16"):
            raise typer.BadParameter("--dtype must be float32 or float16")
        n = parse_gallery_size(gallery)
        result = run_search_bench(n, dim=dim, queries=queries, dtype=dtype, seed=seed)  # type: ignore[arg-type]
        if json_out:
            typer.echo(json.dumps(result))
            return
        from rich.console import Console
        from rich.table import Table

        eg = result["egate"]
        table = Table(title=f"1:N search, {n:,} templates x {dim}")
        table.add_column("")
        table.add_column("p50 ms", justify="right")
        table.add_column("p95 ms", justify="right")
        table.add_column("GB/s scanned", justify="right")
        scanned = n * dim * (2 if dtype == "float16" else 4)
        table.add_row("egate", str(eg["p50_ms"]), str(eg["p95_ms"]), f"{scanned / eg['p50_ms'] / 1e6:.1f}")
        if result["faiss"]:
            fa = result["faiss"]
            table.add_row("faiss flat", str(fa["p50_ms"]), str(fa["p95_ms"]), f"{n * dim * 4 / fa['p50_ms'] / 1e6:.1f}")
        console = Console()
        console.print(table)
        console.print(
            f"load from encrypted file {eg['load_s']} s, resident +{eg['rss_mb']} MB, "
            f"identical top-1: {result['identical_top1']}"
        )
