"""The read-only view of a running lane that status, the control socket and the traveller's screen get.

They never see the lane's assembly (edge/lane/assembly.py builds the parts and implements this view), so
each is tested with any object that has these members. A device that is not configured or not open yet is
None here. The only ways to act on the lane are `post` (an event for the session, handled on its own
thread) and the gate waiters of a technician's gate cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from egate.drivers.camera import Camera
    from egate.drivers.document.models import ReaderResult
    from egate.drivers.document.reader import DocumentReader
    from egate.drivers.turnstile.base import GateController, GateEvent
    from egate.edge.gallery.store import GalleryStore
    from egate.edge.lane.replies import DeviceSummary
    from egate.edge.lane.vision import FaceWorker
    from egate.edge.session.events import Event
    from egate.edge.session.loop import LaneLoop
    from egate.edge.session.records import LaneStatus, OutcomeRecord
    from egate.edge.session.states import Guidance
    from egate.edge.settings import Settings
    from egate.edge.uplink.link import MqttLink
    from egate.edge.uplink.messages import StatusPayload
    from egate.edge.uplink.outbox import Outbox
    from egate.engines.pipeline import FaceEngine


class RunningLane(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def started_mono(self) -> float: ...

    @property
    def device_health(self) -> Mapping[str, tuple[bool, str]]: ...

    @property
    def camera(self) -> Camera | None: ...

    @property
    def worker(self) -> FaceWorker | None: ...

    @property
    def engine(self) -> FaceEngine | None: ...

    @property
    def gate(self) -> GateController | None: ...

    @property
    def link(self) -> MqttLink | None: ...

    @property
    def gallery(self) -> GalleryStore | None: ...

    @property
    def outbox(self) -> Outbox | None: ...

    @property
    def reader(self) -> DocumentReader | None: ...

    @property
    def page_camera(self) -> Camera | None: ...

    @property
    def reader_last(self) -> tuple[ReaderResult, datetime] | None: ...

    @property
    def recent_outcomes(self) -> Sequence[OutcomeRecord]: ...

    @property
    def guidance(self) -> Guidance | None: ...

    @property
    def loop(self) -> LaneLoop | None: ...

    def status(self) -> LaneStatus: ...

    def device_summary(self) -> dict[str, DeviceSummary]: ...

    def status_payload(self) -> StatusPayload: ...

    def post(self, event: Event) -> None: ...

    def wait_gate_event(self, decision_id: str) -> tuple[threading.Event, list[GateEvent]]: ...

    def drop_gate_waiter(self, decision_id: str) -> None: ...
