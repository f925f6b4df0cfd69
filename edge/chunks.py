"""Reassembles bundles sent in chunks over MQTT, on disk, resumable across reconnects and restarts.

Per transfer, the directory holds `<id>.part` (the bundle being written at its chunk offsets),
`<id>.state.json` (which chunks are in), and after completion `<id>.done.json` (the final ack, so a
transfer re-sent after completion is answered again instead of being activated twice). A complete
bundle is checked against the SHA-256 its chunks announce before anyone sees it; signature checks
belong to the bundle verifier the daemon registers (edge.bundles).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from edge.messages import SHA256_PATTERN, BundleAck, BundleChunk

log = structlog.get_logger(__name__)

_READ_BLOCK = 1024 * 1024


class TransferState(BaseModel):
    """`<id>.state.json`: header of a transfer and the bitmap of received chunks (version 1)."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    transfer_id: str
    kind: str
    count: int = Field(ge=1)
    chunk_bytes: int = Field(ge=1)
    total_bytes: int = Field(ge=1)
    sha256: str = Field(pattern=SHA256_PATTERN)
    started_at: float
    received: str = Field(pattern=r"^([0-9a-f]{2})*$", description="Hex bitmap, bit i set when chunk i is on disk.")

    def bitmap(self) -> bytearray:
        return bytearray.fromhex(self.received)

    def has(self, index: int) -> bool:
        return bool(self.bitmap()[index // 8] & (1 << (index % 8)))

    def received_count(self) -> int:
        return sum(bin(byte).count("1") for byte in self.bitmap())

    def missing_ranges(self) -> list[tuple[int, int]]:
        ranges: list[tuple[int, int]] = []
        start: int | None = None
        bits = self.bitmap()
        for index in range(self.count):
            if not bits[index // 8] & (1 << (index % 8)):
                if start is None:
                    start = index
            elif start is not None:
                ranges.append((start, index - 1))
                start = None
        if start is not None:
            ranges.append((start, self.count - 1))
        return ranges


@dataclass(frozen=True)
class ChunkResult:
    """What adding a chunk led to. `path` is set for `complete`: the verified bundle file."""

    status: Literal["stored", "duplicate", "complete", "already_done", "rejected"]
    transfer_id: str
    kind: str
    received: int = 0
    count: int = 0
    missing: tuple[tuple[int, int], ...] = ()
    path: Path | None = None
    code: str | None = None
    message: str = ""
    done_ack: BundleAck | None = None


class ChunkAssembler:
    """Writes chunks into place; one caller thread (the link's worker), so no locking here."""

    def __init__(self, directory: Path, *, max_bundle_bytes: int) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._max = max_bundle_bytes
        self._states: dict[str, TransferState] = {}

    @property
    def directory(self) -> Path:
        return self._dir

    def _part(self, tid: str) -> Path:
        return self._dir / f"{tid}.part"

    def _state_path(self, tid: str) -> Path:
        return self._dir / f"{tid}.state.json"

    def _done_path(self, tid: str) -> Path:
        return self._dir / f"{tid}.done.json"

    def _bundle_path(self, tid: str) -> Path:
        return self._dir / f"{tid}.bundle"

    def _load(self, tid: str) -> TransferState | None:
        state = self._states.get(tid)
        if state is not None:
            return state
        path = self._state_path(tid)
        if not path.exists() or not self._part(tid).exists():
            return None
        try:
            state = TransferState.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("bundle_state_unreadable", transfer_id=tid, error=str(exc))
            self._discard(tid)
            return None
        self._states[tid] = state
        return state

    def _save(self, state: TransferState) -> None:
        path = self._state_path(state.transfer_id)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(state.model_dump_json().encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _discard(self, tid: str) -> None:
        self._states.pop(tid, None)
        for path in (self._part(tid), self._state_path(tid), self._bundle_path(tid)):
            path.unlink(missing_ok=True)

    def done_ack(self, tid: str) -> BundleAck | None:
        path = self._done_path(tid)
        if not path.exists():
            return None
        try:
            return BundleAck.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            return None

    def mark_done(self, tid: str, ack: BundleAck) -> None:
        """Record the final ack and drop the transfer's data (the handler has taken what it needs)."""
        path = self._done_path(tid)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(ack.model_dump_json().encode())
        os.replace(tmp, path)
        self._discard(tid)

    def add(self, chunk: BundleChunk) -> ChunkResult:
        tid = chunk.transfer_id
        done = self.done_ack(tid)
        if done is not None:
            return ChunkResult("already_done", tid, chunk.kind, count=chunk.count, done_ack=done)
        if chunk.total_bytes > self._max:
            return ChunkResult(
                "rejected",
                tid,
                chunk.kind,
                code="too_large",
                message=f"bundle of {chunk.total_bytes} bytes exceeds link.max_bundle_bytes={self._max}",
            )
        state = self._load(tid)
        if state is None:
            state = TransferState(
                transfer_id=tid,
                kind=chunk.kind,
                count=chunk.count,
                chunk_bytes=chunk.chunk_bytes,
                total_bytes=chunk.total_bytes,
                sha256=chunk.sha256,
                started_at=time.time(),
                received=bytes((chunk.count + 7) // 8).hex(),
            )
            with self._part(tid).open("wb") as fh:
                fh.truncate(chunk.total_bytes)
            self._states[tid] = state
            log.info(
                "bundle_transfer_started",
                transfer_id=tid,
                kind=chunk.kind,
                count=chunk.count,
                total_bytes=chunk.total_bytes,
            )
        elif (state.kind, state.count, state.chunk_bytes, state.total_bytes, state.sha256) != (
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
                message=f"chunk {chunk.index} of transfer {tid} has a different header than the chunks "
                "already received: send a new transfer_id for a new bundle",
            )
        if state.has(chunk.index):
            return ChunkResult(
                "duplicate", tid, chunk.kind, state.received_count(), state.count, tuple(state.missing_ranges())
            )
        with self._part(tid).open("r+b") as fh:
            fh.seek(chunk.index * chunk.chunk_bytes)
            fh.write(chunk.data)
            fh.flush()
            # The bitmap must never claim a chunk the disk does not hold (power cut between the two writes).
            os.fsync(fh.fileno())
        bitmap = state.bitmap()
        bitmap[chunk.index // 8] |= 1 << (chunk.index % 8)
        state = state.model_copy(update={"received": bitmap.hex()})
        self._states[tid] = state
        self._save(state)
        received = state.received_count()
        if received < state.count:
            return ChunkResult("stored", tid, chunk.kind, received, state.count, tuple(state.missing_ranges()))
        return self._complete(state)

    def _complete(self, state: TransferState) -> ChunkResult:
        tid = state.transfer_id
        digest = hashlib.sha256()
        with self._part(tid).open("rb") as fh:
            while block := fh.read(_READ_BLOCK):
                digest.update(block)
        actual = digest.hexdigest()
        if not hmac.compare_digest(actual, state.sha256):
            log.warning("bundle_sha256_mismatch", transfer_id=tid, expected=state.sha256, actual=actual)
            self._discard(tid)
            return ChunkResult(
                "rejected",
                tid,
                state.kind,
                count=state.count,
                code="sha256_mismatch",
                message=f"assembled bundle has SHA-256 {actual}, chunks announced {state.sha256}: resend it",
            )
        final = self._bundle_path(tid)
        os.replace(self._part(tid), final)
        self._state_path(tid).unlink(missing_ok=True)
        self._states.pop(tid, None)
        log.info("bundle_transfer_complete", transfer_id=tid, kind=state.kind, total_bytes=state.total_bytes)
        return ChunkResult("complete", tid, state.kind, state.count, state.count, path=final)

    def incomplete(self) -> list[TransferState]:
        """Transfers with chunks on disk but not all (reported on every connect so the sender resumes)."""
        found = []
        for path in sorted(self._dir.glob("*.state.json")):
            tid = path.name[: -len(".state.json")]
            state = self._load(tid)
            if state is not None:
                found.append(state)
        return found

    def cleanup(self, max_age_s: float, now: float | None = None) -> int:
        """Delete partial transfers and done records older than `max_age_s`. Returns how many went."""
        now = time.time() if now is None else now
        removed = 0
        for state in self.incomplete():
            if now - state.started_at > max_age_s:
                log.info("bundle_transfer_expired", transfer_id=state.transfer_id, kind=state.kind)
                self._discard(state.transfer_id)
                removed += 1
        for path in self._dir.glob("*.done.json"):
            if now - path.stat().st_mtime > max_age_s:
                path.unlink(missing_ok=True)
                removed += 1
        # A `.bundle` left by a crash mid-handling: its transfer never got a done record, so the sender's
        # resend starts it again; the stale file only takes space.
        for path in self._dir.glob("*.bundle"):
            tid = path.name[: -len(".bundle")]
            if not self._done_path(tid).exists():
                path.unlink(missing_ok=True)
        return removed
