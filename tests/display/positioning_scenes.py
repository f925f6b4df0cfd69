"""Lane camera scenes of real faces placed where the engine's quality measurements ask for positioning.

The photos are Labeled Faces in the Wild images from ../shared/data (through tests/shared_data.py):
250x250 news photos framed on one face, centred, about 110 px wide. Each scene pastes one photo onto
the empty lane (egate.tools.rig.lane.empty_frame) so that the face lands at a chosen place and size in the
640x480 camera frame, as a traveller standing there would appear:

- `too_far`: a frontal face ~90 px wide (eyes ~30 px apart, the gate wants 60): come closer;
- `too_close`: a frontal face ~70 % of the frame wide: step back (the gate stops at 55 %);
- `off_left` / `off_right`: a traveller at the side of the lane looking ahead, not at the camera (a
  head turned ~35 degrees, over the gate's 20), face centred at 22 % / 78 % of the width (the gate
  wants the centre within 30-70 %): move left / move right (the traveller's sides: the camera faces them);
- `turned`: the same turned head in the middle: look straight.

Nothing here computes guidance: the daemon's engine measures every frame and the session decides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from egate.tools.rig.lane import CLIP_FPS, FRAME_SIZE, IDLE_NAME, JPEG_QUALITY, Scene, empty_frame
from tests.shared_data import shared_data

LFW = "faces/lfw_krasserm"
# LFW frames each photo on its face: centre (125, 125) of 250 x 250, the face about 110 px wide.
LFW_FACE_CENTRE = (125.0, 128.0)
LFW_FACE_WIDTH = 110.0
FRONTAL = "Tony_Blair/Tony_Blair_0003.jpg"  # looks at the camera (yaw ~0)
TURNED = "Hugo_Chavez/Hugo_Chavez_0008.jpg"  # head turned ~35 degrees


@dataclass(frozen=True)
class Placement:
    photo: str  # under LFW
    centre_x: float  # face centre, fraction of the frame width
    face_width: float  # fraction of the frame width
    centre_y: float = 0.5


PLACEMENTS: dict[str, Placement] = {
    "too_far": Placement(FRONTAL, 0.5, 0.14),
    "too_close": Placement(FRONTAL, 0.5, 0.70, centre_y=0.52),
    "off_left": Placement(TURNED, 0.22, 0.34),
    "off_right": Placement(TURNED, 0.78, 0.34),
    "turned": Placement(TURNED, 0.5, 0.34),
}
# What the traveller should be asked for each scene (the screen the page must show).
EXPECTED_SCREEN = {
    "too_far": "come_closer",
    "too_close": "step_back",
    "off_left": "move_left",
    "off_right": "move_right",
    "turned": "look_straight",
}


def place_face(photo: np.ndarray, where: Placement) -> np.ndarray:
    """The empty lane with `photo` scaled and moved so its face sits at `where` (BGR, FRAME_SIZE)."""
    out_w, out_h = FRAME_SIZE
    frame = empty_frame().copy()
    scale = where.face_width * out_w / LFW_FACE_WIDTH
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    image = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=interpolation)
    # Top-left corner of the scaled photo in frame coordinates.
    x0 = round(where.centre_x * out_w - LFW_FACE_CENTRE[0] * scale)
    y0 = round(where.centre_y * out_h - LFW_FACE_CENTRE[1] * scale)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + image.shape[1], out_w), min(y0 + image.shape[0], out_h)
    frame[fy0:fy1, fx0:fx1] = image[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return frame


def scene_frame(name: str) -> np.ndarray:
    where = PLACEMENTS[name]
    photo = cv2.imread(str(shared_data(f"{LFW}/{where.photo}")), cv2.IMREAD_COLOR)
    assert photo is not None, where.photo
    return place_face(photo, where)


def write_still_scene(folder: Path, frame: np.ndarray, frames: int = 25) -> Scene:
    """A scene of `frames` identical frames (hard links of one JPEG) plus the rig's idle frame: looped by
    the camera, a traveller standing still (egate.tools.rig.lane.LaneRig.show)."""
    folder.mkdir(parents=True, exist_ok=False)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    cv2.imwrite(str(folder / IDLE_NAME), frame, params)
    for i in range(frames):
        os.link(folder / IDLE_NAME, folder / f"f-{i:06d}.jpg")
    return Scene(folder, frames, (), CLIP_FPS)
