"""Child process of the SIGKILL test: verifies a bundle, says ready, activates it on 'go'."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import structlog

from egate.edge.gallery.store import GalleryStore
from egate.edge.trust.bundles import VersionState
from egate.edge.trust.keys import TrustStore
from tests.support.gallery_fixtures import GALLERY_KEY, NOW, verifier_for


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    gallery_dir, trust_dir, bundle = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    verified = verifier_for(TrustStore(trust_dir), VersionState(None), max_bytes=256 << 20).verify(
        bundle.read_bytes(), NOW
    )
    store = GalleryStore(gallery_dir, GALLERY_KEY)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    store.activate(verified)
    print(f"done {time.perf_counter() - t0:.6f}", flush=True)


if __name__ == "__main__":
    main()
