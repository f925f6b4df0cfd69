"""The lane: every device, the face engine, the gallery and the link wired into one running gate.

`Lane(settings)` builds the parts without touching a device; `components()` hands them to the daemon
in start order (the daemon closes them in reverse, so the turnstile is locked before the link says
`stopped`). Data flows one way:

    camera -> FaceWorker (engine) --FaceObserved-->  LaneLoop (SessionController) --> turnstile
    reader --DocumentRead / BoardingPassRead------>       |                        --> outbox -> MQTT
    turnstile --GateEventIn------------------------>      |
    monitor --DeviceHealth------------------------->      |
    MQTT bundles / signed commands -> OpsHandler ---SetMode / Maintenance / gallery swap

One owner per device: only this process opens the camera, the reader's port and the turnstile's port;
technician tools go through the control socket (`egate.edge.lane.control`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog

from egate.drivers.camera import Camera, CameraState
from egate.drivers.document.models import BcbpResult, MrzResult, ReaderResult
from egate.drivers.document.reader import DocumentReader
from egate.drivers.turnstile.base import GateEvent
from egate.drivers.turnstile.config import parse_scbk
from egate.drivers.turnstile.osdp import OsdpGateController
from egate.edge.display.feed import DisplayFeed, supervisor_view
from egate.edge.display.languages import document_language
from egate.edge.gallery.matching import MatchPolicy
from egate.edge.gallery.store import GalleryExpiryWatcher, GalleryStore
from egate.edge.lane import status as lane_status
from egate.edge.lane.adapters import (
    GalleryMatcher,
    HashedSubjectLookup,
    boarding_pass_read,
    document_read,
    gate_event_in,
    gate_guidance,
)
from egate.edge.lane.chip import LaneChipStep
from egate.edge.lane.ops import OpsHandler, read_flights
from egate.edge.lane.page import PageReader
from egate.edge.lane.status import config_fingerprint, software_version
from egate.edge.lane.vision import FaceWorker
from egate.edge.service.daemon import Component, Health, StartError
from egate.edge.service.secrets import CredentialError, read_credential
from egate.edge.session.events import BoardingPassRead, DeviceHealth, Event, Maintenance, SetFlights
from egate.edge.session.loop import LaneLoop
from egate.edge.session.machine import SessionController
from egate.edge.session.records import LaneEvent, LaneStatus, OutcomeRecord, VersionInfo
from egate.edge.session.states import Guidance, LaneState
from egate.edge.settings import Settings
from egate.edge.trust.bundles import BundleRejected, BundleVerifier, RejectCode, Scope, VersionState
from egate.edge.trust.csca import CscaStore
from egate.edge.trust.keys import TrustError, TrustStore
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import HealthPayload, StatusPayload
from egate.edge.uplink.outbox import Outbox, OutboxError
from egate.engines.pipeline import FaceEngine

log = structlog.get_logger(__name__)

MONITOR_INTERVAL_S = 0.25
RECENT_OUTCOMES = 100


class _NoSubjectLookup:
    """Exit mode needs no document -> subject mapping; without the key entry/boarding find nobody."""

    def by_document(self, document_number: str, issuing_state: str) -> str | None:
        return None

    def by_boarding_pass(self, boarding_pass: BoardingPassRead) -> str | None:
        return None


class _Part:
    """A daemon component from three callables (the lane's parts share state, so no class each)."""

    def __init__(
        self,
        name: str,
        start: Callable[[], None],
        close: Callable[[], None],
        health: Callable[[], Health] = lambda: Health(True, ""),
    ) -> None:
        self.name = name
        self._start = start
        self._close = close
        self._health = health

    def start(self) -> None:
        self._start()

    def close(self) -> None:
        self._close()

    def health(self) -> Health:
        return self._health()


class Lane:
    """Owns the lane's parts; see the module docstring for the flow."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.state.state_dir
        self.model_dir = settings.state.resolved_model_dir()
        self.started_mono = time.monotonic()
        self._log = log.bind(gate_id=settings.gate.gate_id)
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.gallery: GalleryStore | None = None
        self.csca: CscaStore | None = None
        self.trust: TrustStore | None = None
        self._gallery_key = b""  # read at the gallery's start, used once the engine's model id is known
        self._gallery_refused: str | None = None  # why the gallery on disk was refused at start
        self.verifier: BundleVerifier | None = None
        self.ops: OpsHandler | None = None
        self.engine: FaceEngine | None = None
        self.gate: OsdpGateController | None = None
        self.reader: DocumentReader | None = None
        self.page_camera: Camera | None = None
        self.page_reader: PageReader | None = None
        self._page_engine: FaceEngine | None = None
        self.camera: Camera | None = None
        self.worker: FaceWorker | None = None
        self.controller: SessionController | None = None
        self.loop: LaneLoop | None = None
        self.chip_step: LaneChipStep | None = None  # entry mode's ePassport chip reads (edge/lane/chip.py)
        self._expiry: GalleryExpiryWatcher | None = None
        self.recent_outcomes: deque[OutcomeRecord] = deque(maxlen=RECENT_OUTCOMES)
        self.reader_last: tuple[ReaderResult, datetime] | None = None
        self.guidance: Guidance | None = None
        # The traveller's screen (edge/display): the wall time of the lane's last event and the language of
        # the document just read (only the language leaves for the screen, never the nationality).
        self.display_feed: DisplayFeed | None = None
        self._lane_event_at = time.time()
        self._display_language: str | None = None
        self._display_state: LaneState | None = None
        self.device_health: dict[str, tuple[bool, str]] = {}
        self._report_lock = threading.Lock()
        self._gate_waiters: dict[str, tuple[threading.Event, list[GateEvent]]] = {}
        self._stop = threading.Event()
        self._status_dirty = threading.Event()
        self._monitor: threading.Thread | None = None
        self._last_health_publish = 0.0

    # ---- components, in start order --------------------------------------------------------------

    def components(self) -> list[Component]:
        from egate.edge.lane.control import LaneControl

        control = LaneControl(self)
        return [
            _Part("outbox", self._start_outbox, self._close_outbox, self._outbox_health),
            _Part("gallery", self._start_gallery, self._close_gallery, self._gallery_health),
            _Part("engine", self._start_engine, self._close_engine),
            _Part("lane", self._start_lane, self._close_lane, self._lane_health),
            # The link closes after the devices (reverse order): what they report while stopping still
            # reaches ops before `stopped`.
            _Part("link", self._start_link, self._close_link, self._link_health),
            _Part("turnstile", self._start_gate, self._close_gate, self._gate_health),
            _Part("reader", self._start_reader, self._close_reader),
            _Part("camera", self._start_camera, self._close_camera, self._camera_health),
            _Part("control", control.start, control.close, control.health),
            *self._display_parts(),
            _Part("monitor", self._start_monitor, self._close_monitor),
        ]

    # ---- outbox and link ----------------------------------------------------------------------------

    def _start_outbox(self) -> None:
        self.outbox = Outbox(self.state_dir / "outbox.sqlite", self.settings.outbox, self.settings.gate.gate_id)

    def _close_outbox(self) -> None:
        if self.outbox is not None:
            self.outbox.close()

    def _outbox_health(self) -> Health:
        assert self.outbox is not None
        h = self.outbox.health(self.settings.outbox.min_free_disk_bytes)
        return Health(h.ok, h.detail)

    def _poll_outbox(self) -> None:
        """The outbox is a required device: no commit, no decision. After a failed commit, a write probe
        tells when the disk takes writes again."""
        if self.outbox is None:
            return
        h = self.outbox.health(self.settings.outbox.min_free_disk_bytes)
        if h.condition == "disk_error" and self.outbox.probe():
            h = self.outbox.health(self.settings.outbox.min_free_disk_bytes)
        self._report("outbox", h.ok, "" if h.condition == "ok" else f"{h.condition}: {h.detail}")

    def _start_link(self) -> None:
        cfg = self.settings.link
        if not cfg.enabled:
            self._log.warning("link_disabled", detail="outcomes stay in the outbox until link.enabled = true")
            return
        assert self.outbox is not None and self.ops is not None
        try:
            credentials = LinkCredentials.from_credentials_dir(cfg)
        except CredentialError as exc:
            raise StartError(f"link: {exc}") from None
        self.link = MqttLink(
            cfg,
            self.settings.gate.site_id,
            self.settings.gate.gate_id,
            self.outbox,
            self.status_payload,
            credentials,
            bundle_dir=self.state_dir / "bundles-incoming",
        )
        self.ops.attach(self.link, self._gallery_key)
        self.link.start()

    def _close_link(self) -> None:
        if self.link is not None:
            self.link.close(clean=True)

    def _link_health(self) -> Health:
        if self.link is None:
            return Health(True, "disabled")
        err = self.link.last_error
        return Health(True, "connected" if self.link.connected else f"offline: {err.message if err else 'connecting'}")

    def publish_status(self) -> None:
        """Ask for the retained status to be re-published. The monitor does it on its next turn, after the
        lane loop has handled the change (a status built inside the handler would still show the old one)."""
        self._status_dirty.set()

    def _publish_status_if_changed(self) -> None:
        if self._status_dirty.is_set() and self.link is not None:
            self._status_dirty.clear()
            self.link.publish_status()

    # ---- gallery, trust, bundles ------------------------------------------------------------------------

    def _start_gallery(self) -> None:
        cfg = self.settings.gallery
        try:
            key = read_credential(cfg.key_credential)
        except CredentialError as exc:
            raise StartError(
                f"gallery: {exc}; create it with: head -c 32 /dev/urandom > {cfg.key_credential}"
            ) from None
        try:
            self.trust = TrustStore(self.state_dir / "trust")
        except TrustError as exc:
            raise StartError(f"gallery: {exc}") from None
        if not self.trust.key_ids():
            self._log.warning(
                "trust_store_empty",
                fix="install the ops public key: egate ops keys install KEY.pub.json --trust-dir "
                f"{self.state_dir / 'trust'}; until then every bundle is refused",
            )
        self._gallery_key = key

    def _finish_gallery(self, model_id: str, threshold: float) -> None:
        """Needs the engine's model id and threshold, so it runs after the engine loaded."""
        cfg = self.settings.gallery
        # One 1:N ambiguity rule: the lane policy's margin over lane.search_k candidates (distances, like
        # the policy's goodness for the euclidean metric).
        lane = self.settings.lane
        policy = MatchPolicy(
            threshold=cfg.threshold or threshold, margin=lane.policy.ambiguity_margin, top_k=lane.search_k
        )
        self.gallery = GalleryStore(self.state_dir / "gallery", self._gallery_key, dtype=cfg.dtype, policy=policy)
        self.csca = CscaStore(self.state_dir / "csca")
        try:
            self.csca.load()
        except Exception as exc:
            # Without a trust list every chip fails Passive Authentication (pa_no_trust_list): refer, not stop.
            self._log.error("csca_load_failed", error=str(exc), fix="push the csca bundle again from ops")
        assert self.trust is not None
        self.verifier = BundleVerifier(
            self.trust,
            Scope(site=self.settings.gate.site_id, gate=self.settings.gate.gate_id),
            model_id=model_id,
            max_bytes=cfg.max_bundle_bytes,
            state=VersionState(self.state_dir / "bundle-versions.json"),
            clock_skew=timedelta(seconds=cfg.clock_skew_s),
        )
        self._load_gallery(self.verifier)
        self._expiry = GalleryExpiryWatcher(self.gallery, cfg.expiry_check_interval_s)
        self._expiry.start()

    def _load_gallery(self, verifier: BundleVerifier) -> None:
        """The gallery on disk passes the same model, scope and expiry rules as a pushed one, with the same
        codes; a refused one stays on disk, out of memory, and keeps the lane out of service until ops
        pushes a good one."""
        assert self.gallery is not None
        now = datetime.now(timezone.utc)
        stored = self.gallery.path.exists()
        try:
            g = self.gallery.load(now)
        except Exception as exc:
            # A gallery that cannot be read is not fatal: the gate refers everyone until ops pushes again.
            self._log.error("gallery_load_failed", error=str(exc), fix="push the gallery again from ops")
            return
        if g is None:
            if stored:  # it expired while the gate was down: purged by load(), refused like an expired push
                self._gallery_refused = (
                    f"gallery on disk refused ({RejectCode.EXPIRED.value}): it expired and was purged; push a "
                    "current gallery (egate ops gallery build ... && egate ops push ...)"
                )
                self._log.error("gallery_refused_at_start", code=RejectCode.EXPIRED.value)
            return
        try:
            verifier.recheck(g.header, now)
        except BundleRejected as exc:
            self.gallery.close()  # wipes it from memory; the file stays for whoever investigates
            reason = (
                f"gallery on disk refused ({exc.code.value}): {exc.message}; push a gallery built for this "
                f"gate and model (egate ops gallery build ... && egate ops push ...)"
            )
            self._log.error("gallery_refused_at_start", code=exc.code.value, error=exc.message)
            self._gallery_refused = reason

    def _on_ops_change(self) -> None:
        """After a bundle or command: a good gallery activated clears a gallery refused at start."""
        if self._gallery_refused is not None and self.gallery is not None and self.gallery.current is not None:
            self._gallery_refused = None
            self._report("gallery", True, "")
        self.publish_status()

    def _close_gallery(self) -> None:
        if self._expiry is not None:
            self._expiry.close()
        if self.gallery is not None:
            self.gallery.close()  # wipes the templates from memory; the encrypted file stays

    def _gallery_health(self) -> Health:
        g = self.gallery.current if self.gallery is not None else None
        if self._gallery_refused is not None:
            return Health(False, self._gallery_refused)
        if g is None:
            return Health(True, "no gallery: push one from ops")
        return Health(True, f"v{g.version}, {g.subject_count} subjects, expires {g.expires_at.isoformat()}")

    # ---- engine -----------------------------------------------------------------------------------------

    def _start_engine(self) -> None:
        try:
            self.engine = FaceEngine.from_config(self.settings.engine, self.model_dir)
        except Exception as exc:
            raise StartError(
                f"engine: face models in {self.model_dir} cannot be loaded ({exc}); run `egate models build` "
                f"(or set state.model_dir), then `egate diag engines`"
            ) from None
        self._finish_gallery(self.engine.model_id, self.engine.threshold)

    def _close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()

    # ---- the session loop ---------------------------------------------------------------------------------

    def _start_lane(self) -> None:
        assert self.engine is not None and self.gallery is not None
        cfg = self.settings
        self.gate = self._make_gate()
        store = self.gallery
        matcher = GalleryMatcher(
            lambda: store.current,
            document_threshold=self.engine.threshold,
            clock=lambda: datetime.now(timezone.utc),
        )
        self.controller = SessionController(
            cfg.lane,
            gate=self.gate,
            matcher=matcher,
            lookup=self._make_lookup(),
            sinks=self,
            versions=VersionInfo(
                software=software_version(), model=self.engine.model_id, config=config_fingerprint(cfg)
            ),
            # The turnstile is not started yet (its link comes up later) and the OSDP driver locks the entry
            # on every link-up; until then the controller's own fail-safe holds the gate.
            lock_at_start=False,
        )
        self.loop = LaneLoop(self.controller, on_handled=self._publish_display)
        self.loop.start()
        loop, csca = self.loop, self.csca
        self.chip_step = LaneChipStep(
            cfg,
            self.model_dir,
            mode=lambda: self.status().mode,
            trust=lambda: csca.trust() if csca else None,
            post=loop.post,
        )
        self.chip_step.start()
        self.post(DeviceHealth("engine", True, "loaded"))
        self._poll_outbox()
        if self._gallery_refused is not None:
            self._report("gallery", False, self._gallery_refused)
        stored_flights = read_flights(self.state_dir)
        if stored_flights is not None:
            self.post(SetFlights(stored_flights))
        assert self.verifier is not None and self.trust is not None
        self.ops = OpsHandler(
            self.verifier,
            self.gallery,
            self.trust,
            self.post,
            config_dir=self.state_dir / "config",
            on_change=self._on_ops_change,
            state_dir=self.state_dir,
            csca=self.csca,
            maintenance_owners=lambda: self.status().maintenance_owners,
        )

    def _make_lookup(self) -> HashedSubjectLookup | _NoSubjectLookup:
        name = self.settings.gallery.subject_key_credential
        try:
            key = read_credential(name)
        except CredentialError as exc:
            if self.settings.gate.mode != "exit":
                raise StartError(
                    f"lane: {self.settings.gate.mode} mode finds travellers by document or boarding pass and needs "
                    f"the subject-id key shared with ops: {exc}"
                ) from None
            return _NoSubjectLookup()
        store = self.gallery
        return HashedSubjectLookup(key, lambda: store.current if store is not None else None)

    def _close_lane(self) -> None:
        if self.chip_step is not None:
            self.chip_step.close()
        if self.loop is not None:
            self.loop.close()

    def _lane_health(self) -> Health:
        assert self.controller is not None
        st = self.controller.status()
        stuck = self.worker is not None and self.worker.stuck()
        detail = st.state.value if st.in_service else f"{st.state.value}: {'; '.join(st.out_of_service_reasons)}"
        return Health(st.in_service, detail + ("; face worker stuck" if stuck else ""), stuck=stuck)

    def post(self, event: Event) -> None:
        if self.loop is not None:
            self.loop.post(self.chip_step.route(event) if self.chip_step is not None else event)

    def status(self) -> LaneStatus:
        assert self.controller is not None
        return self.controller.status()

    # LaneSinks ------------------------------------------------------------------------------------------

    def emit_outcome(self, record: OutcomeRecord) -> None:
        if self.outbox is None:
            raise OutboxError("the outbox is not open: nothing can be recorded")
        try:
            # Committed (fsynced) before the lane goes on; the link forwards it when it can.
            self.outbox.append("outcome", record.model_dump(mode="json"))
        except Exception:
            # The controller marks the outbox faulty itself (this runs on its thread: no posting to its own
            # queue here). Forget the last reported health so the monitor reports the outbox's state, and
            # later its recovery, even when they read the same as before the failure.
            with self._report_lock:
                self.device_health["outbox"] = (False, "commit failed")
            raise
        self._remember(record)
        log.info(
            "lane_outcome",
            record=record.record,
            txn_id=record.txn_id,
            decision=record.decision.value,
            reasons=[r.value for r in record.reasons],
            passage=record.passage,
            frame_to_open_ms=record.timings_ms.get("frame_to_open"),
        )

    def _remember(self, record: OutcomeRecord) -> None:
        """Recent sessions for the control API: a passage record replaces its session's decision record."""
        if record.record == "passage":
            for old in list(self.recent_outcomes):
                if old.txn_id == record.txn_id:
                    self.recent_outcomes.remove(old)
        self.recent_outcomes.appendleft(record)

    def emit_guidance(self, kind: Guidance) -> None:
        self.guidance = kind
        self._lane_event_at = time.time()
        log.info("lane_guidance", guidance=kind.value)
        # Lamps and buzzer only over a live link (the controller shows its own fault state otherwise).
        if self.gate is not None and self.gate.link_state == "up":
            try:
                self.gate.set_guidance(gate_guidance(kind))
            except Exception as exc:
                log.warning("lane_guidance_to_gate_failed", error=str(exc))

    def emit_event(self, event: LaneEvent) -> None:
        self._lane_event_at = time.time()
        payload = lane_status.event_payload(event)
        if payload is not None and self.outbox is not None:
            self.outbox.append("event", payload.model_dump(mode="json"))
        if event.kind in ("mode_changed", "flights_changed", "in_service", "out_of_service"):
            self.publish_status()

    # ---- turnstile -----------------------------------------------------------------------------------------

    def _make_gate(self) -> OsdpGateController:
        cfg = self.settings.turnstile
        scbk: bytes | None = None
        if cfg.secure_channel:
            try:
                scbk = parse_scbk(read_credential(cfg.scbk_credential))
            except (CredentialError, ValueError) as exc:
                raise StartError(
                    f"turnstile: {exc}; the SCBK must match the gate controller's (egate diag gate status shows "
                    "whether the secure channel comes up)"
                ) from None
        return OsdpGateController(cfg, scbk, self._on_gate_event)

    def _on_gate_event(self, event: GateEvent) -> None:
        if event.decision_id is not None and event.decision_id in self._gate_waiters:
            done, seen = self._gate_waiters[event.decision_id]
            seen.append(event)
            done.set()
        self.post(gate_event_in(event))
        if event.kind in ("tailgate", "door_forced", "emergency_on", "emergency_off", "secure_channel_failed"):
            log.warning("gate_event", kind=event.kind, detail=event.detail)

    def wait_gate_event(self, decision_id: str) -> tuple[threading.Event, list[GateEvent]]:
        entry: tuple[threading.Event, list[GateEvent]] = (threading.Event(), [])
        self._gate_waiters[decision_id] = entry
        return entry

    def drop_gate_waiter(self, decision_id: str) -> None:
        self._gate_waiters.pop(decision_id, None)

    def _start_gate(self) -> None:
        assert self.gate is not None
        if self.settings.turnstile.install_mode:
            log.warning("turnstile_install_mode", detail="the default key SCBK-D is allowed: commissioning only")
        self.gate.start()

    def _close_gate(self) -> None:
        if self.gate is not None:
            self.gate.close()  # leaves the controller in its safe state: entry locked, egress free

    def _gate_health(self) -> Health:
        assert self.gate is not None
        return Health(True, f"link {self.gate.link_state}")

    # ---- reader -------------------------------------------------------------------------------------------

    def _start_reader(self) -> None:
        cfg = self.settings.reader
        if not cfg.serial_url and cfg.page_camera is None:
            return
        key = None
        if cfg.verify_bcbp_signature:
            try:
                key = read_credential(cfg.bcbp_key_credential)
            except CredentialError as exc:
                raise StartError(f"reader: {exc}") from None
        self.reader = DocumentReader(cfg, self._on_reader_result, bcbp_key_pem=key)
        self.reader.start()  # the serial reader, when one is configured
        if cfg.page_camera is not None:
            self.page_camera = Camera(cfg.page_camera, name="page-camera")
            self.page_camera.start()
            # Its own engine instance: enrolling a page portrait never waits on (or delays) the lane camera.
            self._page_engine = FaceEngine.from_config(self.settings.engine, self.model_dir)
            self.page_reader = PageReader(
                self.page_camera,
                self.reader,
                self._page_engine,
                self.post,
                change_threshold=cfg.page_change_threshold,
                interval_s=cfg.page_interval_s,
                ready=lambda: self.controller is not None and self.controller.status().in_service,
            )
            self.page_reader.start()

    def _close_reader(self) -> None:
        if self.page_reader is not None:
            self.page_reader.close()
        if self.page_camera is not None:
            self.page_camera.close()
        if self._page_engine is not None:
            self._page_engine.close()
        if self.reader is not None:
            self.reader.close()

    def _on_reader_result(self, result: ReaderResult) -> None:
        self.reader_last = (result, datetime.now(timezone.utc))
        if isinstance(result, MrzResult) and result.document is not None:
            self._display_language = document_language(result.document.nationality, result.document.issuer)
        if isinstance(result, MrzResult):
            doc = document_read(result)
            if doc is None:
                log.warning("reader_mrz_unusable", errors=[e.field for e in result.errors])
                return
            self.post(doc)
        elif isinstance(result, BcbpResult):
            flights = self.controller.scope.flights if self.controller is not None else ()
            self.post(boarding_pass_read(result, flights=flights))
        else:
            log.warning("reader_error", error=str(getattr(result, "message", result)))

    # ---- camera and the face worker ---------------------------------------------------------------------------

    def _start_camera(self) -> None:
        assert self.engine is not None
        cfg = self.settings.camera
        credential = None
        if cfg.credential:
            try:
                credential = read_credential(cfg.credential)
            except CredentialError as exc:
                raise StartError(f"camera: {exc}") from None
        self.camera = Camera(cfg, credential=credential, on_state=self._on_camera_state)
        self.camera.start()
        self.worker = FaceWorker(self.camera, self.engine, self.settings.engine.quality, self.post)
        self.worker.start()

    def _on_camera_state(self, state: CameraState, error: str | None) -> None:
        ok = state == "streaming"
        reason = "" if ok else f"camera {state}" + (f": {error}" if error else "")
        self._report("camera", ok, reason)

    def _close_camera(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.camera is not None:
            self.camera.close()

    def _camera_health(self) -> Health:
        assert self.camera is not None
        st = self.camera.stats()
        return Health(True, f"{st.state}, {st.fps} fps")

    # ---- monitor: device health into the lane, health metrics to ops ------------------------------------------

    def _report(self, device: str, ok: bool, reason: str) -> None:
        if self._stop.is_set():
            return  # devices closing during shutdown are not faults to report to ops
        with self._report_lock:
            if self.device_health.get(device) == (ok, reason):
                return
            self.device_health[device] = (ok, reason)
        self.post(DeviceHealth(device, ok, reason))

    def _start_monitor(self) -> None:
        if not self.settings.reader.serial_url and self.settings.reader.page_camera is None:
            self._report(
                "document_reader", False, "no document reader configured: set reader.serial_url or reader.page_camera"
            )
        self._monitor = threading.Thread(target=self._monitor_loop, name="lane-monitor", daemon=True)
        self._monitor.start()

    def _close_monitor(self) -> None:
        # First to close: take the lane out of service on purpose, so a traveller's session ends with an
        # outcome record (ABORTED_OUT_OF_SERVICE) while the link is still up, and the gate is locked.
        if self.loop is not None:
            before = self.loop.handled
            self.post(Maintenance(True, reason="daemon stopping", owner="daemon"))
            self.loop.wait_handled(before + 1, timeout=1.0)
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(2.0)

    def _monitor_loop(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL_S):
            try:
                self._poll_devices()
                self._publish_status_if_changed()
                if time.monotonic() - self._last_health_publish >= self.settings.link.health_interval_s:
                    self._last_health_publish = time.monotonic()
                    if self.link is not None:
                        self.link.publish_health(self.health_payload())
            except Exception:
                log.exception("lane_monitor_failed")

    def _poll_devices(self) -> None:
        self._poll_outbox()
        if self.gate is not None:
            state = self.gate.link_state
            st = self.gate.status()
            if st.get("secure_channel_failed"):
                self._report("gate", False, "secure channel refused: the SCBK does not match the controller's")
            else:
                self._report("gate", state == "up", "" if state == "up" else f"turnstile link {state}")
        if self.reader is not None:
            problems = []
            if self.settings.reader.serial_url and not self.reader.serial_connected:
                problems.append(f"reader port {self.settings.reader.serial_url} not open")
            if self.page_camera is not None and self.page_camera.state != "streaming":
                problems.append(f"page camera {self.page_camera.state}")
            self._report("document_reader", not problems, "; ".join(problems))

    # ---- the traveller's screen (edge/display) ------------------------------------------------------------

    def _display_parts(self) -> list[Component]:
        cfg = self.settings.display
        if not cfg.enabled:
            return []
        self.display_feed = DisplayFeed(
            cfg.feed_socket, cfg.feed_group, lambda: supervisor_view(self), heartbeat_s=cfg.heartbeat_s
        )
        return [self.display_feed]

    def _publish_display(self) -> None:
        """On the lane loop's thread after each handled event: the status is that event's."""
        feed = self.display_feed
        if feed is None or self.controller is None:
            return
        st = self.controller.status()
        if st.state is LaneState.IDLE and self._display_state is not LaneState.IDLE:
            # A traveller's session is over: the next one starts in the idle languages again. In entry mode the
            # document is read while idle and the session starts at once, so only a return to idle clears it.
            self._display_language = None
        self._display_state = st.state
        feed.update(
            at=self._lane_event_at,
            state=st.state.value,
            mode=st.mode.value,
            guidance=self.guidance.value if self.guidance else None,
            maintenance=st.maintenance,
            alarm=st.alarm,
            language=self._display_language,
        )

    # ---- what ops and technicians see (edge/lane/status.py) ----------------------------------------------

    def device_summary(self) -> dict[str, dict[str, Any]]:
        return lane_status.device_summary(self)

    def status_payload(self) -> StatusPayload:
        return lane_status.status_payload(self)

    def health_payload(self) -> HealthPayload:
        return lane_status.health_payload(self)
