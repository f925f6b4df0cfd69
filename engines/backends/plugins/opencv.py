"""CPU backend on OpenCV's DNN module (cv2.dnn): no extra dependency beyond opencv-python-headless."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from egate.engines.backends.base import Backend, Session
from egate.engines.backends.onnx_io import graph_io
from egate.engines.backends.registry import BackendPlugin


class OpenCVSession(Session):
    def __init__(self, onnx_path: Path, threads: int) -> None:
        inputs, outputs = graph_io(onnx_path)
        self.input_names = [t.name for t in inputs]
        self.output_names = [t.name for t in outputs]
        # cv2.setNumThreads is process-wide: the last session loaded sets it for all of them.
        cv2.setNumThreads(threads)
        self._net = cv2.dnn.readNetFromONNX(str(onnx_path))
        if int(cv2.__version__.split(".")[0]) < 5:
            # OpenCV 5's new graph engine runs on the CPU only and warns when a target is set.
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing model input(s) {sorted(missing)}; the model takes {self.input_names}")
        for name in self.input_names:
            self._net.setInput(np.ascontiguousarray(inputs[name], dtype=np.float32), name)
        outs = self._net.forward(self.output_names)
        return [np.asarray(o) for o in outs]


class OpenCVBackend(Backend):
    name = "opencv"

    def load(self, onnx_path: Path, *, threads: int = 1) -> Session:
        return OpenCVSession(onnx_path, threads)


BACKEND = BackendPlugin(OpenCVBackend, "CPU: OpenCV's DNN module, no runtime beyond opencv-python-headless")
