"""The face engine as a lane part: the models loaded once, before anything that needs their id."""

from __future__ import annotations

from egate.edge.lane.part import Part
from egate.edge.service.daemon import StartError
from egate.edge.settings import Settings
from egate.engines.pipeline import FaceEngine


class EnginePart(Part):
    name = "engine"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: FaceEngine | None = None

    @property
    def engine(self) -> FaceEngine:
        return self._require(self._engine, "the face engine")

    @property
    def loaded(self) -> FaceEngine | None:
        return self._engine

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def threshold(self) -> float:
        return self.engine.threshold

    def start(self) -> None:
        model_dir = self._settings.state.resolved_model_dir()
        try:
            self._engine = FaceEngine.from_config(self._settings.engine, model_dir)
        except Exception as exc:
            raise StartError(
                f"engine: face models in {model_dir} cannot be loaded ({exc}); run `egate models build` "
                f"(or set state.model_dir), then `egate diag engines`"
            ) from None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
