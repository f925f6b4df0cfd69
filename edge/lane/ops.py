"""What the gate does with bundles and signed commands from central ops (both arrive over MQTT).

Every bundle goes through `BundleVerifier` first (signature, key, scope, version, expiry, model); only
a verified bundle is applied, and its version is recorded (`accept`) only after it was applied, so a
failure half-way leaves the gate on what it had and ops can push the same version again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from egate.drivers.clock import utc_now
from egate.edge.gallery.store import GalleryStore
from egate.edge.session.events import Event, Maintenance, SetFlights, SetMode
from egate.edge.settings.lane import Mode
from egate.edge.trust.bundles import (
    BundleRejected,
    BundleVerifier,
    CommandPayload,
    RejectCode,
    VerifiedBundle,
    split_envelope,
)
from egate.edge.trust.csca import CscaStore
from egate.edge.trust.keys import TrustError, TrustStore
from egate.edge.uplink.chunks import TransferRefused
from egate.edge.uplink.messages import BundleAck, CmdAck
from egate.engines.atomic_file import atomic_write_bytes

if TYPE_CHECKING:
    from egate.edge.uplink.link import MqttLink

log = structlog.get_logger(__name__)

LANE_MODES = {m.value for m in Mode}
# set_mode values besides the lane modes: `maintenance` / `closed` take the lane out of service
# (entry locked, egress free); `open` puts it back in service in its current mode. Ops holds and
# ends only its own maintenance: a technician's (`egate diag maintenance on`) outlasts any set_mode,
# and the ack says so with DEFERRED_BY_TECHNICIAN.
SERVICE_MODES = {"maintenance", "closed", "open"}
# IATA flight designator as the lane compares it: carrier (2-3 characters) + 1-4 digits + optional suffix.
FLIGHT_PATTERN = re.compile(r"^[A-Z0-9]{2,3}[0-9]{1,4}[A-Z]?$")
MAX_FLIGHTS = 64
FLIGHTS_FILE = "flights.json"  # under state_dir: the last set_flights, so a restart keeps the scope


def parse_flights(text: str) -> tuple[str, ...]:
    """`set_flights` args.flights: comma-separated designators (`LH123,LH124`); empty = any flight."""
    flights = tuple(dict.fromkeys(f.strip().upper() for f in text.split(",") if f.strip()))
    bad = [f for f in flights if not FLIGHT_PATTERN.match(f)]
    if bad:
        raise ValueError(f"set_flights: {bad} are not flight designators (carrier + number, e.g. LH123)")
    if len(flights) > MAX_FLIGHTS:
        raise ValueError(f"set_flights: {len(flights)} flights, at most {MAX_FLIGHTS}")
    return flights


def read_flights(state_dir: Path) -> tuple[str, ...] | None:
    """The flights of the last set_flights command, or None when ops never sent one (config applies)."""
    path = state_dir / FLIGHTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return parse_flights(",".join(str(f) for f in data["flights"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("flights_file_unreadable", path=str(path), error=str(exc), fix="send set_flights again")
        return None


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
        clock: Callable[[], datetime] = utc_now,
        csca: CscaStore | None = None,
        state_dir: Path | None = None,
        maintenance_owners: Callable[[], list[str]] = list,
    ) -> None:
        self._csca = csca
        self._verifier = verifier
        self._gallery = gallery
        self._trust = trust
        self._post = post
        self._config_dir = config_dir
        self._on_change = on_change
        self._clock = clock
        self._state_dir = state_dir
        self._maintenance_owners = maintenance_owners
        self.pending_config_version: int | None = None

    def attach(self, link: MqttLink, at_rest_key: bytes) -> None:
        """Wire this handler to the link: bundles, commands, the early check of each transfer's chunk 0, and
        the key that seals partial transfers on disk (the gallery key)."""
        link.set_bundle_handler(self.on_bundle)
        link.set_command_handler(self.on_command)
        link.set_transfer_authenticator(self.authenticate_transfer)
        link.set_at_rest_key(at_rest_key)

    # ---- bundles ------------------------------------------------------------------------------------

    def authenticate_transfer(self, topic_kind: str, first: bytes, total_bytes: int) -> None:
        """Chunk 0 of a transfer: accept it only when it starts with a header signed by a trusted key, for
        this gate, valid now, newer than what is applied, of the topic's kind and of exactly `total_bytes`."""
        try:
            header, payload_offset = self._verifier.check_header(first, self._clock())
        except BundleRejected as exc:
            if exc.code == RejectCode.MALFORMED and first[:4] == b"EGB1":
                raise TransferRefused(
                    exc.code.value, f"{exc.message} (chunk 0 must hold the whole signed header: use bigger chunks)"
                ) from None
            raise TransferRefused(exc.code.value, exc.message) from None
        if header.kind != topic_kind:
            raise TransferRefused(
                RejectCode.MALFORMED.value, f"bundle of kind {header.kind!r} sent on the {topic_kind!r} topic"
            )
        if payload_offset + header.payload_length != total_bytes:
            raise TransferRefused(
                RejectCode.LENGTH_MISMATCH.value,
                f"transfer declares {total_bytes} bytes, the signed header {payload_offset + header.payload_length}",
            )

    def on_bundle(self, topic_kind: str, raw: bytes) -> BundleAck:
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
        if verified.kind == "csca":
            if self._csca is None:
                raise ValueError("this gate has no chip reader configured: csca bundles are not applied")
            trust = self._csca.activate(verified)
            return f"csca v{verified.version}: {len(trust.cscas)} CSCA certificates, {len(trust.crls)} CRLs"
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
        if cmd.name == "set_flights":
            flights = parse_flights(str(cmd.args.get("flights", "")))
            if self._state_dir is not None:
                # Kept across restarts: a gate that restarts mid-departure must not widen its scope.
                atomic_write_bytes(self._state_dir / FLIGHTS_FILE, json.dumps({"flights": list(flights)}).encode())
            self._post(SetFlights(flights))
            self._on_change()
            return f"flights now {', '.join(flights) or 'any'}", None
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
