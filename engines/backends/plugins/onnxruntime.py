"""CPU backend on onnxruntime's CPU execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from egate.engines.backends.base import Backend, Session
from egate.engines.backends.registry import BackendPlugin

if TYPE_CHECKING:
    import onnxruntime as ort


def session_options(threads: int) -> ort.SessionOptions:
    """Options for a small shared CPU: fixed thread count and no busy-waiting worker threads.

    onnxruntime's pool threads spin after each run waiting for more work; on a 2-core box that spin
    steals the core from the camera thread and the other model (measured on 2 cores: the other model's
    runs slow down while the pool spins), so spinning is turned off for both the intra-op and inter-op pools.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    return opts


class OnnxRuntimeSession(Session):
    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names}
        return [np.asarray(o) for o in self._session.run(self.output_names, feed)]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def load(self, onnx_path: Path, *, threads: int = 1) -> Session:
        return OnnxRuntimeSession(onnx_path, threads)


BACKEND = BackendPlugin(OnnxRuntimeBackend, "CPU: onnxruntime's CPU execution provider, worker threads never spin")
