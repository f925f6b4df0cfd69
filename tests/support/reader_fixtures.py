"""Shared helpers for the document-reader tests: test strings pulled from ../shared/data, images, PTYs."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.shared_data import shared_data

UTOPIA_TD3 = ["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"]
UTOPIA_TD2 = ["I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "D231458907UTO7408122F1204159<<<<<<<6"]
BCBP_ONE_LEG = "M1DESMARAIS/LUC       EABC123 YULFRAAC 0834 326J001A0025 100"
OCR_B_FONT = Path("/usr/share/fonts/opentype/ocr-b/OCRB.otf")


@dataclass(frozen=True)
class CheminfoCase:
    name: str
    lines: list[str]
    valid: bool
    fields: dict[str, str]


def cheminfo_cases(kind: str) -> list[CheminfoCase]:
    """MRZ strings and expected fields from cheminfo/mrz's parser tests (td1, td2, td3)."""
    path = shared_data(f"mrz/cheminfo_mrz/src/parse/__tests__/{kind}.test.ts")
    text = path.read_text()
    cases = []
    for block in re.split(r"\n\s*it\(", text)[1:]:
        name = block.split("'")[1] if "'" in block else "?"
        m = re.search(r"const MRZ = \[(.*?)\];", block, re.S)
        if not m:
            continue
        lines = re.findall(r"'([A-Z0-9<]+)'", m.group(1))
        valid_m = re.search(r"valid: (true|false)", block)
        fields = dict(re.findall(r"\b(documentNumber|birthDate|expirationDate|lastName|firstName): '([^']*)'", block))
        cases.append(CheminfoCase(name, lines, valid_m is not None and valid_m.group(1) == "true", fields))
    return cases


def _rust_pass_strings(path: Path) -> list[str]:
    return re.findall(r'const PASS_STR\w*: &str = "((?:[^"\\]|\\.)*)";', path.read_text())


def bcbp_valid_strings() -> list[str]:
    """Valid BCBP texts from three independent parsers' tests."""
    rs = shared_data("bcbp/iata_bcbp_rs/tests")
    out = _rust_pass_strings(rs / "iata_792_b.rs") + _rust_pass_strings(rs / "real_world.rs")
    js = shared_data("bcbp/georgesmith46_bcbp/src/decode.spec.js").read_text()
    out += re.findall(r'^\s*"(M[1-4][^"]+)";', js, re.M)
    go = shared_data("bcbp/go_bcbp/bcbp_test.go").read_text()
    out += [s for s, _n in re.findall(r'"(M[1-4][^"]+)":\s*(\d)', go)]
    return sorted(set(out))


def bcbp_invalid_strings() -> list[str]:
    """Strings iata_bcbp_rs rejects (trailing data, wrong format, non-ASCII, truncation, bad sizes, v0)."""
    rs = shared_data("bcbp/iata_bcbp_rs/tests")
    return _rust_pass_strings(rs / "invalid_input.rs") + _rust_pass_strings(rs / "not_yet_supported.rs")


def tony_images(limit: int) -> list[tuple[Path, list[str]]]:
    """A few synthetic passports with their true MRZ (the full folder is for `egate bench mrz`)."""
    root = shared_data("mrz/tony_xlh_synthetic/Passports")
    pairs = []
    for img in sorted(root.glob("*/*.jpg"))[:limit]:
        pairs.append((img, img.with_suffix(".txt").read_text().split()))
    return pairs


def render_ocrb_page(lines: list[str], char_px: int = 36) -> np.ndarray:
    """A clean test page with the MRZ in Debian's OCR-B (the ICAO 9303 part 3 §4.3 typeface)."""
    if not OCR_B_FONT.exists():
        pytest.skip("fonts-ocr-b is not installed (apt-get install fonts-ocr-b)")
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(OCR_B_FONT), char_px)
    width = int(char_px * 0.75 * max(len(ln) for ln in lines)) + 2 * char_px
    height = char_px * (2 * len(lines) + 6)
    page = Image.new("L", (width, height), 235)
    draw = ImageDraw.Draw(page)
    draw.text((char_px, char_px), "UTOPIA  PASSPORT  SPECIMEN", fill=60, font=font)
    y = height - int(char_px * 1.7) * len(lines) - char_px
    for ln in lines:
        draw.text((char_px, y), ln, fill=20, font=font)
        y += int(char_px * 1.7)
    return cv2.cvtColor(np.array(page), cv2.COLOR_GRAY2BGR)


class ResultQueue:
    """Collects driver results and waits for them with a deadline (no sleeps standing in for sync)."""

    def __init__(self) -> None:
        self.q: queue.Queue[object] = queue.Queue()

    def __call__(self, item: object) -> None:
        self.q.put(item)

    def get(self, timeout: float = 5.0) -> object:
        return self.q.get(timeout=timeout)

    def drain(self) -> list[object]:
        out = []
        while True:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                return out

    def wait_for(self, predicate: object, timeout: float = 5.0) -> Iterator[object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            yield item
