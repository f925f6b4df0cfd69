"""128-D face descriptors from aligned chips with the converted dlib ResNet on any backend."""

from __future__ import annotations

import numpy as np

from egate.engines.backends.base import Session

DESCRIPTOR_DIM = 128
CHIP_SIZE = 150


class Embedder:
    """Runs the embedder graph: RGB uint8 chip (150, 150, 3) -> float32 descriptor (128,).

    The graph (engines/dlib_resnet.py) takes the chip as float32 0..255 in NCHW and applies dlib's
    (pixel - mean) / 256 itself, so no normalisation happens here. The descriptor is not normalised:
    dlib's metric loss trains Euclidean distances on the raw output.
    """

    def __init__(self, session: Session) -> None:
        if len(session.input_names) != 1 or len(session.output_names) < 1:
            raise ValueError(
                f"embedder model must have one input and an output, got inputs {session.input_names} "
                f"and outputs {session.output_names}; rebuild it with `egate models build`"
            )
        self.session = session
        self._input = session.input_names[0]

    def embed(self, chip_rgb: np.ndarray) -> np.ndarray:
        if chip_rgb.shape != (CHIP_SIZE, CHIP_SIZE, 3) or chip_rgb.dtype != np.uint8:
            raise ValueError(
                f"embedder wants an RGB uint8 chip of {CHIP_SIZE}x{CHIP_SIZE}x3 from egate.engines.alignment, "
                f"got {chip_rgb.dtype} {chip_rgb.shape}"
            )
        tensor = np.ascontiguousarray(chip_rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        out = self.session.run({self._input: tensor})[0]
        descriptor = np.asarray(out, dtype=np.float32).reshape(-1)
        if descriptor.shape != (DESCRIPTOR_DIM,):
            raise ValueError(f"embedder returned shape {descriptor.shape}, expected ({DESCRIPTOR_DIM},)")
        return descriptor

    def close(self) -> None:
        self.session.close()


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance, the metric dlib's ResNet was trained for (manifest distance_metric)."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
