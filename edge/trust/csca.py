"""The gate's CSCA trust list for Passive Authentication: activated from a verified `csca` bundle,
kept on disk as the signed bundle itself (certificates are public, nothing to encrypt), loaded at
start. Same rules as galleries: only a verified, newer, unexpired bundle is activated (the
`BundleVerifier` enforces version and expiry, the caller records the version after activation),
and an expired trust list is dropped, so Passive Authentication then fails with
`pa_no_trust_list` instead of trusting stale certificates.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

import structlog

from egate.drivers.chip.pa import TrustList
from egate.edge.trust.bundles import BundleRejected, VerifiedBundle, parse_header, split_envelope
from egate.edge.trust.csca_payload import CscaPayloadError, decode_csca_payload
from egate.engines.atomic_file import atomic_write_bytes

log = structlog.get_logger(__name__)

CSCA_FILE_NAME = "csca.bundle"


class CscaStoreError(RuntimeError):
    pass


class CscaStore:
    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self._lock = threading.Lock()
        self._trust: TrustList | None = None
        self._expires_at: datetime | None = None
        self.version: int | None = None

    @property
    def path(self) -> Path:
        return self.dir / CSCA_FILE_NAME

    def trust(self, now: datetime | None = None) -> TrustList | None:
        """The active trust list, or None when there is none or it expired."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            if self._trust is None or self._expires_at is None:
                return None
            if now >= self._expires_at:
                log.warning("csca_expired", version=self.version, expires_at=self._expires_at.isoformat())
                self._trust = None
                return None
            return self._trust

    def load(self) -> TrustList | None:
        """Load the stored bundle at start (already verified when it was activated)."""
        with self._lock:
            if not self.path.exists():
                return None
            raw = self.path.read_bytes()
            try:
                envelope = split_envelope(raw)
                header = parse_header(envelope.header_bytes)
                trust = decode_csca_payload(raw[envelope.payload_offset :])
            except (BundleRejected, CscaPayloadError, ValueError) as exc:
                raise CscaStoreError(f"{self.path} is not a csca bundle ({exc}): delete it and push again") from None
            self._trust, self._expires_at, self.version = trust, header.expires_at, header.version
        log.info("csca_loaded", version=header.version, cscas=len(trust.cscas), crls=len(trust.crls))
        return trust

    def activate(self, verified: VerifiedBundle) -> TrustList:
        if verified.kind != "csca" or not isinstance(verified.content, TrustList):
            raise ValueError(f"CscaStore.activate needs a csca bundle, got kind {verified.kind!r}")
        trust: TrustList = verified.content
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write_bytes(self.path, verified.raw)
            previous = self.version
            self._trust, self._expires_at, self.version = trust, verified.header.expires_at, verified.version
        log.info(
            "csca_activated", version=verified.version, previous=previous, cscas=len(trust.cscas), crls=len(trust.crls)
        )
        return trust
