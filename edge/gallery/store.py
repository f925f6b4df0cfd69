"""The active gallery: encrypted at rest, activated atomically, searched in memory, purged on time.

At rest (`<state_dir>/gallery/gallery.egal`) the file holds the whole verified bundle (signed header
and payload) encrypted with AES-256-GCM under the gate's key, which the daemon reads from
`$CREDENTIALS_DIRECTORY` (systemd `LoadCredentialEncrypted=`, TPM-backed on a device). It is cut in
chunks, each with its own nonce (random 8-byte file prefix + chunk counter) and the file header,
chunk index and a final-chunk flag as associated data, so a reordered, truncated or extended file
fails authentication (the STREAM construction of Hoang, Reyhanitabar, Rogaway, Vizár 2015).
Chunks decrypt straight into one page-aligned buffer the templates are then used from: no copies,
so a million templates load in well under a second.

Activation writes a temp file, fsyncs it, renames it over the old one and fsyncs the folder
(egate.engines.atomic_file): after a crash or power cut the gate finds exactly the old or the new gallery.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from egate.drivers.clock import utc_now
from egate.edge.gallery.matching import (
    Candidate,
    MatchPolicy,
    SearchResult,
    TemplateDtype,
    TemplateMatrix,
    VerifyResult,
    as_query,
    decide_1n,
    decide_1v1,
)
from egate.edge.gallery.payload import DecodedGallery, SubjectTags, decode_gallery_payload
from egate.edge.trust.bundles import BundleHeader, BundleRejected, VerifiedBundle, parse_header, split_envelope
from egate.engines.atomic_file import atomic_output, fsync_dir

log = structlog.get_logger(__name__)

GALLERY_FILE_NAME = "gallery.egal"
STORE_MAGIC = b"EGGS"
STORE_VERSION = 1
_STORE_HEADER = struct.Struct("<4sHHIQ8s")  # magic, version, reserved, chunk size, plaintext length, nonce prefix
CHUNK_BYTES = 16 * 1024 * 1024
TAG_BYTES = 16
DEFAULT_POLICY = MatchPolicy(threshold=0.6, margin=0.04, top_k=5)


class GalleryStoreError(RuntimeError):
    """The gallery on disk cannot be used; the message says why and what to do."""


class GalleryUnavailable(RuntimeError):
    """The gallery was purged, replaced or has expired: take `GalleryStore.current` again."""


def parse_gallery_key(data: bytes, name: str = "gallery.key") -> bytes:
    """The AES-256 key from a credential file: 32 raw bytes, or 64 hex digits (whitespace ignored)."""
    if len(data) == 32:
        return bytes(data)
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise GalleryStoreError(
        f"credential {name!r} must hold a 32-byte AES-256 key (raw, or 64 hex digits), got {len(data)} bytes: "
        f"create one with `head -c 32 /dev/urandom > {name}`"
    )


# --------------------------------------------------------------------------------------------------
# Encryption at rest


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack("<IB", index, 1 if final else 0)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def write_encrypted(path: Path, plaintext: bytes | memoryview, key: bytes, chunk: int = CHUNK_BYTES) -> None:
    """Encrypt `plaintext` into `path` atomically (temp file, fsync, rename, fsync folder)."""
    aead = AESGCM(key)
    data = memoryview(plaintext)
    header = _STORE_HEADER.pack(STORE_MAGIC, STORE_VERSION, 0, chunk, len(data), os.urandom(8))
    prefix = header[-8:]
    count = max(1, -(-len(data) // chunk))
    out = bytearray(min(chunk, len(data)) + TAG_BYTES)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        for index in range(count):
            piece = data[index * chunk : (index + 1) * chunk]
            target = memoryview(out)[: len(piece) + TAG_BYTES]
            aead.encrypt_into(_nonce(prefix, index), piece, _aad(header, index, index == count - 1), target)
            fh.write(target)


def read_encrypted(path: Path, key: bytes) -> np.ndarray:
    """Decrypt `path` into a fresh writable uint8 buffer (so a purge can overwrite it)."""
    aead = AESGCM(key)
    with open(path, "rb") as fh:
        header = fh.read(_STORE_HEADER.size)
        if len(header) != _STORE_HEADER.size:
            raise GalleryStoreError(f"gallery file {path} is truncated: purge it and push the gallery again")
        magic, version, _, chunk, length, prefix = _STORE_HEADER.unpack(header)
        if magic != STORE_MAGIC or version != STORE_VERSION or chunk < 1:
            raise GalleryStoreError(f"{path} is not an egate gallery file (version {STORE_VERSION})")
        expected = _STORE_HEADER.size + length + TAG_BYTES * max(1, -(-length // chunk))
        if os.fstat(fh.fileno()).st_size != expected:
            raise GalleryStoreError(
                f"gallery file {path} has the wrong size (damaged or truncated): purge it and push the gallery again"
            )
        out = np.empty(length, dtype=np.uint8)
        count = max(1, -(-length // chunk))
        buf = bytearray(min(chunk, length) + TAG_BYTES)
        for index in range(count):
            start = index * chunk
            size = min(chunk, length - start)
            piece = memoryview(buf)[: size + TAG_BYTES]
            if fh.readinto(piece) != len(piece):
                raise GalleryStoreError(f"gallery file {path} ended early: purge it and push the gallery again")
            try:
                aead.decrypt_into(
                    _nonce(prefix, index),
                    piece,
                    _aad(header, index, index == count - 1),
                    memoryview(out[start : start + size]),  # type: ignore[arg-type]
                )
            except InvalidTag:
                out.fill(0)
                raise GalleryStoreError(
                    f"gallery file {path} does not decrypt: the gallery key credential changed or the file was "
                    "altered. Purge it (`egate ops ...` purge command or delete the file) and push the gallery again"
                ) from None
    return out


# --------------------------------------------------------------------------------------------------
# In-memory gallery


class Gallery:
    """One activated gallery in memory. Thread-safe; `close()` wipes it and later calls raise."""

    def __init__(
        self,
        header: BundleHeader,
        buffer: np.ndarray,
        payload_offset: int,
        *,
        dtype: TemplateDtype = "float32",
        policy: MatchPolicy = DEFAULT_POLICY,
    ) -> None:
        self.header = header
        self.policy = policy
        self._lock = threading.RLock()
        self._closed = False
        decoded = decode_gallery_payload(buffer[payload_offset:], check_values=False)
        self._payload = buffer[payload_offset:]
        self._decoded: DecodedGallery = decoded
        self._matrix = TemplateMatrix(decoded.templates, decoded.offsets, dtype)
        self._buffer: np.ndarray | None = buffer
        self._tags: dict[int, SubjectTags] = decoded.tags
        self._index: dict[str, int] | None = None

    @classmethod
    def from_verified(
        cls, verified: VerifiedBundle, *, dtype: TemplateDtype = "float32", policy: MatchPolicy = DEFAULT_POLICY
    ) -> Gallery:
        buffer = np.frombuffer(verified.raw, dtype=np.uint8).copy()
        return cls(verified.header, buffer, verified.payload_offset, dtype=dtype, policy=policy)

    # ---- facts for status, logs and diag (no content)
    @property
    def version(self) -> int:
        return self.header.version

    @property
    def model_id(self) -> str:
        assert self.header.gallery is not None
        return self.header.gallery.model_id

    @property
    def dim(self) -> int:
        return self._matrix.dim

    @property
    def expires_at(self) -> datetime:
        return self.header.expires_at

    @property
    def subject_count(self) -> int:
        return self._decoded.meta.subject_count

    @property
    def template_count(self) -> int:
        return self._decoded.meta.template_count

    @property
    def payload_sha256(self) -> str:
        return self.header.payload_sha256

    @property
    def memory_bytes(self) -> int:
        return self._matrix.nbytes + (0 if self._buffer is None else self._buffer.nbytes)

    def expired(self, now: datetime) -> bool:
        return now >= self.header.expires_at

    def subject_ids(self) -> list[str]:
        with self._lock:
            self._check_open(None)
            return self._decoded.subject_ids()

    def has_subject(self, subject_id: str) -> bool:
        return self._subject_index(subject_id) is not None

    # ---- matching
    def search(
        self,
        descriptor: np.ndarray,
        k: int | None = None,
        *,
        now: datetime | None = None,
        flight: str | None = None,
        lane: str | None = None,
        flights: Sequence[str] | None = None,
        policy: MatchPolicy | None = None,
    ) -> SearchResult:
        """1:N: the `k` nearest eligible subjects and the decision (threshold and margin rule).

        Eligible: inside the subject's validity window at `now` (default: the current time), tagged
        with `flight` when one is given, tagged with one of `flights` or with no flight tag when those
        are given (the lane's scope: an untagged gallery matches everyone), and tagged with `lane` or
        with no lane tag at all.
        """
        policy = policy or self.policy
        k = k or policy.top_k
        now = now or datetime.now(timezone.utc)
        q = as_query(descriptor, self.dim)
        with self._lock:
            self._check_open(now)
            mask = self._eligible(now, flight, lane, flights)
            rows = None if mask is None else self._matrix.rows_mask(mask)
            found = self._matrix.nearest_subjects(q, max(k, 2), rows)
            candidates = tuple(Candidate(self._decoded.subject_id(s), d) for s, d in found[:k])
            second = found[1][1] if len(found) > 1 else None
        return decide_1n(candidates, second, policy)

    def verify(
        self,
        descriptor: np.ndarray,
        subject_id: str,
        *,
        now: datetime | None = None,
        lane: str | None = None,
        policy: MatchPolicy | None = None,
    ) -> VerifyResult:
        """1:1: compare with every template of `subject_id`; the best distance decides."""
        policy = policy or self.policy
        now = now or datetime.now(timezone.utc)
        q = as_query(descriptor, self.dim)
        index = self._subject_index(subject_id)
        with self._lock:
            self._check_open(now)
            if index is None:
                return VerifyResult(False, subject_id, "unknown_subject", None, (), policy.threshold)
            mask = self._eligible(now, None, lane)
            if mask is not None and not mask[index]:
                return VerifyResult(False, subject_id, "not_eligible", None, (), policy.threshold)
            distances = self._matrix.subject_distances(q, index)
        return decide_1v1(subject_id, distances, policy)

    def _check_open(self, now: datetime | None) -> None:
        if self._closed:
            raise GalleryUnavailable(f"gallery version {self.header.version} was purged or replaced")
        if now is not None and self.expired(now):
            raise GalleryUnavailable(
                f"gallery version {self.header.version} expired at {self.header.expires_at.isoformat()}"
            )

    def _subject_index(self, subject_id: str) -> int | None:
        with self._lock:
            self._check_open(None)
            if self._index is None:
                # Built on first 1:1 use only: a 1:N-only gate with a million subjects never pays for it.
                self._index = {sid: i for i, sid in enumerate(self._decoded.subject_ids())}
            return self._index.get(subject_id)

    def scope_of(self, subject_id: str, *, lane: str | None, flights: Sequence[str]) -> str | None:
        """Why `subject_id` is outside a lane's scope: "lane", "flight", or None when it is inside (or
        unknown). Same rule as `search`: untagged subjects are eligible everywhere."""
        index = self._subject_index(subject_id)
        with self._lock:
            tags = self._tags.get(index) if index is not None else None
        if tags is None:
            return None
        if lane is not None and tags.lanes and lane not in tags.lanes:
            return "lane"
        if flights and tags.flights and not set(flights) & {f.upper() for f in tags.flights}:
            return "flight"
        return None

    def _eligible(
        self, now: datetime, flight: str | None, lane: str | None, flights: Sequence[str] | None = None
    ) -> np.ndarray | None:
        d = self._decoded
        mask: np.ndarray | None = None
        if d.valid_from is not None and d.valid_until is not None:
            t = int(now.timestamp())
            mask = (d.valid_from <= t) & (t < d.valid_until)
        if flight is not None:
            tagged = np.zeros(self.subject_count, dtype=bool)
            tagged[[i for i, tags in self._tags.items() if flight in tags.flights]] = True
            mask = tagged if mask is None else mask & tagged
        if flights:
            wanted = {f.upper() for f in flights}
            off = [
                i for i, tags in self._tags.items() if tags.flights and not wanted & {f.upper() for f in tags.flights}
            ]
            if off:
                allowed = np.ones(self.subject_count, dtype=bool)
                allowed[off] = False
                mask = allowed if mask is None else mask & allowed
        if lane is not None:
            barred = [i for i, tags in self._tags.items() if tags.lanes and lane not in tags.lanes]
            if barred:
                allowed = np.ones(self.subject_count, dtype=bool)
                allowed[barred] = False
                mask = allowed if mask is None else mask & allowed
        return mask

    def close(self) -> None:
        """Wipe the templates and ids from memory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._matrix.wipe()
            if self._buffer is not None:
                self._buffer.fill(0)
            self._buffer = None
            self._index = None
            self._tags = {}

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Store


class GalleryStore:
    """The gallery folder of the state dir: activate, load at start, purge. Thread-safe.

    `key` is the 32-byte AES-256 key (the daemon reads it with `read_credential`).
    """

    def __init__(
        self,
        dir: Path,
        key: bytes,
        *,
        dtype: TemplateDtype = "float32",
        policy: MatchPolicy = DEFAULT_POLICY,
    ) -> None:
        self.dir = Path(dir)
        self._key = parse_gallery_key(key)
        self._dtype: TemplateDtype = dtype
        self._policy = policy
        self._lock = threading.Lock()
        self._current: Gallery | None = None
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A crash during activation can leave the temp file behind (never the live name): drop it.
        for leftover in self.dir.glob(f".{GALLERY_FILE_NAME}.*.tmp"):
            leftover.unlink(missing_ok=True)

    @property
    def path(self) -> Path:
        return self.dir / GALLERY_FILE_NAME

    @property
    def current(self) -> Gallery | None:
        return self._current

    @property
    def current_version(self) -> int | None:
        gallery = self._current
        return None if gallery is None else gallery.version

    def load(self, now: datetime | None = None) -> Gallery | None:
        """Load the gallery from disk (at start). None when there is none; purged if it expired."""
        now = now or datetime.now(timezone.utc)
        with self._lock:
            if not self.path.exists():
                return None
            buffer = read_encrypted(self.path, self._key)
            try:
                envelope = split_envelope(memoryview(buffer))  # type: ignore[arg-type]
                header = parse_header(envelope.header_bytes)
                gallery = Gallery(header, buffer, envelope.payload_offset, dtype=self._dtype, policy=self._policy)
            except (BundleRejected, ValueError) as exc:
                buffer.fill(0)
                raise GalleryStoreError(
                    f"gallery file {self.path} decrypts but is not a gallery bundle ({exc}): purge it and push again"
                ) from None
            self._swap(gallery)
        if gallery.expired(now):
            self.purge("expired")
            return None
        log.info(
            "gallery_loaded",
            version=gallery.version,
            subjects=gallery.subject_count,
            templates=gallery.template_count,
            expires_at=gallery.expires_at.isoformat(),
        )
        return gallery

    def activate(self, verified: VerifiedBundle) -> Gallery:
        """Persist (encrypted, atomically) and switch to a verified gallery bundle.

        The caller then records the version with `BundleVerifier.accept(verified)`.
        """
        if verified.kind != "gallery":
            raise ValueError(f"GalleryStore.activate needs a gallery bundle, got kind {verified.kind!r}")
        gallery = Gallery.from_verified(verified, dtype=self._dtype, policy=self._policy)
        with self._lock:
            try:
                write_encrypted(self.path, verified.raw, self._key)
            except BaseException:
                gallery.close()
                raise
            old = self._swap(gallery)
        log.info(
            "gallery_activated",
            version=gallery.version,
            previous=None if old is None else old,
            subjects=gallery.subject_count,
            templates=gallery.template_count,
            expires_at=gallery.expires_at.isoformat(),
        )
        return gallery

    def _swap(self, gallery: Gallery | None) -> int | None:
        old, self._current = self._current, gallery
        if old is None:
            return None
        old.close()
        return old.version

    def purge(self, reason: str) -> bool:
        """Delete the gallery from disk and wipe it from memory. Logged with counts, never content."""
        with self._lock:
            gallery = self._current
            existed = self.path.exists()
            self.path.unlink(missing_ok=True)
            if existed:
                fsync_dir(self.dir)
            self._swap(None)
        if gallery is None and not existed:
            return False
        log.warning(
            "gallery_purged",
            reason=reason,
            version=None if gallery is None else gallery.version,
            subjects=None if gallery is None else gallery.subject_count,
            templates=None if gallery is None else gallery.template_count,
        )
        return True

    def purge_if_expired(self, now: datetime) -> bool:
        gallery = self._current
        if gallery is not None and gallery.expired(now):
            return self.purge("expired")
        return False

    def close(self) -> None:
        """Wipe the in-memory gallery (the file stays for the next start)."""
        with self._lock:
            self._swap(None)

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GalleryExpiryWatcher:
    """Purges the active gallery once it expires; checks every `interval_s` (gallery config)."""

    def __init__(
        self,
        store: GalleryStore,
        interval_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._interval = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gallery-expiry", daemon=True)
            self._thread.start()

    def check_now(self) -> bool:
        return self._store.purge_if_expired(self._clock())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check_now()
            except Exception:  # keep watching: one failed purge must not end expiry checks
                log.exception("gallery_expiry_check_failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GalleryExpiryWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
