"""The session as a lane part: the matcher over the gallery, the single-threaded `SessionController` on
its `LaneLoop`, and the handler of ops' bundles and commands (which post to that loop).

Starts after the engine, the gallery and the outbox it records into; builds the gate driver (the
controller needs it) but leaves its link to the gate part, which starts later.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from egate.edge.lane.adapters import GalleryMatcher, HashedSubjectLookup
from egate.edge.lane.chip import LaneChipStep
from egate.edge.lane.engine_part import EnginePart
from egate.edge.lane.gallery_part import GalleryPart
from egate.edge.lane.gate_part import GatePart
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.ops import OpsHandler, read_flights
from egate.edge.lane.outbox_part import OutboxPart
from egate.edge.lane.part import Part
from egate.edge.lane.sinks import LaneSinks
from egate.edge.lane.status import config_fingerprint, software_version
from egate.edge.service.daemon import Health, StartError
from egate.edge.service.secrets import CredentialError, read_credential
from egate.edge.session.events import BoardingPassRead, DeviceHealth, Event, SetFlights
from egate.edge.session.loop import LaneLoop
from egate.edge.session.machine import SessionController
from egate.edge.session.records import LaneStatus, VersionInfo
from egate.edge.settings import Settings


class _NoSubjectLookup:
    """Exit mode needs no document -> subject mapping; without the key entry/boarding find nobody."""

    def by_document(self, document_number: str, issuing_state: str) -> str | None:
        return None

    def by_boarding_pass(self, boarding_pass: BoardingPassRead) -> str | None:
        return None


class SessionPart(Part):
    name = "lane"

    def __init__(
        self,
        settings: Settings,
        *,
        engine: EnginePart,
        gallery: GalleryPart,
        gate: GatePart,
        outbox: OutboxPart,
        board: HealthBoard,
        sinks: LaneSinks,
        on_handled: Callable[[], None],
        on_ops_change: Callable[[], None],
        worker_stuck: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._gallery = gallery
        self._gate = gate
        self._outbox = outbox
        self._board = board
        self._sinks = sinks
        self._on_handled = on_handled
        self._on_ops_change = on_ops_change
        self._worker_stuck = worker_stuck
        self._controller: SessionController | None = None
        self._loop: LaneLoop | None = None
        self._ops: OpsHandler | None = None
        self._chip: LaneChipStep | None = None  # entry mode's ePassport chip reads (edge/lane/chip.py)

    @property
    def controller(self) -> SessionController:
        return self._require(self._controller, "the session controller")

    @property
    def loop(self) -> LaneLoop:
        return self._require(self._loop, "the lane loop")

    @property
    def ops(self) -> OpsHandler:
        return self._require(self._ops, "the ops handler")

    @property
    def running(self) -> bool:
        return self._controller is not None

    def post(self, event: Event) -> None:
        """Hand an event to the session; dropped before the loop runs (nothing listens yet). A document read
        in entry mode goes through the chip step first, which starts the chip read and tags the document."""
        if self._loop is not None:
            self._loop.post(self._chip.route(event) if self._chip is not None else event)

    def status(self) -> LaneStatus:
        return self.controller.status()

    def start(self) -> None:
        s = self._settings
        engine = self._engine.engine
        store = self._gallery.store
        matcher = GalleryMatcher(
            lambda: store.current, document_threshold=engine.threshold, clock=lambda: datetime.now(timezone.utc)
        )
        self._controller = SessionController(
            s.lane,
            gate=self._gate.build(),
            matcher=matcher,
            lookup=self._make_lookup(),
            sinks=self._sinks,
            versions=VersionInfo(software=software_version(), model=engine.model_id, config=config_fingerprint(s)),
            # The gate's link is not up yet (the gate part starts later) and the drivers lock the entry on
            # every link-up; until then the controller's own fail-safe holds the gate.
            lock_at_start=False,
        )
        self._loop = LaneLoop(self._controller, on_handled=self._on_handled)
        self._loop.start()
        csca = self._gallery.csca
        self._chip = LaneChipStep(
            s,
            s.state.resolved_model_dir(),
            mode=lambda: self.status().mode,
            trust=csca.trust,
            post=self._loop.post,
        )
        self._chip.start()
        self.post(DeviceHealth("engine", True, "loaded"))
        self._outbox.poll()
        if self._gallery.refused is not None:
            self._board.report("gallery", False, self._gallery.refused)
        stored_flights = read_flights(s.state.state_dir)
        if stored_flights is not None:
            self.post(SetFlights(stored_flights))
        self._ops = OpsHandler(
            self._gallery.verifier,
            store,
            self._gallery.trust,
            self.post,
            config_dir=s.state.state_dir / "config",
            on_change=self._on_ops_change,
            state_dir=s.state.state_dir,
            csca=self._gallery.csca,
            maintenance_owners=lambda: self.status().maintenance_owners,
        )

    def _make_lookup(self) -> HashedSubjectLookup | _NoSubjectLookup:
        name = self._settings.gallery.subject_key_credential
        try:
            key = read_credential(name)
        except CredentialError as exc:
            if self._settings.gate.mode != "exit":
                raise StartError(
                    f"lane: {self._settings.gate.mode} mode finds travellers by document or boarding pass and "
                    f"needs the subject-id key shared with ops: {exc}"
                ) from None
            return _NoSubjectLookup()
        store = self._gallery.store
        return HashedSubjectLookup(key, lambda: store.current)

    def close(self) -> None:
        if self._chip is not None:
            self._chip.close()
        if self._loop is not None:
            self._loop.close()

    def health(self) -> Health:
        st = self.controller.status()
        stuck = self._worker_stuck()
        detail = st.state.value if st.in_service else f"{st.state.value}: {'; '.join(st.out_of_service_reasons)}"
        return Health(st.in_service, detail + ("; face worker stuck" if stuck else ""), stuck=stuck)
