"""The lane: every device, the face engine, the gallery and the link wired into one running gate.

`Lane(settings)` builds the parts, each given the parts it depends on, without touching a device;
`components()` hands them to the daemon in start order (the daemon closes them in reverse, so the
turnstile is locked before the link says `stopped`). Data flows one way:

    camera -> FaceWorker (engine) --FaceObserved-->  LaneLoop (SessionController) --> turnstile
    reader --DocumentRead / BoardingPassRead------>       |                        --> outbox -> MQTT
    turnstile --GateEventIn------------------------>      |
    monitor --DeviceHealth------------------------->      |
    MQTT bundles / signed commands -> OpsHandler ---SetMode / Maintenance / gallery swap

One owner per device: only this process opens the camera, the reader's port and the turnstile's port;
technician tools go through the control socket (`egate.edge.lane.control`), which, like the status
topic and the traveller's screen, sees the lane only through `RunningLane` (edge/lane/view.py).

The parts, in start order, and what each needs:
    outbox                                        (the health board)
    engine
    gallery      <- engine                        (model id and threshold)
    lane         <- engine, gallery, gate, outbox (the session; builds the gate driver, the ops handler)
    link         <- outbox, lane, gallery
    turnstile                                     (the gate driver's link)
    reader       <- lane
    camera       <- engine
    control      <- the view
    display feed <- the view                      (when the screen is enabled)
    monitor      <- outbox, turnstile, reader, link, lane
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from egate.drivers.camera import Camera
from egate.drivers.document.models import ReaderResult
from egate.drivers.document.reader import DocumentReader
from egate.drivers.turnstile.base import GateController, GateEvent
from egate.edge.display.feed import supervisor_view
from egate.edge.gallery.store import GalleryStore
from egate.edge.lane import status as lane_status
from egate.edge.lane.camera_part import CameraPart
from egate.edge.lane.control import LaneControl
from egate.edge.lane.display_publisher import DisplayPublisher
from egate.edge.lane.engine_part import EnginePart
from egate.edge.lane.gallery_part import GalleryPart
from egate.edge.lane.gate_part import GatePart
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.link_part import LinkPart
from egate.edge.lane.monitor import Monitor, StatusRefresh
from egate.edge.lane.outbox_part import OutboxPart
from egate.edge.lane.reader_part import ReaderPart
from egate.edge.lane.replies import DeviceSummary
from egate.edge.lane.session_part import SessionPart
from egate.edge.lane.sinks import LaneSinks
from egate.edge.lane.vision import FaceWorker
from egate.edge.service.daemon import Component
from egate.edge.session.events import Event
from egate.edge.session.loop import LaneLoop
from egate.edge.session.records import LaneStatus, OutcomeRecord
from egate.edge.session.states import Guidance
from egate.edge.settings import Settings
from egate.edge.uplink.link import MqttLink
from egate.edge.uplink.messages import HealthPayload, StatusPayload
from egate.edge.uplink.outbox import Outbox
from egate.engines.pipeline import FaceEngine


class Lane:
    """Builds the parts with their dependencies and is the `RunningLane` of them (edge/lane/view.py)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_mono = time.monotonic()
        self.board = HealthBoard(self.post)
        self.outbox_part = OutboxPart(settings, self.board)
        self.engine_part = EnginePart(settings)
        self.gallery_part = GalleryPart(settings, self.engine_part, self.board)
        self.gate_part = GatePart(settings, self.post, self.board)
        self.camera_part = CameraPart(settings, engine=self.engine_part, board=self.board, post=self.post)
        self.refresh = StatusRefresh()
        self.sinks = LaneSinks(self.outbox_part, self.gate_part, self.board, self.refresh.request)
        self.session = SessionPart(
            settings,
            engine=self.engine_part,
            gallery=self.gallery_part,
            gate=self.gate_part,
            outbox=self.outbox_part,
            board=self.board,
            sinks=self.sinks,
            on_handled=self._on_handled,
            on_ops_change=self._on_ops_change,
            worker_stuck=self.camera_part.worker_stuck,
        )
        self.display = DisplayPublisher(
            settings, session=self.session, sinks=self.sinks, last_frame=self.camera_part.last_frame
        )
        self.reader_part = ReaderPart(
            settings, session=self.session, board=self.board, post=self.post, on_document=self.display.on_document
        )
        self.link_part = LinkPart(
            settings,
            outbox=self.outbox_part,
            session=self.session,
            gallery=self.gallery_part,
            status_payload=self.status_payload,
        )
        self.monitor = Monitor(
            settings,
            board=self.board,
            outbox=self.outbox_part,
            gate=self.gate_part,
            reader=self.reader_part,
            link=self.link_part,
            session=self.session,
            refresh=self.refresh,
            health_payload=self.health_payload,
        )
        self.control = LaneControl(self)
        self.display_parts = self.display.components(lambda: supervisor_view(self))

    def components(self) -> list[Component]:
        return [
            self.outbox_part,
            self.engine_part,
            self.gallery_part,
            self.session,
            # The link closes after the devices (reverse order): what they report while stopping still
            # reaches ops before `stopped`.
            self.link_part,
            self.gate_part,
            self.reader_part,
            self.camera_part,
            self.control,
            *self.display_parts,
            self.monitor,
        ]

    # ---- callbacks between parts ---------------------------------------------------------------------

    def post(self, event: Event) -> None:
        self.session.post(event)

    def _on_handled(self) -> None:
        self.display.publish()

    def _on_ops_change(self) -> None:
        self.gallery_part.on_ops_change()
        self.refresh.request()

    # ---- the RunningLane (edge/lane/view.py) --------------------------------------------------------------

    @property
    def device_health(self) -> Mapping[str, tuple[bool, str]]:
        return self.board.snapshot()

    @property
    def camera(self) -> Camera | None:
        return self.camera_part.camera

    @property
    def worker(self) -> FaceWorker | None:
        return self.camera_part.worker

    @property
    def engine(self) -> FaceEngine | None:
        return self.engine_part.loaded

    @property
    def gate(self) -> GateController | None:
        return self.gate_part.built

    @property
    def link(self) -> MqttLink | None:
        return self.link_part.link

    @property
    def gallery(self) -> GalleryStore | None:
        return self.gallery_part.opened

    @property
    def outbox(self) -> Outbox | None:
        return self.outbox_part.opened

    @property
    def reader(self) -> DocumentReader | None:
        return self.reader_part.reader

    @property
    def page_camera(self) -> Camera | None:
        return self.reader_part.page_camera

    @property
    def reader_last(self) -> tuple[ReaderResult, datetime] | None:
        return self.reader_part.last

    @property
    def recent_outcomes(self) -> Sequence[OutcomeRecord]:
        return self.sinks.recent_outcomes

    @property
    def guidance(self) -> Guidance | None:
        return self.sinks.guidance

    @property
    def loop(self) -> LaneLoop | None:
        return self.session.loop if self.session.running else None

    def status(self) -> LaneStatus:
        return self.session.status()

    def wait_gate_event(self, decision_id: str) -> tuple[threading.Event, list[GateEvent]]:
        return self.gate_part.wait_event(decision_id)

    def drop_gate_waiter(self, decision_id: str) -> None:
        self.gate_part.drop_waiter(decision_id)

    def device_summary(self) -> dict[str, DeviceSummary]:
        return lane_status.device_summary(self)

    def status_payload(self) -> StatusPayload:
        return lane_status.status_payload(self)

    def health_payload(self) -> HealthPayload:
        return lane_status.health_payload(self)
