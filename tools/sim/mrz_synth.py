"""Synthetic travel documents for stress-testing MRZ reading: every ICAO 9303 layout, capture-like damage.

Each sample is one document page (TD1, TD2, TD3, MRV-A or MRV-B) with a random holder, printed in OCR-B
(Debian `fonts-ocr-b`, the typeface of ICAO 9303 part 3 §4.3) at the MRZ's fixed pitch over a busy page
(colour gradient, guilloche curves, micro-print, a portrait, visual-zone text), then damaged as a camera or a
page reader damages it. Every sample names one primary damage (`DEGRADATIONS`) so results can be split by it;
all samples also get mild sensor noise and a little tilt. About one document in seven carries a
deliberately wrong check digit (`broken_field`): a reader must report it invalid, never "repair" it.

Reproducible: sample `i` of seed `s` depends on (s, i) only, so a set can be regenerated or extended.

    egate bench mrz-synth --out DIR --seed 21 --count 300
"""

from __future__ import annotations

import json
import math
import string
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import typer
from PIL import Image, ImageDraw, ImageFont

from egate.drivers.document.icao_codes import ICAO_CODES
from egate.drivers.document.mrz import check_digit
from egate.drivers.document.mrz_locate import turn

OCR_B_FONT = Path("/usr/share/fonts/opentype/ocr-b/OCRB.otf")
FORMATS = ("TD1", "TD2", "TD3", "MRV-A", "MRV-B")
DEGRADATIONS = (
    "clean",
    "rotation",
    "perspective",
    "defocus",
    "motion_blur",
    "jpeg",
    "low_contrast",
    "glare",
    "uneven_light",
    "low_res",
    "upside_down",
    "combined",
)
# Page size in mm (ICAO 9303 parts 4-7) and where the MRZ sits.
_PAGE_MM = {"TD1": (85.6, 54.0), "TD2": (105.0, 74.0), "TD3": (125.0, 88.0), "MRV-A": (120.0, 80.0),
            "MRV-B": (105.0, 74.0)}  # fmt: skip
_LINES = {"TD1": (3, 30), "TD2": (2, 36), "TD3": (2, 44), "MRV-A": (2, 44), "MRV-B": (2, 36)}
_PITCH_MM = 2.54  # 10 characters per inch (part 3 §4.3)
_CAP_MM = 2.4  # nominal OCR-B character height in an MRZ
_LINE_PITCH_MM = 4.2
_LETTERS = string.ascii_uppercase
_ALNUM = string.ascii_uppercase + string.digits
_SYLLABLES = ("AN", "BER", "CA", "DO", "EL", "FI", "GAR", "HO", "IN", "JO", "KA", "LU", "MA", "NO", "OS", "PE",
              "QUI", "RA", "SO", "TA", "UL", "VI", "WEN", "XA", "YO", "ZE", "SCH", "TH", "AR", "ES", "IK", "MO")  # fmt: skip


@dataclass
class SynthParams:
    """What a set looks like; the defaults are the stress set `egate bench mrz` is measured on."""

    formats: tuple[str, ...] = FORMATS
    degradations: tuple[str, ...] = DEGRADATIONS
    invalid_share: float = 0.15
    char_px: tuple[float, float] = (16.0, 34.0)  # MRZ character height in the image, before damage
    low_res_char_px: tuple[float, float] = (11.5, 14.0)
    max_rotation_deg: float = 10.0
    max_perspective: float = 0.07  # corner shift, share of the page size
    face_dir: str | None = None  # portraits from here (jpg/png); synthetic blobs when None
    reference_day: str = "2026-01-01"  # expiry dates lie after it, births before it


@dataclass
class SampleTruth:
    seed: int
    index: int
    format: str
    lines: list[str]
    checks_valid: bool
    broken_field: str | None
    degradation: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    image: np.ndarray  # BGR
    truth: SampleTruth


# --- document data ---------------------------------------------------------------------------------


def _name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(int(rng.integers(2, 5))))


def _names_field(rng: np.random.Generator, width: int) -> str:
    surname = "<".join(_name(rng) for _ in range(int(rng.integers(1, 3))))
    given = "<".join(_name(rng) for _ in range(int(rng.integers(0, 4))))
    text = surname + ("<<" + given if given else "")
    return (text + "<" * width)[:width]


def _alnum(rng: np.random.Generator, n: int, letters_share: float = 0.35) -> str:
    return "".join(
        str(rng.choice(list(_LETTERS))) if rng.random() < letters_share else str(rng.integers(0, 10)) for _ in range(n)
    )


def _date(rng: np.random.Generator, year_from: int, year_to: int) -> str:
    y = int(rng.integers(year_from, year_to + 1))
    m = int(rng.integers(1, 13))
    d = int(rng.integers(1, 29))
    return f"{y % 100:02d}{m:02d}{d:02d}"


def _code(rng: np.random.Generator) -> str:
    return (str(rng.choice(sorted(ICAO_CODES))) + "<<")[:3]


def _number(rng: np.random.Generator) -> str:
    n = 9 if rng.random() < 0.8 else int(rng.integers(6, 9))
    return (_alnum(rng, n) + "<" * 9)[:9]


def _optional(rng: np.random.Generator, width: int) -> str:
    if rng.random() < 0.4:
        return "<" * width
    n = int(rng.integers(1, width + 1))
    return (_alnum(rng, n, 0.3) + "<" * width)[:width]


def _cd(data: str) -> str:
    return check_digit(data)


def build_mrz(fmt: str, rng: np.random.Generator, reference_year: int) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Valid MRZ lines of a random holder, and where each check digit sits: field -> (line, index)."""
    issuer, nationality = _code(rng), _code(rng) if rng.random() < 0.3 else None
    nationality = nationality or issuer
    number = _number(rng)
    birth = _date(rng, reference_year - 90, reference_year - 1)
    expiry = _date(rng, reference_year + 1, reference_year + 10)
    sex = str(rng.choice(["M", "F", "<"], p=[0.47, 0.47, 0.06]))
    if fmt == "TD1":
        code = str(rng.choice(["I<", "ID", "IR", "AC", "C<"]))
        opt1, opt2 = _optional(rng, 15), _optional(rng, 11)
        l1 = code + issuer + number + _cd(number) + opt1
        l2 = birth + _cd(birth) + sex + expiry + _cd(expiry) + nationality + opt2
        composite = _cd(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29])
        l2 += composite
        l3 = _names_field(rng, 30)
        where = {"number": (0, 14), "birth_date": (1, 6), "expiry_date": (1, 14), "composite": (1, 29)}
        return [l1, l2, l3], where
    n = _LINES[fmt][1]
    visa = fmt.startswith("MRV")
    code = str(rng.choice(["V<", "VD", "VI"])) if visa else (str(rng.choice(["P<", "PD", "PO"])) if n == 44 else
                                                             str(rng.choice(["I<", "ID", "AC"])))  # fmt: skip
    l1 = code + issuer + _names_field(rng, n - 5)
    body = number + _cd(number) + nationality + birth + _cd(birth) + sex + expiry + _cd(expiry)
    where = {"number": (1, 9), "birth_date": (1, 19), "expiry_date": (1, 27)}
    if visa:
        l2 = body + _optional(rng, n - 28)
    elif n == 44:
        opt = _optional(rng, 14)
        opt_cd = "<" if set(opt) == {"<"} and rng.random() < 0.5 else _cd(opt)
        l2 = body + opt + opt_cd
        l2 += _cd(l2[0:10] + l2[13:20] + l2[21:43])
        where |= {"optional_data": (1, 42), "composite": (1, 43)}
    else:
        l2 = body + _optional(rng, 7)
        l2 += _cd(l2[0:10] + l2[13:20] + l2[21:35])
        where["composite"] = (1, 35)
    return [l1, l2], where


def break_check_digit(fmt: str, lines: list[str], where: dict[str, tuple[int, int]], rng: np.random.Generator) -> str:
    """Print one wrong check digit (the issuer's mistake or a forgery); the composite covers what is printed."""
    fieldname = str(rng.choice(sorted(where)))
    li, i = where[fieldname]
    printed = lines[li][i]
    right = int(printed) if printed.isdigit() else 0
    wrong = str((right + int(rng.integers(1, 10))) % 10)
    lines[li] = lines[li][:i] + wrong + lines[li][i + 1 :]
    if fieldname != "composite" and "composite" in where:
        ci, cj = where["composite"]
        if fmt == "TD1":
            data = lines[0][5:30] + lines[1][0:7] + lines[1][8:15] + lines[1][18:29]
        else:
            end = cj
            data = lines[1][0:10] + lines[1][13:20] + lines[1][21:end]
        lines[ci] = lines[ci][:cj] + _cd(data) + lines[ci][cj + 1 :]
    return fieldname


# --- page ---------------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(OCR_B_FONT), size)


def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's built-in scalable font: no system font package needed for the visual zone.
    return ImageFont.load_default(size=size)


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))


def _gradient(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    a = np.array(_colour(rng, 185, 250), np.float32)
    b = np.array(_colour(rng, 185, 250), np.float32)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / (abs(w * math.cos(angle)) + abs(h * math.sin(angle)) + 1)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    return (a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]).astype(np.uint8)


def _guilloche(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, scale: float) -> None:
    """Interleaved sinusoid and rosette curves in light inks, the look of banknote/passport security print."""
    for _ in range(int(rng.integers(2, 5))):
        colour = _colour(rng, 120, 215)
        amp, freq, phase = rng.uniform(0.03, 0.15) * h, rng.uniform(1.5, 6) / w, rng.uniform(0, 6.3)
        step = rng.uniform(0.015, 0.05) * h
        width = max(1, round(scale * rng.uniform(0.08, 0.2)))
        for k in range(int(h / step) + 2):
            y0 = k * step
            wave = [
                (float(x), y0 + amp * math.sin(2 * math.pi * freq * x + phase + 0.4 * k)) for x in range(0, w + 8, 8)
            ]
            draw.line(wave, fill=colour, width=width)
    cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.15, 0.4) * min(w, h)
    colour = _colour(rng, 120, 210)
    n_petals, ratio = int(rng.integers(5, 13)), rng.uniform(0.2, 0.5)
    pts: list[tuple[float, float]] = []
    for t in np.linspace(0, 2 * math.pi * 7, 3000):
        rr = r * (1 - ratio + ratio * math.cos(n_petals * t / 7 * 3))
        pts.append((cx + rr * math.cos(t), cy + rr * math.sin(t)))
    draw.line(pts, fill=colour, width=max(1, round(scale * 0.1)))


def _microprint(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, scale: float) -> None:
    size = max(5, round(scale * 0.9))
    font = _label_font(size)
    colour = _colour(rng, 140, 210)
    for y in range(0, h, int(size * rng.uniform(2.5, 6))):
        text = "".join(rng.choice(list(_ALNUM)) for _ in range(int(w / size) + 2))
        draw.text((int(rng.integers(-size, 0)), y), text, fill=colour, font=font)


def _portrait(rng: np.random.Generator, w: int, h: int, faces: list[Path]) -> np.ndarray:
    if faces:
        img = cv2.imread(str(faces[int(rng.integers(0, len(faces)))]))
        if img is not None:
            return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    # A synthetic "photo": a backdrop, a head-and-shoulders blob and soft shading.
    out = np.full((h, w, 3), _colour(rng, 150, 240), np.uint8)
    skin = _colour(rng, 90, 220)
    cv2.ellipse(out, (w // 2, int(h * 1.05)), (int(w * 0.48), int(h * 0.35)), 0, 0, 360, _colour(rng, 20, 120), -1)
    cv2.ellipse(out, (w // 2, int(h * 0.45)), (int(w * 0.27), int(h * 0.3)), 0, 0, 360, skin, -1)
    cv2.ellipse(out, (w // 2, int(h * 0.25)), (int(w * 0.3), int(h * 0.15)), 0, 180, 360, _colour(rng, 10, 90), -1)
    return cv2.GaussianBlur(out, (0, 0), max(1.0, w / 60))


def _face_files(face_dir: str | None) -> list[Path]:
    if not face_dir:
        return []
    root = Path(face_dir)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def render_page(fmt: str, lines: list[str], rng: np.random.Generator, char_px: float, faces: list[Path]) -> tuple[
    np.ndarray, tuple[float, float, float, float]]:  # fmt: skip
    """The document page (BGR) and the MRZ's box (x0, y0, x1, y1) in its pixels."""
    px_mm = char_px / _CAP_MM
    wmm, hmm = _PAGE_MM[fmt]
    w, h = round(wmm * px_mm), round(hmm * px_mm)
    page = Image.fromarray(_gradient(rng, w, h)[..., ::-1].copy())
    draw = ImageDraw.Draw(page)
    _guilloche(draw, rng, w, h, px_mm)
    if rng.random() < 0.7:
        _microprint(draw, rng, w, h, px_mm)
    # Visual zone: portrait, labels and values, a document number in OCR-B (a decoy for the locator).
    pw, ph = round(w * 0.26), round(h * 0.5)
    px0, py0 = round(w * 0.04), round(h * 0.12)
    if rng.random() < 0.85:
        page.paste(Image.fromarray(_portrait(rng, pw, ph, faces)[..., ::-1].copy()), (px0, py0))
    label_font = _label_font(max(6, round(px_mm * 1.6)))
    value_font = _label_font(max(7, round(px_mm * 2.6)))
    ink = _colour(rng, 0, 70)
    x_text = px0 + pw + round(px_mm * 4)
    y = round(h * 0.08)
    draw.text((x_text, y), str(rng.choice(["PASSPORT", "IDENTITY CARD", "VISA", "RESIDENCE PERMIT"])), fill=ink,
              font=_label_font(max(8, round(px_mm * 3.5))))  # fmt: skip
    y += round(px_mm * 6)
    for label in ("Surname", "Given names", "Nationality", "Date of birth", "Date of expiry"):
        if y > h * 0.62:
            break
        draw.text((x_text, y), label, fill=_colour(rng, 60, 140), font=label_font)
        draw.text((x_text, y + round(px_mm * 1.8)), _name(rng), fill=ink, font=value_font)
        y += round(px_mm * 5.5)
    ocrb = _font(max(6, round(char_px * 1.35)))
    if rng.random() < 0.6:
        draw.text((round(w * 0.68), round(h * 0.08)), _alnum(rng, 9), fill=ink, font=ocrb)
    # The MRZ: fixed pitch, bottom of the page (part 3 §4.3, parts 4-7 for positions).
    n_lines, n_chars = _LINES[fmt]
    font = _font(round(char_px / _cap_ratio()))
    pitch = _PITCH_MM * px_mm
    x0 = (w - pitch * n_chars) / 2 + rng.uniform(-0.3, 0.3) * (w - pitch * n_chars) / 2
    line_pitch = _LINE_PITCH_MM * px_mm * rng.uniform(0.95, 1.08)
    bottom = h - rng.uniform(2.0, 4.0) * px_mm
    y_top = bottom - (n_lines - 1) * line_pitch - char_px
    mrz_ink = _colour(rng, 0, 45)
    for li, text in enumerate(lines):
        baseline = y_top + li * line_pitch + char_px
        for ci, ch in enumerate(text):
            draw.text((x0 + ci * pitch + pitch * 0.1, baseline), ch, fill=mrz_ink, font=font, anchor="ls")
    box = (x0, y_top, x0 + pitch * n_chars, bottom)
    return np.ascontiguousarray(np.array(page)[..., ::-1]), box


_CAP_RATIO: list[float] = []


def _cap_ratio() -> float:
    """Cap height of OCR-B as a share of its font size (measured once from the font)."""
    if not _CAP_RATIO:
        f = _font(200)
        _x0, y0, _x1, y1 = f.getbbox("H", anchor="ls")
        _CAP_RATIO.append((y1 - y0) / 200.0)
    return _CAP_RATIO[0]


# --- capture damage ----------------------------------------------------------------------------------


def _place_on_scene(page: np.ndarray, rng: np.random.Generator, margin: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = page.shape[:2]
    mx, my = round(w * margin), round(h * margin)
    scene = np.empty((h + 2 * my, w + 2 * mx, 3), np.uint8)
    scene[:] = _colour(rng, 20, 110)
    noise = rng.normal(0, 6, scene.shape[:2])
    scene = np.clip(scene.astype(np.float32) + noise[..., None], 0, 255).astype(np.uint8)
    scene[my : my + h, mx : mx + w] = page
    corners = np.array([[mx, my], [mx + w, my], [mx + w, my + h], [mx, my + h]], np.float32)
    return scene, corners


def _warp(scene: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(scene, m, (scene.shape[1], scene.shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    n = max(3, math.ceil(length) | 1)
    k = np.zeros((n, n), np.float32)
    c = n // 2
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    return k / max(1e-6, float(k.sum()))


def _defocus(img: np.ndarray, radius: float) -> np.ndarray:
    n = max(3, math.ceil(2 * radius) | 1)
    k = np.zeros((n, n), np.float32)
    cv2.circle(k, (n // 2, n // 2), max(1, round(radius)), 1.0, -1, cv2.LINE_AA)
    return cv2.filter2D(img, -1, k / float(k.sum()))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    return img if out is None else np.asarray(out)


def _glare(img: np.ndarray, rng: np.random.Generator, mrz_centre: tuple[float, float], char_px: float) -> np.ndarray:
    """Soft specular spots, one of them on or near the MRZ (the laminate reflects the light)."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for k in range(int(rng.integers(1, 4))):
        if k == 0:
            cx = mrz_centre[0] + rng.uniform(-0.3, 0.3) * w
            cy = mrz_centre[1] + rng.uniform(-1.5, 1.5) * char_px
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sx, sy = rng.uniform(0.04, 0.12) * w, rng.uniform(0.03, 0.1) * h
        strength = rng.uniform(0.45, 0.75)
        spot = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        out = out + (255 - out) * (strength * spot)[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _uneven_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle)
    lo = rng.uniform(0.3, 0.55)
    gain = lo + (1 - lo) * (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    vignette = 1 - 0.35 * (((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2)
    return np.clip(img.astype(np.float32) * (gain * vignette)[..., None], 0, 255).astype(np.uint8)


def _low_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    span = rng.uniform(0.2, 0.4)
    offset = rng.uniform(40, 255 * (1 - span) - 10)
    return np.clip(img.astype(np.float32) * span + offset, 0, 255).astype(np.uint8)


def _degrade(page: np.ndarray, box: tuple[float, float, float, float], kind: str, rng: np.random.Generator,
             params: SynthParams, char_px: float) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    applied: dict[str, Any] = {}
    kinds = {kind}
    if kind == "combined":
        kinds = set(rng.choice(["rotation", "perspective", "defocus", "motion_blur", "jpeg", "glare",
                                "uneven_light", "low_contrast"], size=3, replace=False))  # fmt: skip
    mild = kind == "combined"
    scene, corners = _place_on_scene(page, rng, margin=rng.uniform(0.04, 0.15))
    mrz_c = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]], np.float32) + corners[0]
    dst = corners.copy()
    if "perspective" in kinds:
        pw, ph = page.shape[1], page.shape[0]
        amount = params.max_perspective * (0.5 if mild else 1.0)
        jitter = rng.uniform(-amount, amount, (4, 2)) * np.array([pw, ph], np.float32)
        dst = (corners + jitter).astype(np.float32)
        applied["perspective_corner_shift_px"] = [round(float(v), 1) for v in jitter.ravel()]
    scene = _warp(scene, corners, dst) if "perspective" in kinds else scene
    if "perspective" in kinds:
        mrz_c = cv2.perspectiveTransform(mrz_c[None], cv2.getPerspectiveTransform(corners, dst))[0]
    if "glare" in kinds:
        scene = _glare(scene, rng, (float(mrz_c[0][0]), float(mrz_c[0][1])), char_px)
        applied["glare"] = True
    if "uneven_light" in kinds:
        scene = _uneven_light(scene, rng)
        applied["uneven_light"] = True
    # Every capture is a little tilted; "rotation" tilts it a lot.
    limit = params.max_rotation_deg * (0.6 if mild else 1.0)
    deg = rng.uniform(-limit, limit) if "rotation" in kinds else rng.uniform(-1.5, 1.5)
    if kind == "upside_down":
        deg += 180.0
    scene = turn(scene, deg)
    applied["rotation_deg"] = round(float(deg), 2)
    if "defocus" in kinds:
        radius = char_px * rng.uniform(0.06, 0.11) * (0.7 if mild else 1.0)
        scene = _defocus(scene, radius)
        applied["defocus_radius_px"] = round(float(radius), 2)
    if "motion_blur" in kinds:
        length = char_px * rng.uniform(0.12, 0.25) * (0.7 if mild else 1.0)
        angle = rng.uniform(0, math.pi)
        scene = cv2.filter2D(scene, -1, _motion_kernel(length, angle))
        applied["motion_blur"] = {"length_px": round(float(length), 2), "angle_deg": round(math.degrees(angle), 1)}
    if "low_contrast" in kinds:
        scene = _low_contrast(scene, rng)
        applied["low_contrast"] = True
    noise_sigma = rng.uniform(1.5, 4.0)
    scene = np.clip(scene.astype(np.float32) + rng.normal(0, noise_sigma, scene.shape), 0, 255).astype(np.uint8)
    applied["noise_sigma"] = round(float(noise_sigma), 2)
    quality = int(rng.integers(18, 40)) if "jpeg" in kinds else int(rng.integers(85, 96))
    if mild and "jpeg" in kinds:
        quality = int(rng.integers(35, 55))
    scene = _jpeg(scene, quality)
    applied["jpeg_quality"] = quality
    if mild:
        applied["combined"] = sorted(kinds)
    return scene, applied


def sample_kind(index: int, params: SynthParams) -> tuple[str, str]:
    """(format, damage) of sample `index`: formats cycle fastest, so every run of 60 covers every pair."""
    fmt = params.formats[index % len(params.formats)]
    return fmt, params.degradations[(index // len(params.formats)) % len(params.degradations)]


def generate_sample(seed: int, index: int, params: SynthParams | None = None) -> Sample:
    """Sample `index` of the set `seed`: the same (seed, index, params) always gives the same image."""
    params = params or SynthParams()
    rng = np.random.default_rng([seed, index])
    fmt, kind = sample_kind(index, params)
    ref_year = int(params.reference_day[:4])
    lines, where = build_mrz(fmt, rng, ref_year)
    broken = break_check_digit(fmt, lines, where, rng) if rng.random() < params.invalid_share else None
    lo, hi = params.low_res_char_px if kind == "low_res" else params.char_px
    char_px = float(rng.uniform(lo, hi))
    page, box = render_page(fmt, lines, rng, char_px, _face_files(params.face_dir))
    image, applied = _degrade(page, box, kind, rng, params, char_px)
    applied["mrz_char_px"] = round(char_px, 2)
    truth = SampleTruth(seed=seed, index=index, format=fmt, lines=lines, checks_valid=broken is None,
                        broken_field=broken, degradation=kind, params=applied)  # fmt: skip
    return Sample(image=image, truth=truth)


def write_set(out: Path, seed: int, count: int, params: SynthParams | None = None, start: int = 0) -> list[Path]:
    """Write `count` samples as `NNNN_FORMAT_DEGRADATION.png` with `.txt` (MRZ lines) and `.json` truth."""
    params = params or SynthParams()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        s = generate_sample(seed, index, params)
        stem = out / f"{index:04d}_{s.truth.format}_{s.truth.degradation}"
        # PNG: lossless, so the JPEG damage applied (or not) is the only compression in the image.
        cv2.imwrite(str(stem.with_suffix(".png")), s.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        stem.with_suffix(".txt").write_text("\n".join(s.truth.lines) + "\n", encoding="ascii")
        stem.with_suffix(".json").write_text(json.dumps(asdict(s.truth)), encoding="ascii")
        paths.append(stem.with_suffix(".png"))
    (out / "set.json").write_text(json.dumps({"seed": seed, "start": start, "count": count,
                                              "params": asdict(params)}, indent=1))  # fmt: skip
    return paths


def synth_command(
    out: Path = typer.Option(..., "--out", file_okay=False, help="Folder to write the images into."),
    seed: int = typer.Option(21, "--seed", help="Set seed: the same seed gives the same set."),
    count: int = typer.Option(300, "--count", min=1, help="Number of images."),
    start: int = typer.Option(0, "--start", min=0, help="First sample index (extend a set)."),
    face_dir: Path | None = typer.Option(
        None, "--faces", exists=True, file_okay=False, help="Portrait photos to paste (default: synthetic blobs)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Generate a seeded set of synthetic documents (TD1/TD2/TD3/MRV-A/MRV-B) with capture damage."""
    if not OCR_B_FONT.exists():
        typer.echo(f"OCR-B font missing ({OCR_B_FONT}): apt-get install fonts-ocr-b", err=True)
        raise typer.Exit(2)
    params = SynthParams(face_dir=str(face_dir) if face_dir else None)
    paths = write_set(out, seed, count, params, start)
    report = {"out": str(out), "seed": seed, "start": start, "count": len(paths), "params": asdict(params)}
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        typer.echo(f"wrote {len(paths)} images to {out} (seed {seed})")


def register(app: typer.Typer) -> None:
    """Add `mrz-synth` to the `bench` group."""
    app.command("mrz-synth")(synth_command)
