"""What the gate does with bundles and signed commands from central ops (both arrive over MQTT).

Every bundle goes through `BundleVerifier` first (signature, key, scope, version, expiry, model); only
a verified bundle is applied, and its version is recorded (`accept`) only after it was applied, so a
failure half-way leaves the gate on what it had and ops can push the same version again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from edge.bundles import BundleRejected, BundleVerifier, CommandPayload, RejectCode, VerifiedBundle, split_envelope
from edge.gallery import GalleryStore
from edge.messages import BundleAck, CmdAck
from edge.session import Event, Maintenance, SetMode
from edge.settings.lane import Mode
from edge.trust import TrustError, TrustStore
from engines.atomic_file import atomic_write_bytes

log = structlog.get_logger(__name__)

LANE_MODES = {m.value for m in Mode}
# set_mode values besides the lane modes: `maintenance` / `closed` take the lane out of service
# (entry locked, egress free); `open` puts it back in service in its current mode. Ops holds and
# ends only its own maintenance: a technician's (`egate diag maintenance on`) outlasts any set_mode,
# and the ack says so with DEFERRED_BY_TECHNICIAN.
SERVICE_MODES = {"maintenance", "closed", "open"}
DEFERRED_BY_TECHNICIAN = "deferred_technician_maintenance"


class OpsHandler:
    """`MqttLink`'s bundle and command handlers. Runs on the link's worker thread; lane changes are
    posted to the lane loop (the session controller stays single-threaded)."""

    def __init__(
        self,
        verifier: BundleVerifier,
        gallery: GalleryStore,
        trust: TrustStore,
        post: Callable[[Event], None],
        *,
        config_dir: Path,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        maintenance_owners: Callable[[], list[str]] = list,
    ) -> None:
        self._verifier = verifier
        self._gallery = gallery
        self._trust = trust
        self._post = post
        self._config_dir = config_dir
        self._on_change = on_change
        self._clock = clock
        self._maintenance_owners = maintenance_owners
        self.pending_config_version: int | None = None

    # ---- bundles ------------------------------------------------------------------------------------

    def on_bundle(self, topic_kind: str, path: Path) -> BundleAck:
        raw = path.read_bytes()
        try:
            verified = self._verifier.verify(raw, self._clock())
        except BundleRejected as exc:
            return BundleAck.rejected(exc.code.value, exc.message)
        if verified.kind != topic_kind:
            return BundleAck.rejected(
                RejectCode.MALFORMED.value,
                f"bundle of kind {verified.kind!r} arrived on the {topic_kind!r} topic: push it with --kind "
                f"{verified.kind}",
            )
        try:
            message = self._apply(verified)
        except (TrustError, OSError, ValueError) as exc:
            log.error("bundle_apply_failed", kind=verified.kind, version=verified.version, error=str(exc))
            return BundleAck.rejected("apply_failed", f"{type(exc).__name__}: {exc}")
        self._verifier.accept(verified)
        self._on_change()
        return BundleAck.applied(message)

    def _apply(self, verified: VerifiedBundle) -> str:
        if verified.kind == "gallery":
            g = self._gallery.activate(verified)
            return f"gallery v{g.version}: {g.subject_count} subjects, {g.template_count} templates"
        if verified.kind == "keys":
            self._trust.apply_keys(verified.content, signed_by=verified.header.key_id)
            return f"trusted keys now: {', '.join(self._trust.key_ids())}"
        if verified.kind == "config":
            # A config is validated by the verifier; it is stored for the next start (a live reload of
            # devices mid-session is not worth the risk at a gate).
            self._config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write_bytes(self._config_dir / "pushed.toml", bytes(verified.payload))  # as ops signed it
            self.pending_config_version = verified.version
            return f"config v{verified.version} stored in {self._config_dir}; it takes effect at the next restart"
        raise ValueError(f"bundles of kind {verified.kind!r} are not applied on this topic")

    # ---- commands -----------------------------------------------------------------------------------

    def on_command(self, raw: bytes) -> CmdAck:
        cmd_id = _command_id(raw)
        try:
            verified = self._verifier.verify(raw, self._clock())
        except BundleRejected as exc:
            return CmdAck.rejected(cmd_id, exc.code.value, exc.message)
        if verified.kind != "command" or not isinstance(verified.content, CommandPayload):
            return CmdAck.rejected(cmd_id, RejectCode.MALFORMED.value, "a cmd topic bundle must be of kind 'command'")
        cmd: CommandPayload = verified.content
        try:
            message, code = self._run(cmd)
        except ValueError as exc:
            return CmdAck.rejected(cmd.command_id, "bad_argument", str(exc))
        self._verifier.accept(verified)  # a replayed command (same or older version) is refused from now on
        log.info("ops_command_done", command=cmd.name, command_id=cmd.command_id, code=code)
        ack = CmdAck.done(cmd.command_id, message)
        return ack.model_copy(update={"code": code}) if code else ack

    def _run(self, cmd: CommandPayload) -> tuple[str, str | None]:
        """(ack message, ack code or None)."""
        if cmd.name == "purge_gallery":
            purged = self._gallery.purge("ops_command")
            self._on_change()
            return ("gallery purged" if purged else "no gallery to purge"), None
        if cmd.name == "request_status":
            self._on_change()
            return "status republished", None
        mode = str(cmd.args.get("mode", "")).lower()
        if mode in LANE_MODES:
            self._post(SetMode(Mode(mode)))
            self._post(Maintenance(False, owner="ops"))
        elif mode in ("maintenance", "closed"):
            self._post(Maintenance(True, reason=f"{mode} (ops command)", owner="ops"))
        elif mode == "open":
            self._post(Maintenance(False, owner="ops"))
        else:
            known = ", ".join(sorted(LANE_MODES | SERVICE_MODES))
            raise ValueError(f"set_mode needs args.mode, one of {known}; got {mode!r}")
        self._on_change()
        message = f"mode {mode} requested (applied when no traveller is in the gate)"
        if mode not in ("maintenance", "closed") and "technician" in self._maintenance_owners():
            return (
                f"{message}; the lane stays out of service: a technician holds it in maintenance, and it "
                "returns to service when they end it (egate diag maintenance off)",
                DEFERRED_BY_TECHNICIAN,
            )
        return message, None


def _command_id(raw: bytes) -> str:
    """The command id for the ack, read without trusting anything (the bundle may be forged)."""
    try:
        envelope = split_envelope(raw)
        payload = CommandPayload.model_validate_json(bytes(memoryview(raw)[envelope.payload_offset :]))
        return payload.command_id
    except Exception:
        return ""
