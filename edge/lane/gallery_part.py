"""The gallery and the trust it needs, as a lane part: the gate's key, the trust store, the encrypted
gallery (rechecked at start with the push rules), the CSCA trust list and the bundle verifier.

Starts after the engine: the verifier and the gallery's matching policy need the engine's model id and
threshold. A gallery on disk that fails the push rules stays on disk, out of memory, and keeps the lane
out of service until ops pushes a good one.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol

import structlog

from egate.edge.gallery.matching import MatchPolicy
from egate.edge.gallery.store import GalleryExpiryWatcher, GalleryStore
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.part import Part
from egate.edge.service.daemon import Health, StartError
from egate.edge.service.secrets import CredentialError, read_credential
from egate.edge.settings import Settings
from egate.edge.trust.bundles import BundleRejected, BundleVerifier, RejectCode, Scope, VersionState
from egate.edge.trust.csca import CscaStore
from egate.edge.trust.keys import TrustError, TrustStore

log = structlog.get_logger(__name__)


class ModelIdentity(Protocol):
    """What the gallery needs of the loaded engine (`EnginePart` once started)."""

    @property
    def model_id(self) -> str: ...

    @property
    def threshold(self) -> float: ...


class GalleryPart(Part):
    name = "gallery"

    def __init__(self, settings: Settings, engine: ModelIdentity, board: HealthBoard) -> None:
        self._settings = settings
        self._engine = engine
        self._board = board
        self._state_dir = settings.state.state_dir
        self.key = b""
        self._trust: TrustStore | None = None
        self._store: GalleryStore | None = None
        self._csca: CscaStore | None = None
        self._verifier: BundleVerifier | None = None
        self._expiry: GalleryExpiryWatcher | None = None
        self.refused: str | None = None  # why the gallery on disk was refused at start

    @property
    def store(self) -> GalleryStore:
        return self._require(self._store, "the gallery store")

    @property
    def opened(self) -> GalleryStore | None:
        return self._store

    @property
    def trust(self) -> TrustStore:
        return self._require(self._trust, "the trust store")

    @property
    def verifier(self) -> BundleVerifier:
        return self._require(self._verifier, "the bundle verifier")

    @property
    def csca(self) -> CscaStore:
        return self._require(self._csca, "the CSCA trust list")

    def start(self) -> None:
        cfg = self._settings.gallery
        try:
            self.key = read_credential(cfg.key_credential)
        except CredentialError as exc:
            raise StartError(
                f"gallery: {exc}; create it with: head -c 32 /dev/urandom > {cfg.key_credential}"
            ) from None
        try:
            self._trust = TrustStore(self._state_dir / "trust")
        except TrustError as exc:
            raise StartError(f"gallery: {exc}") from None
        if not self._trust.key_ids():
            log.warning(
                "trust_store_empty",
                fix="install the ops public key: egate ops keys install KEY.pub.json --trust-dir "
                f"{self._state_dir / 'trust'}; until then every bundle is refused",
            )
        engine = self._engine
        lane = self._settings.lane
        # One 1:N ambiguity rule: the lane policy's margin over lane.search_k candidates (distances, like
        # the policy's goodness for the euclidean metric).
        policy = MatchPolicy(
            threshold=cfg.threshold or engine.threshold, margin=lane.policy.ambiguity_margin, top_k=lane.search_k
        )
        self._store = GalleryStore(self._state_dir / "gallery", self.key, dtype=cfg.dtype, policy=policy)
        self._csca = CscaStore(self._state_dir / "csca")
        try:
            self._csca.load()
        except Exception as exc:
            # Without a trust list every chip fails Passive Authentication (pa_no_trust_list): refer, not stop.
            log.error("csca_load_failed", error=str(exc), fix="push the csca bundle again from ops")
        self._verifier = BundleVerifier(
            self._trust,
            Scope(site=self._settings.gate.site_id, gate=self._settings.gate.gate_id),
            model_id=engine.model_id,
            max_bytes=cfg.max_bundle_bytes,
            state=VersionState(self._state_dir / "bundle-versions.json"),
            clock_skew=timedelta(seconds=cfg.clock_skew_s),
        )
        self._load(self._store, self._verifier)  # a refusal is reported once the session listens
        self._expiry = GalleryExpiryWatcher(self._store, cfg.expiry_check_interval_s)
        self._expiry.start()

    def _load(self, store: GalleryStore, verifier: BundleVerifier) -> None:
        """The gallery on disk passes the same model, scope and expiry rules as a pushed one, with the same
        codes."""
        now = datetime.now(timezone.utc)
        stored = store.path.exists()
        try:
            g = store.load(now)
        except Exception as exc:
            # A gallery that cannot be read is not fatal: the gate refers everyone until ops pushes again.
            log.error("gallery_load_failed", error=str(exc), fix="push the gallery again from ops")
            return
        if g is None:
            if stored:  # it expired while the gate was down: purged by load(), refused like an expired push
                self.refused = (
                    f"gallery on disk refused ({RejectCode.EXPIRED.value}): it expired and was purged; push a "
                    "current gallery (egate ops gallery build ... && egate ops push ...)"
                )
                log.error("gallery_refused_at_start", code=RejectCode.EXPIRED.value)
            return
        try:
            verifier.recheck(g.header, now)
        except BundleRejected as exc:
            store.close()  # wipes it from memory; the file stays for whoever investigates
            self.refused = (
                f"gallery on disk refused ({exc.code.value}): {exc.message}; push a gallery built for this "
                f"gate and model (egate ops gallery build ... && egate ops push ...)"
            )
            log.error("gallery_refused_at_start", code=exc.code.value, error=exc.message)

    def on_ops_change(self) -> None:
        """After a bundle or command: a good gallery activated clears a gallery refused at start."""
        if self.refused is not None and self._store is not None and self._store.current is not None:
            self.refused = None
            self._board.report("gallery", True, "")

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.close()
        if self._store is not None:
            self._store.close()  # wipes the templates from memory; the encrypted file stays

    def health(self) -> Health:
        if self.refused is not None:
            return Health(False, self.refused)
        g = self._store.current if self._store is not None else None
        if g is None:
            return Health(True, "no gallery: push one from ops")
        return Health(True, f"v{g.version}, {g.subject_count} subjects, expires {g.expires_at.isoformat()}")
