"""Names and shapes of an ONNX model's graph inputs and outputs (for backends that do not report them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # an int per static dimension, the symbol name for a dynamic one


def _shape(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def graph_io(onnx_path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of the graph; initializers listed as inputs (old exporters) are left out."""
    import onnx  # here, not at the top: config validation imports the backends, never their models

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [TensorInfo(v.name, _shape(v)) for v in model.graph.input if v.name not in initializers]
    outputs = [TensorInfo(v.name, _shape(v)) for v in model.graph.output]
    return inputs, outputs
