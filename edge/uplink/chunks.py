"""Reassembles bundles sent in chunks over MQTT: authenticated first, encrypted at rest, resumable, bounded.

Chunk 0 of a transfer must come first and carry the bundle's signed header (the envelope of
egate.edge.trust.bundles starts with it). The assembler hands it to the authenticator the daemon registers
(signature against the trust store, scope, expiry, rollback, declared size); nothing reaches the disk for a
transfer whose header did not verify. A chunk of a transfer the gate does not know is answered with a
request for chunk 0.

Per transfer, the directory holds:
- `<id>.state.json`: the transfer's geometry (written once, when chunk 0 was authenticated);
- `<id>.have`: one byte per chunk, 1 when the chunk is on disk (one byte written per chunk: O(1));
- `<id>.part`: each chunk sealed with AES-256-GCM (a key derived from the gallery key, a fresh random
  nonce per chunk) in its own fixed-size slot, so no template or subject id is on disk in the clear;
- after completion `<id>.done.json` (the final ack, so a transfer re-sent after completion is answered
  again instead of being activated twice).

The complete bundle is decrypted into memory and checked against the SHA-256 its chunks announce;
the bundle verifier (egate.edge.trust.bundles) then checks the payload against the signed header. Limits: the
declared size (before anything is written), the number of transfers held at once, and an idle age
after which a partial transfer is deleted (checked while running, not only at start).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from egate.edge.uplink.messages import SHA256_PATTERN, BundleAck, BundleChunk

log = structlog.get_logger(__name__)

NONCE_BYTES = 12
TAG_BYTES = 16
MAX_MISSING_RANGES = 32  # ranges listed in one ack; the sender asks again for the rest
_KDF_INFO = b"egate-partial-transfer-v1"


class TransferRefused(Exception):
    """The authenticator refused a transfer's chunk 0. `code` goes to ops in the ack."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


TransferAuthenticator = Callable[[str, bytes, int], None]
"""`authenticate(kind, chunk0_data, total_bytes)`: raise TransferRefused unless chunk 0 starts with a
signed header that this gate accepts for a bundle of exactly `total_bytes`."""


class TransferState(BaseModel):
    """`<id>.state.json`: the geometry of a transfer, written once (version 2)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[2] = 2
    transfer_id: str
    kind: str
    count: int = Field(ge=1)
    chunk_bytes: int = Field(ge=1)
    total_bytes: int = Field(ge=1)
    sha256: str = Field(pattern=SHA256_PATTERN)
    started_at: float
    key_check: str = Field(description="HMAC of the transfer id under the at-rest key: detects a changed key.")


def missing_ranges(have: bytes | bytearray, limit: int = MAX_MISSING_RANGES) -> list[tuple[int, int]]:
    """Inclusive index ranges of the zero bytes in `have`, at most `limit` of them (C-speed scans)."""
    ranges: list[tuple[int, int]] = []
    start = have.find(0)
    while start != -1 and len(ranges) < limit:
        end = have.find(1, start)
        if end == -1:
            ranges.append((start, len(have) - 1))
            break
        ranges.append((start, end - 1))
        start = have.find(0, end)
    return ranges


@dataclass
class Transfer:
    """A partial transfer as held in memory: its geometry, the per-chunk flags and the received count."""

    state: TransferState
    have: bytearray
    received: int
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def transfer_id(self) -> str:
        return self.state.transfer_id

    @property
    def kind(self) -> str:
        return self.state.kind

    @property
    def count(self) -> int:
        return self.state.count

    def received_count(self) -> int:
        return self.received

    def missing_ranges(self) -> list[tuple[int, int]]:
        return missing_ranges(self.have)


@dataclass(frozen=True)
class ChunkResult:
    """What adding a chunk led to. `data` is set for `complete`: the bundle, SHA-256 checked, in memory."""

    status: Literal["stored", "duplicate", "complete", "already_done", "rejected", "need_first"]
    transfer_id: str
    kind: str
    received: int = 0
    count: int = 0
    missing: tuple[tuple[int, int], ...] = ()
    data: bytes | None = field(default=None, repr=False)
    code: str | None = None
    message: str = ""
    done_ack: BundleAck | None = None


class ChunkAssembler:
    """Writes chunks into place; one caller thread (the link's worker), so no locking here.

    `key`: the at-rest key (the gallery key); None uses a random key for this process only, so partial
    transfers are still sealed but cannot be resumed after a restart.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bundle_bytes: int,
        key: bytes | None = None,
        max_transfers: int = 2,
        idle_max_s: float = 6 * 3600,
        authenticator: TransferAuthenticator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._max = max_bundle_bytes
        self._max_transfers = max_transfers
        self._idle_max_s = idle_max_s
        self._clock = clock
        self.authenticator = authenticator
        self._active: dict[str, Transfer] = {}
        self._scanned = False
        self.set_key(key if key is not None else os.urandom(32))

    def set_key(self, key: bytes) -> None:
        """Use `key` (32 bytes) for partial transfers from now on (the daemon passes the gallery key)."""
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(bytes(key))
        self._aead = AESGCM(self._key)
        self._active.clear()
        self._scanned = False

    @property
    def directory(self) -> Path:
        return self._dir

    def _path(self, tid: str, suffix: str) -> Path:
        return self._dir / f"{tid}{suffix}"

    def _key_check(self, tid: str) -> str:
        return hmac.new(self._key, tid.encode(), hashlib.sha256).hexdigest()[:32]

    def _slot(self, state: TransferState) -> int:
        return NONCE_BYTES + state.chunk_bytes + TAG_BYTES

    # ---- loading and bookkeeping -------------------------------------------------------------------

    def _scan(self) -> None:
        """Load the partial transfers on disk once (after a restart), dropping unreadable ones."""
        if self._scanned:
            return
        self._scanned = True
        for path in sorted(self._dir.glob("*.state.json")):
            tid = path.name[: -len(".state.json")]
            if tid not in self._active:
                self._load(tid)

    def _load(self, tid: str) -> Transfer | None:
        try:
            state = TransferState.model_validate_json(self._path(tid, ".state.json").read_bytes())
            have = bytearray(self._path(tid, ".have").read_bytes())
            if len(have) != state.count or not hmac.compare_digest(state.key_check, self._key_check(tid)):
                raise ValueError("flags do not match the transfer, or the at-rest key changed")
            age = time.time() - self._path(tid, ".have").stat().st_mtime
        except (OSError, ValueError, ValidationError) as exc:
            log.warning("bundle_partial_unusable", transfer_id=tid, error=type(exc).__name__)
            self._discard(tid)
            return None
        transfer = Transfer(state, have, have.count(1), last_seen=self._clock() - max(0.0, age))
        self._active[tid] = transfer
        return transfer

    def _discard(self, tid: str) -> None:
        self._active.pop(tid, None)
        for suffix in (".part", ".have", ".state.json", ".state.tmp"):
            self._path(tid, suffix).unlink(missing_ok=True)

    def done_ack(self, tid: str) -> BundleAck | None:
        path = self._path(tid, ".done.json")
        try:
            return BundleAck.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            return None

    def mark_done(self, tid: str, ack: BundleAck) -> None:
        """Record the final ack and drop the transfer's data (the handler has taken what it needs)."""
        path = self._path(tid, ".done.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(ack.model_dump_json().encode())
        os.replace(tmp, path)
        self._discard(tid)

    def incomplete(self) -> list[Transfer]:
        """Transfers with chunks on disk but not all (reported on every connect so the sender resumes)."""
        self._scan()
        return list(self._active.values())

    def expire(self, max_idle_s: float | None = None) -> int:
        """Delete partial transfers idle longer than the limit, and old done records. Returns how many went."""
        self._scan()
        limit = self._idle_max_s if max_idle_s is None else max_idle_s
        now = self._clock()
        removed = 0
        for transfer in list(self._active.values()):
            if now - transfer.last_seen > limit:
                log.info("bundle_transfer_expired", transfer_id=transfer.transfer_id, kind=transfer.kind)
                self._discard(transfer.transfer_id)
                removed += 1
        wall = time.time()
        for path in self._dir.glob("*.done.json"):
            try:
                if wall - path.stat().st_mtime > limit:
                    path.unlink(missing_ok=True)
                    removed += 1
            except OSError:
                continue
        # Leftovers of older layouts or of a crash between files: nothing without a state file is resumable.
        for path in self._dir.iterdir():
            name = path.name
            if name.endswith((".part", ".have", ".bundle", ".tmp")):
                tid = name.rsplit(".", 1)[0]
                if tid not in self._active:
                    path.unlink(missing_ok=True)
        return removed

    # ---- adding a chunk ------------------------------------------------------------------------------

    def add(self, chunk: BundleChunk) -> ChunkResult:
        tid = chunk.transfer_id
        self._scan()
        transfer = self._active.get(tid)
        if transfer is None:
            done = self.done_ack(tid)
            if done is not None:
                return ChunkResult("already_done", tid, chunk.kind, count=chunk.count, done_ack=done)
            started = self._start(chunk)
            if isinstance(started, ChunkResult):
                return started
            transfer = started
        state = transfer.state
        if (state.kind, state.count, state.chunk_bytes, state.total_bytes, state.sha256) != (
            chunk.kind,
            chunk.count,
            chunk.chunk_bytes,
            chunk.total_bytes,
            chunk.sha256,
        ):
            return ChunkResult(
                "rejected",
                tid,
                chunk.kind,
                code="transfer_conflict",
                message=f"chunk {chunk.index} has a different header than transfer {tid}: use a new transfer_id",
            )
        transfer.last_seen = self._clock()
        if transfer.have[chunk.index]:
            return ChunkResult(
                "duplicate", tid, chunk.kind, transfer.received, state.count, tuple(transfer.missing_ranges())
            )
        self._write_chunk(transfer, chunk.index, chunk.data)
        if transfer.received < state.count:
            missing = tuple(transfer.missing_ranges()) if chunk.index == state.count - 1 else ()
            return ChunkResult("stored", tid, chunk.kind, transfer.received, state.count, missing)
        return self._complete(transfer)

    def _start(self, chunk: BundleChunk) -> Transfer | ChunkResult:
        tid = chunk.transfer_id
        if chunk.total_bytes > self._max:
            return ChunkResult(
                "rejected",
                tid,
                chunk.kind,
                code="too_large",
                message=f"bundle of {chunk.total_bytes} bytes exceeds link.max_bundle_bytes={self._max}",
            )
        if chunk.index != 0:
            # Unknown transfer (never started, expired, or refused): only chunk 0 can start it.
            return ChunkResult("need_first", tid, chunk.kind, 0, chunk.count, ((0, 0),), message="send chunk 0 first")
        if self.authenticator is not None:
            try:
                self.authenticator(chunk.kind, bytes(chunk.data), chunk.total_bytes)
            except TransferRefused as exc:
                return ChunkResult("rejected", tid, chunk.kind, count=chunk.count, code=exc.code, message=exc.message)
        if len(self._active) >= self._max_transfers:
            self.expire()
        if len(self._active) >= self._max_transfers:
            return ChunkResult(
                "rejected",
                tid,
                chunk.kind,
                count=chunk.count,
                code="busy",
                message=f"{len(self._active)} transfers in progress (link.max_concurrent_transfers): retry later",
            )
        state = TransferState(
            transfer_id=tid,
            kind=chunk.kind,
            count=chunk.count,
            chunk_bytes=chunk.chunk_bytes,
            total_bytes=chunk.total_bytes,
            sha256=chunk.sha256,
            started_at=time.time(),
            key_check=self._key_check(tid),
        )
        with self._path(tid, ".part").open("wb") as fh:
            fh.truncate(state.count * self._slot(state))  # sparse: space is used as chunks arrive
        self._path(tid, ".have").write_bytes(bytes(state.count))
        tmp = self._path(tid, ".state.tmp")
        with tmp.open("wb") as fh:
            fh.write(state.model_dump_json().encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path(tid, ".state.json"))
        transfer = Transfer(state, bytearray(state.count), 0, last_seen=self._clock())
        self._active[tid] = transfer
        log.info(
            "bundle_transfer_started",
            transfer_id=tid,
            kind=chunk.kind,
            count=chunk.count,
            total_bytes=chunk.total_bytes,
        )
        return transfer

    def _write_chunk(self, transfer: Transfer, index: int, data: bytes) -> None:
        state = transfer.state
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, bytes(data), self._aad(state, index))
        fd = os.open(self._path(state.transfer_id, ".part"), os.O_WRONLY)
        try:
            os.pwrite(fd, nonce + sealed, index * self._slot(state))
            # The flag must never claim a chunk the disk does not hold (power cut between the two writes).
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(self._path(state.transfer_id, ".have"), os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x01", index)
        finally:
            os.close(fd)
        transfer.have[index] = 1
        transfer.received += 1

    def _aad(self, state: TransferState, index: int) -> bytes:
        return json.dumps([state.transfer_id, state.sha256, state.total_bytes, index]).encode()

    def _complete(self, transfer: Transfer) -> ChunkResult:
        state = transfer.state
        tid = state.transfer_id
        out = bytearray(state.total_bytes)
        slot = self._slot(state)
        try:
            with self._path(tid, ".part").open("rb") as fh:
                for index in range(state.count):
                    fh.seek(index * slot)
                    size = min(state.chunk_bytes, state.total_bytes - index * state.chunk_bytes)
                    sealed = fh.read(NONCE_BYTES + size + TAG_BYTES)
                    plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad(state, index))
                    out[index * state.chunk_bytes : index * state.chunk_bytes + size] = plain
        except (OSError, InvalidTag) as exc:
            log.warning("bundle_partial_unreadable", transfer_id=tid, error=type(exc).__name__)
            self._discard(tid)
            return ChunkResult(
                "rejected", tid, state.kind, count=state.count, code="storage_error", message="resend the bundle"
            )
        actual = hashlib.sha256(out).hexdigest()
        self._discard(tid)
        if not hmac.compare_digest(actual, state.sha256):
            log.warning("bundle_sha256_mismatch", transfer_id=tid, expected=state.sha256, actual=actual)
            return ChunkResult(
                "rejected",
                tid,
                state.kind,
                count=state.count,
                code="sha256_mismatch",
                message=f"assembled bundle has SHA-256 {actual}, chunks announced another: resend it",
            )
        log.info("bundle_transfer_complete", transfer_id=tid, kind=state.kind, total_bytes=state.total_bytes)
        return ChunkResult("complete", tid, state.kind, state.count, state.count, data=bytes(out))
