"""The lane camera and its face worker as a lane part: one owner of the camera, newest frame only."""

from __future__ import annotations

from collections.abc import Callable

from egate.drivers.camera import Camera, CameraState
from egate.edge.lane.engine_part import EnginePart
from egate.edge.lane.health_board import HealthBoard
from egate.edge.lane.part import Part
from egate.edge.lane.vision import FaceWorker, LastFrame
from egate.edge.service.daemon import Health, StartError
from egate.edge.service.secrets import CredentialError, read_credential
from egate.edge.session.events import Event
from egate.edge.settings import Settings


class CameraPart(Part):
    name = "camera"

    def __init__(
        self, settings: Settings, *, engine: EnginePart, board: HealthBoard, post: Callable[[Event], None]
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._board = board
        self._post = post
        self._camera: Camera | None = None
        self._worker: FaceWorker | None = None

    @property
    def camera(self) -> Camera | None:
        return self._camera

    @property
    def worker(self) -> FaceWorker | None:
        return self._worker

    def last_frame(self) -> LastFrame | None:
        return self._worker.last_frame() if self._worker is not None else None

    def worker_stuck(self) -> bool:
        return self._worker is not None and self._worker.stuck()

    def start(self) -> None:
        cfg = self._settings.camera
        credential = None
        if cfg.credential:
            try:
                credential = read_credential(cfg.credential)
            except CredentialError as exc:
                raise StartError(f"camera: {exc}") from None
        self._camera = Camera(cfg, credential=credential, on_state=self._on_state)
        self._camera.start()
        self._worker = FaceWorker(self._camera, self._engine.engine, self._settings.engine.quality, self._post)
        self._worker.start()

    def _on_state(self, state: CameraState, error: str | None) -> None:
        ok = state == "streaming"
        self._board.report("camera", ok, "" if ok else f"camera {state}" + (f": {error}" if error else ""))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        if self._camera is not None:
            self._camera.close()

    def health(self) -> Health:
        st = self._require(self._camera, "the camera").stats()
        return Health(True, f"{st.state}, {st.fps} fps")
