"""Signed bundles from central ops: accept only what ops signed, for this gate, newer and not expired.

Envelope (all integers little-endian; see docs/bundles.md):

    b"EGB1" | u32 header_len | header (canonical JSON) | Ed25519 signature (64) | zero pad to 64 | payload

The signature covers b"egate-bundle-v1\\0" + the header bytes exactly as sent; the header carries the
payload's sha256 and length, so one signature check plus one hash authenticates everything. The
header is checked before the payload is hashed, so a wrong or stale bundle costs no hashing.
Every refusal raises `BundleRejected` with one `RejectCode` per cause; the caller keeps serving
whatever it had.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from egate.drivers.compat import StrEnum
from egate.edge.gallery.payload import GalleryPayloadError, decode_gallery_payload
from egate.edge.ids import ID_OR_ANY_PATTERN, ID_PATTERN, is_id
from egate.edge.trust.csca_payload import CscaPayloadError, decode_csca_payload
from egate.edge.trust.keys import KEY_ID_PATTERN, KeysPayload, TrustStore
from egate.engines.atomic_file import atomic_write_bytes

log = structlog.get_logger(__name__)

BUNDLE_MAGIC = b"EGB1"
SIGNATURE_CONTEXT = b"egate-bundle-v1\x00"
SIGNATURE_BYTES = 64
MAX_HEADER_BYTES = 64 * 1024
PAYLOAD_ALIGN = 64

BundleKind = Literal["gallery", "config", "keys", "command", "csca"]
BUNDLE_KINDS: tuple[BundleKind, ...] = ("gallery", "config", "keys", "command", "csca")


class RejectCode(StrEnum):
    """Why a bundle was refused; sent back to ops in the bundle ack (MQTT issue)."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    BAD_SIGNATURE = "bad_signature"
    TOO_LARGE = "too_large"
    WRONG_SCOPE = "wrong_scope"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    ROLLBACK = "rollback"
    WRONG_MODEL = "wrong_model"
    LENGTH_MISMATCH = "length_mismatch"
    SHA256_MISMATCH = "sha256_mismatch"


class BundleRejected(Exception):
    """A bundle was refused. `code` is machine-readable, `message` says what and how to fix it."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class Scope(BaseModel):
    """Who this gate is: the scope a bundle must cover to be accepted here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(..., pattern=ID_PATTERN, description="This gate's site id (gate.site_id).")
    gate: str = Field(..., pattern=ID_PATTERN, description="This gate's id (gate.gate_id).")


class BundleScope(BaseModel):
    """Which gates a bundle is for: one site (or `*` for every site) and its gates (empty: all)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(..., pattern=ID_OR_ANY_PATTERN, description="Site id or '*'.")
    gates: tuple[str, ...] = Field((), max_length=4096, description="Gate ids; empty means every gate of the site.")

    @model_validator(mode="after")
    def _gates_need_a_site(self) -> BundleScope:
        if self.site == "*" and self.gates:
            raise ValueError("a bundle for every site ('*') cannot name gates: gate ids are per site")
        for gate in self.gates:
            if not is_id(gate):
                raise ValueError(f"gate id {gate!r} must match {ID_PATTERN}")
        return self

    def covers(self, gate: Scope) -> bool:
        if self.site != "*" and self.site != gate.site:
            return False
        return not self.gates or gate.gate in self.gates

    @classmethod
    def parse(cls, text: str) -> BundleScope:
        """`SITE`, `SITE:GATE1,GATE2` or `*` (the `--scope` syntax of the ops tools)."""
        site, _, gates = text.partition(":")
        return cls(site=site, gates=tuple(g for g in gates.split(",") if g))

    def __str__(self) -> str:
        return self.site + (":" + ",".join(self.gates) if self.gates else "")


class GalleryLayout(BaseModel):
    """Header fields of a gallery bundle: checked before the payload is touched."""

    model_config = ConfigDict(extra="forbid")

    layout_version: Literal[1] = Field(1, description="Version of this layout block.")
    model_id: str = Field(..., min_length=1, max_length=200, description="Face model that made the templates.")
    dim: int = Field(..., ge=1, le=4096, description="Descriptor length.")
    dtype: Literal["float32"] = Field("float32", description="Template element type (little-endian).")
    metric: Literal["euclidean"] = Field("euclidean", description="Distance the thresholds use.")
    subject_count: int = Field(..., ge=0, description="Number of subjects.")
    template_count: int = Field(..., ge=0, description="Number of templates.")


class BundleHeader(BaseModel):
    """The signed header of every bundle."""

    model_config = ConfigDict(extra="forbid")

    header_version: Literal[1] = Field(1, description="Version of the header layout.")
    kind: BundleKind = Field(..., description="What the payload is.")
    version: int = Field(..., ge=1, le=2**63 - 1, description="Monotonic per kind: only newer is accepted.")
    issued_at: AwareDatetime = Field(..., description="When ops signed it; not valid before this.")
    expires_at: AwareDatetime = Field(..., description="Refused (and a gallery purged) from this instant.")
    scope: BundleScope = Field(..., description="Gates this bundle is for.")
    payload_sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the payload, hex.")
    payload_length: int = Field(..., ge=0, description="Payload length in bytes.")
    key_id: str = Field(..., pattern=KEY_ID_PATTERN, description="Which ops key signed it.")
    gallery: GalleryLayout | None = Field(None, description="Required for kind 'gallery', absent otherwise.")

    @model_validator(mode="after")
    def _consistent(self) -> BundleHeader:
        if (self.kind == "gallery") != (self.gallery is not None):
            raise ValueError("the 'gallery' block is required for kind 'gallery' and not allowed otherwise")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude_none=True))


class CommandPayload(BaseModel):
    """Payload of a `command` bundle: one signed instruction for the gate."""

    model_config = ConfigDict(extra="forbid")

    payload_version: Literal[1] = Field(1, description="Layout version of the command payload.")
    command_id: str = Field(..., pattern=ID_PATTERN, description="Id echoed in the command ack.")
    name: Literal["purge_gallery", "set_mode", "request_status", "set_flights"] = Field(..., description="What to do.")
    args: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Command arguments.")


def canonical_json(value: Any) -> bytes:
    """The one byte form signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --------------------------------------------------------------------------------------------------
# Envelope


@dataclass(frozen=True)
class Envelope:
    header_bytes: bytes
    signature: bytes
    payload_offset: int


def _payload_offset(header_len: int) -> int:
    prefix = 8 + header_len + SIGNATURE_BYTES
    return (prefix + PAYLOAD_ALIGN - 1) // PAYLOAD_ALIGN * PAYLOAD_ALIGN


def split_envelope(raw: bytes | memoryview) -> Envelope:
    """Frame a bundle; raises BundleRejected(MALFORMED) when the framing is wrong."""
    view = memoryview(raw)
    if len(view) < 8 or bytes(view[:4]) != BUNDLE_MAGIC:
        raise BundleRejected(RejectCode.MALFORMED, "not an egate bundle (no b'EGB1' magic)")
    (header_len,) = struct.unpack("<I", view[4:8])
    if header_len > MAX_HEADER_BYTES:
        raise BundleRejected(RejectCode.MALFORMED, f"header length {header_len} exceeds {MAX_HEADER_BYTES}")
    offset = _payload_offset(header_len)
    if len(view) < offset:
        raise BundleRejected(RejectCode.MALFORMED, "bundle truncated inside the header or signature")
    sig_end = 8 + header_len + SIGNATURE_BYTES
    if any(view[sig_end:offset]):
        raise BundleRejected(RejectCode.MALFORMED, "non-zero padding between signature and payload")
    return Envelope(bytes(view[8 : 8 + header_len]), bytes(view[8 + header_len : sig_end]), offset)


def parse_header(header_bytes: bytes) -> BundleHeader:
    try:
        return BundleHeader.model_validate_json(header_bytes)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<header>"
        raise BundleRejected(RejectCode.MALFORMED, f"header field {where}: {first['msg']}") from None


def sign_bundle(
    *,
    kind: BundleKind,
    version: int,
    payload: bytes,
    private_key: Ed25519PrivateKey,
    key_id: str,
    scope: BundleScope,
    issued_at: datetime,
    expires_at: datetime,
    gallery: GalleryLayout | None = None,
) -> bytes:
    """Build a signed bundle (ops side; also used by tests). Returns the envelope bytes."""
    header = BundleHeader(
        kind=kind,
        version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        scope=scope,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_length=len(payload),
        key_id=key_id,
        gallery=gallery,
    )
    return assemble(header.canonical_bytes(), private_key.sign(SIGNATURE_CONTEXT + header.canonical_bytes()), payload)


def assemble(header_bytes: bytes, signature: bytes, payload: bytes) -> bytes:
    """Frame already-signed parts (tools use it to build deliberately broken bundles in tests)."""
    prefix = BUNDLE_MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes + signature
    return prefix + bytes(_payload_offset(len(header_bytes)) - len(prefix)) + payload


# --------------------------------------------------------------------------------------------------
# Version state


class VersionStateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_version: Literal[1] = Field(1, description="Layout version of the version-state file.")
    last_versions: dict[BundleKind, int] = Field(default_factory=dict, description="Last accepted version per kind.")


class VersionState:
    """Last accepted bundle version per kind, persisted (atomically) so a reboot cannot roll back.

    `path=None` keeps it in memory (tests, `egate ops bundle inspect`).
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._data = VersionStateFile()
        if path is not None and path.exists():
            try:
                self._data = VersionStateFile.model_validate_json(path.read_bytes())
            except ValidationError:
                raise RuntimeError(
                    f"bundle version state {path} is corrupt: restore it from backup; deleting it would "
                    "let older (rolled-back) bundles be accepted again"
                ) from None

    def last(self, kind: BundleKind) -> int:
        with self._lock:
            return self._data.last_versions.get(kind, 0)

    def commit(self, kind: BundleKind, version: int) -> None:
        """Record that `version` of `kind` was applied; later bundles must be newer."""
        with self._lock:
            if version <= self._data.last_versions.get(kind, 0):
                return
            self._data.last_versions[kind] = version
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self._path, canonical_json(self._data.model_dump(mode="json")))


# --------------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check. `content` is the parsed payload for its kind:
    gallery -> DecodedGallery (views into `raw`), keys -> KeysPayload, command -> CommandPayload,
    csca -> egate.drivers.chip.pa.TrustList, config -> the TOML text (already validated by the config hook when
    one was given)."""

    header: BundleHeader
    raw: bytes
    payload_offset: int
    content: Any

    @property
    def payload(self) -> memoryview:
        return memoryview(self.raw)[self.payload_offset :]

    @property
    def kind(self) -> BundleKind:
        return self.header.kind

    @property
    def version(self) -> int:
        return self.header.version


ConfigValidator = Callable[[str], object]


def _default_config_validator(text: str) -> object:
    from egate.edge.settings import load_settings_text

    # No environment overrides: the bundle must be valid on its own, whatever this gate's env says.
    return load_settings_text(text, source="<config bundle>", environ={})


class BundleVerifier:
    """Checks bundles against this gate's trust store, identity, model and version state.

    `verify` never changes state; after applying a bundle the caller calls `accept(verified)` so
    the same or an older version is refused from then on.
    """

    def __init__(
        self,
        trust: TrustStore,
        gate_scope: Scope,
        model_id: str,
        max_bytes: int,
        state: VersionState,
        *,
        clock_skew: timedelta = timedelta(seconds=300),
        config_validator: ConfigValidator | None = _default_config_validator,
    ) -> None:
        self.trust = trust
        self.gate_scope = gate_scope
        self.model_id = model_id
        self.max_bytes = max_bytes
        self.state = state
        self.clock_skew = clock_skew
        self.config_validator = config_validator

    def recheck(self, header: BundleHeader, now: datetime) -> None:
        """The rules a stored bundle can break after it was applied (this gate's scope or face model
        changed, time passed): the same codes and messages as `verify`, for the gallery loaded at start."""
        self._check_scope(header)
        self._check_expiry(header, now)
        self._check_model(header)

    def _check_scope(self, header: BundleHeader) -> None:
        if not header.scope.covers(self.gate_scope):
            raise BundleRejected(
                RejectCode.WRONG_SCOPE,
                f"bundle is for {header.scope}, this gate is {self.gate_scope.site}:{self.gate_scope.gate}",
            )

    def _check_expiry(self, header: BundleHeader, now: datetime) -> None:
        if now >= header.expires_at:
            raise BundleRejected(
                RejectCode.EXPIRED, f"bundle expired at {header.expires_at.isoformat()} (now {now.isoformat()})"
            )

    def _check_model(self, header: BundleHeader) -> None:
        if header.gallery is not None and header.gallery.model_id != self.model_id:
            raise BundleRejected(
                RejectCode.WRONG_MODEL,
                f"gallery built with model {header.gallery.model_id!r}, this gate runs {self.model_id!r}: "
                "rebuild the gallery with the gate's model",
            )

    def verify(self, raw: bytes, now: datetime) -> VerifiedBundle:
        """Return the verified bundle or raise BundleRejected (logged without any payload content)."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        try:
            verified = self._verify(raw, now)
        except BundleRejected as exc:
            log.warning("bundle_rejected", code=exc.code.value, reason=exc.message, size=len(raw))
            raise
        h = verified.header
        log.info("bundle_verified", kind=h.kind, version=h.version, key_id=h.key_id, size=len(raw))
        return verified

    def accept(self, verified: VerifiedBundle) -> None:
        """Record the bundle's version as applied (call after activating it)."""
        self.state.commit(verified.kind, verified.version)

    def _verify(self, raw: bytes, now: datetime) -> VerifiedBundle:
        raw = bytes(raw)  # one immutable buffer: the parsed payload's views must not change under us
        # Cheapest refusal first: never frame, parse or hash something far too big.
        if len(raw) > self.max_bytes + MAX_HEADER_BYTES + 2 * PAYLOAD_ALIGN + SIGNATURE_BYTES + 8:
            raise BundleRejected(
                RejectCode.TOO_LARGE,
                f"bundle of {len(raw)} bytes exceeds gallery.max_bundle_bytes={self.max_bytes}: "
                "split the gallery or raise the limit",
            )
        envelope = split_envelope(raw)
        header = self._check_header(envelope, now)
        payload = memoryview(raw)[envelope.payload_offset :]
        if len(payload) != header.payload_length:
            raise BundleRejected(
                RejectCode.LENGTH_MISMATCH,
                f"payload is {len(payload)} bytes, header says {header.payload_length}: truncated transfer?",
            )
        if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
            raise BundleRejected(RejectCode.SHA256_MISMATCH, "payload sha256 differs from the signed header")
        content = self._parse_payload(header, payload)
        return VerifiedBundle(header, raw, envelope.payload_offset, content)

    def check_header(self, prefix: bytes, now: datetime) -> tuple[BundleHeader, int]:
        """Authenticate a bundle from its first bytes only (envelope framing, signed header, signature) and
        check everything the header decides: key, size limit, scope, validity, version, model. Returns the
        header and the payload offset. The chunk layer calls this on a transfer's chunk 0, so unsigned data
        never reaches the disk."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        envelope = split_envelope(prefix)
        return self._check_header(envelope, now), envelope.payload_offset

    def _check_header(self, envelope: Envelope, now: datetime) -> BundleHeader:
        header = parse_header(envelope.header_bytes)
        key = self.trust.public_key(header.key_id)
        if key is None:
            status = self.trust.status(header.key_id)
            if status == "revoked":
                raise BundleRejected(
                    RejectCode.REVOKED_KEY, f"key {header.key_id} is revoked on this gate: re-sign with a current key"
                )
            raise BundleRejected(
                RejectCode.UNKNOWN_KEY,
                f"key {header.key_id} is not in this gate's trust store: push a keys bundle adding it, "
                "or sign with one of " + ", ".join(self.trust.key_ids()),
            )
        try:
            key.verify(envelope.signature, SIGNATURE_CONTEXT + envelope.header_bytes)
        except InvalidSignature:
            raise BundleRejected(
                RejectCode.BAD_SIGNATURE, f"signature does not verify with key {header.key_id}: altered in transit?"
            ) from None
        # From here on the header is authentic.
        if header.payload_length > self.max_bytes:
            raise BundleRejected(
                RejectCode.TOO_LARGE,
                f"payload of {header.payload_length} bytes exceeds gallery.max_bundle_bytes={self.max_bytes}",
            )
        self._check_scope(header)
        if now + self.clock_skew < header.issued_at:
            raise BundleRejected(
                RejectCode.NOT_YET_VALID,
                f"bundle issued_at {header.issued_at.isoformat()} is in the future (gate clock "
                f"{now.isoformat()}): check NTP on the gate and ops",
            )
        self._check_expiry(header, now)
        last = self.state.last(header.kind)
        if header.version <= last:
            raise BundleRejected(
                RejectCode.ROLLBACK,
                f"{header.kind} version {header.version} is not newer than the applied version {last}",
            )
        self._check_model(header)
        return header

    def _parse_payload(self, header: BundleHeader, payload: memoryview) -> Any:
        try:
            if header.kind == "gallery":
                decoded = decode_gallery_payload(payload, check_values=True)
                layout = header.gallery
                assert layout is not None
                meta = decoded.meta
                if (meta.model_id, meta.dim, meta.subject_count, meta.template_count) != (
                    layout.model_id,
                    layout.dim,
                    layout.subject_count,
                    layout.template_count,
                ):
                    raise GalleryPayloadError("gallery payload disagrees with the header's gallery block")
                return decoded
            if header.kind == "keys":
                return KeysPayload.model_validate_json(bytes(payload))
            if header.kind == "command":
                return CommandPayload.model_validate_json(bytes(payload))
            if header.kind == "csca":
                return decode_csca_payload(bytes(payload))
            text = bytes(payload).decode("utf-8")
            if self.config_validator is not None:
                self.config_validator(text)
            return text
        except (
            GalleryPayloadError,
            CscaPayloadError,
            ValidationError,
            UnicodeDecodeError,
            ValueError,
            RecursionError,
        ) as exc:
            # RecursionError: JSON nested deeper than the parser allows (e.g. gallery tags) is malformed too.
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise BundleRejected(RejectCode.MALFORMED, f"{header.kind} payload invalid: {message}") from None
