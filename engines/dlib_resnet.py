"""Convert dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) to ONNX.

dlib stores a network by recursive serialisation of its template stack (dlib/dnn/core.h):
every wrapper writes its version first and then its sub-network, and each computational layer
(`add_layer`) writes its details *after* its sub-network. So the file is
`loss layer, [wrapper versions outermost -> innermost], input layer, [layer details innermost ->
outermost]`. Tag and skip layers write only a version (1) and carry no id, so the topology cannot
be read from the file alone: we rebuild it from the network definition published with the model
(dlib's `dnn_face_recognition_ex.cpp`, `anet_type`) and check every layer in the file against it
(kind, version string, filter counts, strides, paddings) before writing a single ONNX node.

Primitive encodings (dlib/serialize.h, dlib/dnn/tensor.h):
- integers: one control byte (bit 7 = negative, low nibble = number of bytes) + little-endian bytes;
- float/double: integer mantissa and integer exponent (value = mantissa * 2**exponent);
- strings: integer length + bytes; bools: the characters '1' / '0';
- resizable_tensor (version 2): n, k, nr, nc, then n*k*nr*nc little-endian float32;
- alias_tensor (version 1): n, k, nr, nc only (a view into the layer's params tensor).

Graph semantics reproduced (dlib/dnn/layers.h, cpu_dlib.cpp):
- input_rgb_image_sized: planes R, G, B; value = (pixel - mean) / 256. The normalisation is put in
  the graph, so the ONNX input is the RGB chip as float32 0..255, NCHW [1, 3, 150, 150].
- con_: cross-correlation; stride-2 convolutions in this net have padding 0 (dlib's default
  padding is `stride != 1 ? 0 : size/2`), stride-1 ones pad 1.
- affine_ (the inference form of batch norm): x * gamma + beta per channel, folded into the
  preceding convolution (w * gamma, b * gamma + beta), computed in float64 then rounded once.
- add_prev_: the output takes the largest size in every dimension and the smaller input is read as
  zero outside its bounds, so the 3x3 stride-2 branch (3x3 from 8x8) is zero-padded at the bottom
  and right to the 4x4 of the 2x2 average-pooled shortcut (and 1x1 to 2x2 in the last level), and
  the shortcut is zero-padded in channels (32 -> 64, 64 -> 128, 128 -> 256).
- avg_pool_ 2x2 stride 2 without padding (odd rows/columns dropped), avg_pool_everything = global
  average; fc_ without bias: out = in (1x256) * W (256x128).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from egate.engines.atomic_file import atomic_write_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "descriptor"
CHIP_SIZE = 150
OPSET = 13
# Written into the model so a changed converter changes the file's sha256 (and so the model id).
CONVERTER_VERSION = "1"


class DlibFormatError(ValueError):
    """The .dat file is not the dlib ResNet this converter knows; the message says where it differs."""


# --------------------------------------------------------------------------- reading the file


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def _fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.path}: byte {self.pos}: {what}")

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self._fail(f"file ends early (needed {n} more bytes); is the download complete?")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise self._fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0**exponent

    def string(self) -> str:
        size = self.integer()
        if not 0 <= size <= 1024:
            raise self._fail(f"implausible string length {size}")
        return self._take(size).decode("ascii")

    def boolean(self) -> bool:
        char = self._take(1)
        if char not in (b"0", b"1"):
            raise self._fail(f"expected a serialised bool ('0' or '1'), found {char!r}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise self._fail(f"resizable_tensor version {version}, expected 2")
        dims = [self.integer() for _ in range(4)]
        count = int(np.prod(dims))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        version = self.integer()
        if version != 1:
            raise self._fail(f"alias_tensor version {version}, expected 1")
        n, k, nr, nc = (self.integer() for _ in range(4))
        return (n, k, nr, nc)


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray  # (out,)
    stride: int
    padding: int


@dataclass
class Affine:
    gamma: np.ndarray
    beta: np.ndarray


@dataclass
class Pool:
    kind: Literal["max", "avg"]
    size: int  # 0 = whole input (avg_pool_everything)
    stride: int
    padding: int


@dataclass
class Simple:
    kind: Literal["relu", "add_prev"]


@dataclass
class Fc:
    weight: np.ndarray  # (in, out)


Layer = Conv | Affine | Pool | Simple | Fc


@dataclass
class DlibResNet:
    means_rgb: tuple[float, float, float]
    size: int
    wrapper_versions: list[int]  # outermost first; 2 = add_layer, 1 = tag or skip, 3 = on the input
    layers: list[Layer] = field(default_factory=list)  # innermost first


def _read_details(r: _Reader) -> Layer:
    name = r.string()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
        filters = r.alias()
        biases = r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            r.real()
        if (nr, stride_y, pad_y) != (nc, stride_x, pad_x) or filters[0] != num_filters:
            raise r._fail(f"unsupported con_ geometry {nr}x{nc} stride {stride_y},{stride_x}")
        n_w = int(np.prod(filters))
        weight = params[:n_w].reshape(filters)
        bias = params[n_w : n_w + int(np.prod(biases))].reshape(-1)
        return Conv(weight, bias, stride_y, pad_y)
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma_shape = r.alias()
        r.alias()
        mode = r.integer()
        if mode != 0:
            raise r._fail("affine_ in FC_MODE; this converter supports the CONV_MODE of the ResNet")
        channels = int(np.prod(gamma_shape))
        return Affine(params[:channels].copy(), params[channels : 2 * channels].copy())
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
        if (nr, stride_y, pad_y) != (nc, stride_x, pad_x):
            raise r._fail(f"unsupported {name} geometry")
        return Pool("max" if name.startswith("max") else "avg", nr, stride_y, pad_y)
    if name == "relu_":
        return Simple("relu")
    if name == "add_prev_":
        return Simple("add_prev")
    if name == "fc_2":
        num_outputs, num_inputs = r.integer(), r.integer()
        params = r.tensor().reshape(-1)
        weights = r.alias()
        r.alias()
        bias_mode = r.integer()
        for _ in range(4):
            r.real()
        if bias_mode != 1:
            raise r._fail("fc_ with a bias; the dlib ResNet uses fc_no_bias")
        return Fc(params[: num_inputs * num_outputs].reshape(weights[0], weights[1]).copy())
    raise r._fail(f"unknown layer {name!r}; this converter reads dlib's face-recognition ResNet only")


def read_dlib_resnet(dat_path: Path) -> DlibResNet:
    """Parse the .dat file into its layers (innermost first); no topology yet."""
    r = _Reader(dat_path.read_bytes(), dat_path)
    try:
        loss = r.string() if r.integer() == 1 else ""
    except DlibFormatError:
        loss = ""
    if loss != "loss_metric_2":
        raise r._fail(f"loss layer {loss!r}, expected 'loss_metric_2' (the face-recognition ResNet)")
    r.real()  # margin
    r.real()  # distance threshold (0.6): dlib's own suggestion, we calibrate our own
    versions: list[int] = []
    while True:
        version = r.integer()
        versions.append(version)
        if version == 3:  # add_layer directly on the input layer
            break
        if version not in (1, 2) or len(versions) > 10_000:
            raise r._fail(f"unexpected wrapper version {version}")
    if r.string() != "input_rgb_image_sized":
        raise r._fail("input layer is not input_rgb_image_sized")
    means = (r.real(), r.real(), r.real())
    rows, cols = r.integer(), r.integer()
    if rows != cols:
        raise r._fail(f"non-square input {rows}x{cols}")
    net = DlibResNet(means_rgb=means, size=rows, wrapper_versions=versions)
    computational = sum(1 for v in versions if v in (2, 3))
    for index in range(computational):
        net.layers.append(_read_details(r))
        for _ in range(3):  # setup-called / gradient-stale / output-disabled flags
            r.boolean()
        for _ in range(3):  # x_grad, cached_output, params_grad (or grad_final): empty here
            r.tensor()
        if index == 0:
            r.integer()  # _sample_expansion_factor of the add_layer on the input
    if r.pos != len(r.data):
        raise r._fail(f"{len(r.data) - r.pos} trailing bytes after the network")
    return net


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class _Op:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    arg: int = 0  # filters for con, stride for con/pool, tag id for tag/skip/add_prev
    stride: int = 1


def _anet_type() -> list[_Op]:
    """dlib's `anet_type` (dnn_face_recognition_ex.cpp) innermost first, tags and skips included.

    residual      = add_prev1<block<N, 1, tag1<x>>>
    residual_down = add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N, 2, tag1<x>>>>>>
    block         = affine<con<N,3,3,1,1, relu<affine<con<N,3,3,stride,stride, x>>>>>
    ares = relu<residual>, ares_down = relu<residual_down>
    """

    def block(n: int, stride: int) -> list[_Op]:
        return [
            _Op("con", n, stride),
            _Op("affine"),
            _Op("relu"),
            _Op("con", n, 1),
            _Op("affine"),
        ]

    def ares(n: int) -> list[_Op]:
        return [_Op("tag", 1), *block(n, 1), _Op("add_prev", 1), _Op("relu")]

    def ares_down(n: int) -> list[_Op]:
        return [
            _Op("tag", 1),
            *block(n, 2),
            _Op("tag", 2),
            _Op("skip", 1),
            _Op("avg_pool", 2, 2),
            _Op("add_prev", 2),
            _Op("relu"),
        ]

    ops = [_Op("con", 32, 2), _Op("affine"), _Op("relu"), _Op("max_pool", 3, 2)]
    ops += ares(32) * 3  # alevel4
    ops += ares_down(64) + ares(64) * 3  # alevel3
    ops += ares_down(128) + ares(128) * 2  # alevel2
    ops += ares_down(256) + ares(256) * 2  # alevel1
    ops += ares_down(256)  # alevel0
    ops += [_Op("avg_pool", 0, 1), _Op("fc", 128)]
    return ops


def _check_topology(net: DlibResNet, ops: list[_Op]) -> None:
    expected_versions = [1 if op.kind in ("tag", "skip") else 2 for op in reversed(ops)]
    expected_versions[-1] = 3
    if net.wrapper_versions != expected_versions:
        raise DlibFormatError(
            "the layer stack in the .dat file is not dlib's face-recognition ResNet (anet_type): "
            f"{len(net.wrapper_versions)} wrappers found, {len(expected_versions)} expected"
        )
    computational = [op for op in ops if op.kind not in ("tag", "skip")]
    for i, (op, layer) in enumerate(zip(computational, net.layers, strict=True)):
        if not _layer_matches(op, layer):
            raise DlibFormatError(f"layer {i} (innermost first) is {layer!r:.80}, expected {op}")


def _layer_matches(op: _Op, layer: Layer) -> bool:
    if op.kind == "con":
        same_padding = 0 if op.stride != 1 else 1  # dlib's default: stride != 1 ? 0 : 3/2
        return (
            isinstance(layer, Conv)
            and layer.weight.shape[0] == op.arg
            and layer.stride == op.stride
            and layer.padding == (same_padding if layer.weight.shape[2] == 3 else 0)
        )
    if op.kind == "affine":
        return isinstance(layer, Affine)
    if op.kind in ("relu", "add_prev"):
        return isinstance(layer, Simple) and layer.kind == op.kind
    if op.kind in ("max_pool", "avg_pool"):
        return (
            isinstance(layer, Pool)
            and layer.kind == op.kind.split("_")[0]
            and (layer.size, layer.stride, layer.padding) == (op.arg, op.stride, 0)
        )
    return isinstance(layer, Fc) and layer.weight.shape[1] == op.arg


# --------------------------------------------------------------------------- ONNX graph


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _pad_to(g: _GraphBuilder, x: str, shape: tuple[int, int, int], target: tuple[int, int, int]) -> str:
    """Zero-pad (C, H, W) at the end of each axis, as dlib's tt::add reads out-of-bounds as 0."""
    if shape == target:
        return x
    pads = [0, 0, 0, 0, 0, target[0] - shape[0], target[1] - shape[1], target[2] - shape[2]]
    return g.node("Pad", [x, g.const("pads", np.array(pads, dtype=np.int64))], mode="constant")


def build_onnx(net: DlibResNet) -> onnx.ModelProto:
    """Rebuild the network as an ONNX model (input 'input' RGB 0..255 NCHW, output 'descriptor')."""
    ops = _anet_type()
    _check_topology(net, ops)
    g = _GraphBuilder()
    means = np.array(net.means_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
    x = g.node("Sub", [INPUT_NAME, g.const("mean_rgb", means)])
    x = g.node("Mul", [x, g.const("inv_256", np.array(1.0 / 256.0, dtype=np.float32))])
    shape = (3, net.size, net.size)
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    layers = iter(net.layers)
    pending_conv: Conv | None = None

    def emit_conv(conv: Conv, affine: Affine | None) -> None:
        nonlocal x, shape
        w = conv.weight.astype(np.float64)
        b = conv.bias.astype(np.float64)
        if affine is not None:
            gamma = affine.gamma.astype(np.float64)
            w = w * gamma[:, None, None, None]
            b = b * gamma + affine.beta.astype(np.float64)
        k = conv.weight.shape[2]
        x = g.node(
            "Conv",
            [x, g.const("conv_w", w.astype(np.float32)), g.const("conv_b", b.astype(np.float32))],
            kernel_shape=[k, k],
            strides=[conv.stride, conv.stride],
            pads=[conv.padding] * 4,
        )
        size = (shape[1] + 2 * conv.padding - k) // conv.stride + 1
        shape = (conv.weight.shape[0], size, size)

    for op in ops:
        if op.kind == "tag":
            tags[op.arg] = (x, shape)
            continue
        if op.kind == "skip":
            x, shape = tags[op.arg]
            continue
        layer = next(layers)
        if isinstance(layer, Conv):
            pending_conv = layer
            continue
        if isinstance(layer, Affine):
            if pending_conv is None:
                raise DlibFormatError("affine_ layer without a preceding con_ layer")
            emit_conv(pending_conv, layer)
            pending_conv = None
            continue
        if pending_conv is not None:  # a convolution without affine (not in this net, kept exact)
            emit_conv(pending_conv, None)
            pending_conv = None
        if isinstance(layer, Simple) and layer.kind == "relu":
            x = g.node("Relu", [x])
        elif isinstance(layer, Simple):
            other, other_shape = tags[op.arg]
            target = (
                max(shape[0], other_shape[0]),
                max(shape[1], other_shape[1]),
                max(shape[2], other_shape[2]),
            )
            x = g.node("Add", [_pad_to(g, x, shape, target), _pad_to(g, other, other_shape, target)])
            shape = target
        elif isinstance(layer, Pool) and layer.size == 0:
            x = g.node("GlobalAveragePool", [x])
            shape = (shape[0], 1, 1)
        elif isinstance(layer, Pool):
            x = g.node(
                "MaxPool" if layer.kind == "max" else "AveragePool",
                [x],
                kernel_shape=[layer.size, layer.size],
                strides=[layer.stride, layer.stride],
            )
            size = (shape[1] - layer.size) // layer.stride + 1
            shape = (shape[0], size, size)
        elif isinstance(layer, Fc):
            flat = g.node("Flatten", [x], axis=1)
            x = g.node("MatMul", [flat, g.const("fc_w", layer.weight.astype(np.float32))])
    # Rename the last node's output to the public name.
    g.nodes[-1].output[0] = OUTPUT_NAME
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, net.size, net.size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 128])],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="egate.engines.dlib_resnet",
        producer_version=CONVERTER_VERSION,
        doc_string=(
            "dlib_face_recognition_resnet_model_v1 (CC0, Davis King) converted by egate. "
            "Input: RGB face chip from get_face_chip(150, padding 0.25) as float32 0..255, NCHW; "
            "normalisation (x - mean_rgb) / 256 is inside the graph. Output: 128-D descriptor "
            "(not normalised), compared by Euclidean distance."
        ),
    )
    model.ir_version = 8  # onnxruntime >= 1.14, TensorRT 10 and cv2.dnn all read IR 8
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_dlib_resnet(dat_path: Path, onnx_path: Path) -> None:
    """Parse `dat_path` and write the ONNX model to `onnx_path` atomically; same input, same bytes."""
    model = build_onnx(read_dlib_resnet(dat_path))
    atomic_write_bytes(onnx_path, model.SerializeToString(deterministic=True))
