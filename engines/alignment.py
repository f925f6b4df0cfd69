"""Aligned face chips: an exact port of dlib's `get_face_chip_details` + `extract_image_chip`.

The dlib ResNet was trained on chips cut this way, so any other warp moves descriptors: a naive
`cv2.warpAffine` with the same similarity transform moves them by ~0.07 (euclidean), an exact port
by < 0.01 (see tests/engine/test_engine_alignment.py). Hand-written because dlib offers this only on
dlib image types through its own Python binding, and we want the same bytes from numpy images
without depending on the binding in the hot path. Ported from dlib 19.24/20.0:
- image_transforms/interpolation.h: get_face_chip_details, chip_details(chip_points, img_points,
  dims), extract_image_chips, transform_image, interpolate_bilinear;
- geometry/point_transforms.h: find_similarity_transform (Umeyama), find_affine_transform;
- geometry/drectangle.h: width = right - left + 1, centered_drect, conversion to rectangle;
- image_transforms/image_pyramid.h: pyramid_down<2> (5-tap [1 4 6 4 1] blur, drop every other
  row/column, integer division by 256, point_down(p) = p/2 - (1.25, 0.75)).

When the face region is much larger than the chip (close kiosk cameras, large ops photos), dlib
first blurs and halves the region until it is no larger than the chip, then interpolates
bilinearly: otherwise bilinear sampling at a large step degenerates into nearest neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# dlib's mean 5-point face (get_face_chip_details): right eye outer/inner, left eye outer/inner,
# nose base, as fractions of the chip before padding (in the order dlib's 5-point model outputs).
_MEAN_FACE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class ChipDetails:
    """dlib's chip_details: a rotated rectangle in the image (drectangle l, t, r, b) and a size."""

    left: float
    top: float
    right: float
    bottom: float
    angle: float
    rows: int
    cols: int

    @property
    def area(self) -> float:
        return _area(self.left, self.top, self.right, self.bottom)


def _area(left: float, top: float, right: float, bottom: float) -> float:
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)  # drectangle's inclusive width/height


def _similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib find_similarity_transform: Umeyama's least-squares similarity, src -> dst."""
    mean_src = src.mean(axis=0)
    mean_dst = dst.mean(axis=0)
    sigma_src = float(((src - mean_src) ** 2).sum(axis=1).mean())
    cov = (dst - mean_dst).T @ (src - mean_src) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det_cov = float(np.linalg.det(cov))
    if det_cov < 0 or (det_cov == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        if d[1] < d[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = 1.0 if sigma_src == 0 else float(np.trace(np.diag(d) @ s)) / sigma_src
    m = c * r
    return m, mean_dst - m @ mean_src


def face_chip_details(landmarks5: np.ndarray, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """dlib get_face_chip_details for a 5-point shape (points in dlib's 5-point order)."""
    points = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    if padding < 0 or size <= 0:
        raise ValueError(f"face chip size must be > 0 and padding >= 0 (got size={size}, padding={padding})")
    chip_points = (padding + _MEAN_FACE_5) / (2 * padding + 1) * size
    m, b = _similarity_transform(chip_points, points)
    p = m @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    center = m @ np.array([size / 2.0, size / 2.0]) + b
    # centered_drect(p, w, h) shrinks w and h by one first (inclusive drectangle corners).
    half_w = (size * scale - 1) / 2
    half_h = (size * scale - 1) / 2
    return ChipDetails(
        center[0] - half_w, center[1] - half_h, center[0] + half_w, center[1] + half_h, angle, size, size
    )


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """pyramid_down<2>::rect_down: each corner p -> p/2 - (1.25, 0.75)."""
    left, top, right, bottom = rect
    x1, y1 = left / 2.0 - 1.25, top / 2.0 - 0.75
    x2, y2 = right / 2.0 - 1.25, bottom / 2.0 - 0.75
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def pyramid_down_rgb(image: np.ndarray) -> np.ndarray:
    """pyramid_down<2> on an RGB uint8 image: [1 4 6 4 1]^2 / 256 blur, keep every other pixel."""
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, 3), dtype=np.uint8)
    src = image.astype(np.int32)
    out_cols = (cols - 3) // 2
    out_rows = (rows - 3) // 2
    e = 2 * out_cols  # row filter: columns 2c .. 2c+4 for c < out_cols
    temp = (src[:, 0:e:2] + 4 * src[:, 1 : e + 1 : 2] + 6 * src[:, 2 : e + 2 : 2] + 4 * src[:, 3 : e + 3 : 2]) + src[
        :, 4 : e + 4 : 2
    ]
    f = 2 * out_rows  # column filter: rows 2d .. 2d+4 for d < out_rows
    down = (temp[0:f:2] + 4 * temp[1 : f + 1 : 2] + 6 * temp[2 : f + 2 : 2] + 4 * temp[3 : f + 3 : 2]) + temp[
        4 : f + 4 : 2
    ]
    return (down // 256).astype(np.uint8)


def _rotate(center: np.ndarray, point: np.ndarray, angle: float) -> np.ndarray:
    ca, sa = math.cos(angle), math.sin(angle)
    d = point - center
    return np.array([ca * d[0] - sa * d[1], sa * d[0] + ca * d[1]]) + center


def _corners(rect: tuple[float, float, float, float]) -> tuple[np.ndarray, ...]:
    left, top, right, bottom = rect
    return (
        np.array([left, top]),
        np.array([right, top]),
        np.array([left, bottom]),
        np.array([right, bottom]),
    )


def _bilinear(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """dlib interpolate_bilinear on every (x, y); black where the 2x2 support leaves the image.

    Same arithmetic as dlib, in the same order and in float64, so the truncation to uint8 lands on
    the same side: (1-tb)*((1-lr)*tl + lr*tr) + tb*((1-lr)*bl + lr*br).
    """
    rows, cols = image.shape[:2]
    if rows < 2 or cols < 2:
        return np.zeros((*xs.shape, 3), dtype=np.uint8)
    left = np.floor(xs)
    top = np.floor(ys)
    inside = (left >= 0) & (top >= 0) & (left < cols - 1) & (top < rows - 1)
    lr = xs - left
    tb = ys - top
    idx = np.clip(top, 0, rows - 2).astype(np.intp) * cols + np.clip(left, 0, cols - 2).astype(np.intp)
    # One 32-bit word per pixel (RGB + a pad byte) makes the 4-corner gather a single fast take.
    words = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2RGBA).reshape(-1).view(np.uint32)
    quad = np.take(words, np.stack([idx, idx + 1, idx + cols, idx + cols + 1]))
    corners = quad.view(np.uint8).reshape(*quad.shape, 4)[..., :3].astype(np.float64)
    ilr = (1 - lr)[..., None]
    flr = lr[..., None]
    itb = (1 - tb)[..., None]
    ftb = tb[..., None]
    upper = ilr * corners[0]
    upper += flr * corners[1]
    lower = ilr * corners[2]
    lower += flr * corners[3]
    upper *= itb
    lower *= ftb
    upper += lower
    # assign_pixel(unsigned char, double) truncates (static_cast) after clamping to 0..255.
    np.clip(upper, 0, 255, out=upper)
    out = upper.astype(np.uint8)
    out[~inside] = 0
    return out


def extract_image_chip(image_rgb: np.ndarray, chip: ChipDetails) -> np.ndarray:
    """dlib extract_image_chip(img, chip) with interpolate_bilinear, for an RGB uint8 image."""
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
    rows, cols = image_rgb.shape[:2]
    rect = (chip.left, chip.top, chip.right, chip.bottom)
    size = chip.rows * chip.cols
    if chip.angle == 0 and chip.rows == chip.bottom - chip.top + 1 and chip.cols == chip.right - chip.left + 1:
        # Unrotated, unscaled: dlib copies the pixels (zero outside the image).
        out = np.zeros((chip.rows, chip.cols, 3), dtype=np.uint8)
        l0, t0 = math.floor(chip.left + 0.5), math.floor(chip.top + 0.5)
        ys = slice(max(t0, 0), min(t0 + chip.rows, rows))
        xs = slice(max(l0, 0), min(l0 + chip.cols, cols))
        if ys.start < ys.stop and xs.start < xs.stop:
            out[ys.start - t0 : ys.stop - t0, xs.start - l0 : xs.stop - l0] = image_rgb[ys, xs]
        return out

    # How deep must the pyramid be, and how big a crop does it need (a border of 2 px per level).
    depth = 0
    grow = 2.0
    r = _rect_down(rect)
    while _area(*r) > size:
        r = _rect_down(r)
        depth += 1
        grow = grow * 2 + 2
    center = np.array([(chip.left + chip.right) / 2.0, (chip.top + chip.bottom) / 2.0])
    rotated = [_rotate(center, c, chip.angle) for c in _corners(rect)]
    xs_r = [p[0] for p in rotated]
    ys_r = [p[1] for p in rotated]
    bl = max(min(xs_r) - grow, 0.0)
    bt = max(min(ys_r) - grow, 0.0)
    br = min(max(xs_r) + grow, float(cols - 1))
    bb = min(max(ys_r) + grow, float(rows - 1))
    # drectangle -> rectangle rounds each side with floor(x + 0.5).
    box_l, box_t = math.floor(bl + 0.5), math.floor(bt + 0.5)
    box_r, box_b = math.floor(br + 0.5), math.floor(bb + 0.5)
    if box_l > box_r or box_t > box_b:
        return np.zeros((chip.rows, chip.cols, 3), dtype=np.uint8)
    source = image_rgb[box_t : box_b + 1, box_l : box_r + 1]
    for _ in range(depth):
        source = pyramid_down_rgb(source)

    # The chip rectangle in the chosen pyramid level's coordinates.
    r = (rect[0] - box_l, rect[1] - box_t, rect[2] - box_l, rect[3] - box_t)
    while _area(*_rect_down(r)) > size:
        r = _rect_down(r)
    center = np.array([(r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0])
    tl, tr, bl_, _ = (_rotate(center, c, chip.angle) for c in _corners(r))
    # Affine map chip -> source from three corners (dlib find_affine_transform, exact for 3 points).
    src_pts = np.array([[0.0, 0.0, 1.0], [chip.cols - 1.0, 0.0, 1.0], [0.0, chip.rows - 1.0, 1.0]])
    dst_pts = np.stack([tl, tr, bl_])
    affine = (dst_pts.T @ np.linalg.pinv(src_pts.T)).astype(np.float64)  # Q * pinv(P), 2x3
    cc, rr = np.meshgrid(np.arange(chip.cols, dtype=np.float64), np.arange(chip.rows, dtype=np.float64))
    xs = affine[0, 0] * cc + affine[0, 1] * rr + affine[0, 2]
    ys = affine[1, 0] * cc + affine[1, 1] * rr + affine[1, 2]
    return _bilinear(source, xs, ys)


def face_chip(image_rgb: np.ndarray, landmarks5: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The aligned RGB uint8 chip (size x size) dlib's `get_face_chip` would cut.

    `landmarks5` is (5, 2) x, y in dlib's 5-point order. dlib's own shapes hold integer points;
    given those, the result equals dlib's byte for byte (up to float rounding in the transform).
    """
    return extract_image_chip(image_rgb, face_chip_details(landmarks5, size, padding))
