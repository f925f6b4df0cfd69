"""Helpers shared by the gallery/bundle tests: ops keys, a gate's trust store, signed bundles."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from egate.edge.gallery.payload import SubjectEntry, encode_gallery_payload
from egate.edge.trust.bundles import (
    BundleKind,
    BundleScope,
    BundleVerifier,
    GalleryLayout,
    Scope,
    VersionState,
    sign_bundle,
)
from egate.edge.trust.keys import PublicKeyEntry, TrustStore, key_id_for

MODEL_ID = "dlib_resnet_v1-test"
DIM = 128
GATE = Scope(site="ams", gate="g07")
NOW = datetime(2026, 11, 28, 6, 0, tzinfo=timezone.utc)
GALLERY_KEY = bytes(range(32))


@dataclass
class OpsKey:
    private: Ed25519PrivateKey
    key_id: str

    @property
    def entry(self) -> PublicKeyEntry:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKeyEntry(key_id=self.key_id, public_key=base64.b64encode(raw).decode())


def new_ops_key() -> OpsKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return OpsKey(private, key_id_for(raw))


def trust_with(directory: Path, *keys: OpsKey) -> TrustStore:
    store = TrustStore(directory)
    for key in keys:
        store.install(key.entry)
    return store


def verifier_for(trust: TrustStore, state: VersionState | None = None, max_bytes: int = 64 << 20) -> BundleVerifier:
    return BundleVerifier(trust, GATE, MODEL_ID, max_bytes, state or VersionState(None))


def random_subjects(
    count: int, *, per_subject: int | tuple[int, int] = 1, seed: int = 0, dim: int = DIM
) -> list[SubjectEntry]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = per_subject if isinstance(per_subject, int) else int(rng.integers(per_subject[0], per_subject[1] + 1))
        templates = rng.standard_normal((n, dim)).astype(np.float32)
        templates /= np.linalg.norm(templates, axis=1, keepdims=True)
        out.append(SubjectEntry(f"s{seed}-{i:06d}", templates))
    return out


def gallery_bundle(
    key: OpsKey,
    subjects: list[SubjectEntry],
    *,
    version: int = 1,
    model_id: str = MODEL_ID,
    scope: BundleScope | None = None,
    issued_at: datetime = NOW - timedelta(hours=1),
    expires_at: datetime = NOW + timedelta(hours=6),
) -> bytes:
    payload = encode_gallery_payload(subjects, model_id=model_id, dim=DIM)
    layout = GalleryLayout(
        model_id=model_id,
        dim=DIM,
        subject_count=len(subjects),
        template_count=sum(len(np.atleast_2d(s.templates)) for s in subjects),
    )
    return sign_bundle(
        kind="gallery",
        version=version,
        payload=payload,
        private_key=key.private,
        key_id=key.key_id,
        scope=scope or BundleScope(site=GATE.site),
        issued_at=issued_at,
        expires_at=expires_at,
        gallery=layout,
    )


def plain_bundle(
    key: OpsKey,
    kind: BundleKind,
    payload: bytes,
    *,
    version: int = 1,
    scope: BundleScope | None = None,
    issued_at: datetime = NOW - timedelta(hours=1),
    expires_at: datetime = NOW + timedelta(hours=6),
) -> bytes:
    return sign_bundle(
        kind=kind,
        version=version,
        payload=payload,
        private_key=key.private,
        key_id=key.key_id,
        scope=scope or BundleScope(site=GATE.site),
        issued_at=issued_at,
        expires_at=expires_at,
    )
