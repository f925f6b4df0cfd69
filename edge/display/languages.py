"""The screen's languages: JSON catalogues in `i18n/` and the ICAO state code -> language map.

A catalogue is `i18n/<code>.json`: `{"name": <the language's own name>, "dir": "ltr"|"rtl",
"strings": {<key>: <text>}}`. Every catalogue must have every key of the English one (checked by
`load_catalogues` and the tests), so no screen ever falls back to a missing text.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

I18N_DIR = Path(__file__).resolve().parent / "i18n"
DEFAULT_LANGUAGE = "en"
_STATE_MAP_FILE = "icao_languages.json"


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The language's name in itself (shown on its button).")
    dir: Literal["ltr", "rtl"] = "ltr"
    bcp47: str = Field(min_length=2, description="The HTML lang attribute, e.g. zh-Hans.")
    strings: dict[str, str]


class CatalogueError(ValueError):
    pass


@lru_cache(maxsize=1)
def _all_catalogues() -> dict[str, Catalogue]:
    out: dict[str, Catalogue] = {}
    for path in sorted(I18N_DIR.glob("*.json")):
        if path.name == _STATE_MAP_FILE:
            continue
        out[path.stem] = Catalogue.model_validate_json(path.read_text(encoding="utf-8"))
    return out


def available_languages() -> list[str]:
    return list(_all_catalogues())


def load_catalogues(codes: list[str]) -> dict[str, Catalogue]:
    """The catalogues for `codes` (config order); CatalogueError names a missing file or text."""
    catalogues = _all_catalogues()
    reference = catalogues[DEFAULT_LANGUAGE].strings.keys()
    out: dict[str, Catalogue] = {}
    for code in codes:
        if code not in catalogues:
            raise CatalogueError(
                f"display.languages: no catalogue {code}.json in {I18N_DIR} (shipped: {', '.join(catalogues)})"
            )
        missing = sorted(set(reference) - set(catalogues[code].strings))
        if missing:
            raise CatalogueError(f"catalogue {code}.json lacks {', '.join(missing)}")
        out[code] = catalogues[code]
    return out


@lru_cache(maxsize=1)
def _state_languages() -> dict[str, str]:
    data: dict[str, Any] = json.loads((I18N_DIR / _STATE_MAP_FILE).read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for language, states in data["languages"].items():
        for state in states:
            out[state] = language
    return out


def state_language(code: str) -> str | None:
    """Language for an ICAO 9303 part 3 state code (`D` and `D<<` are Germany), or None."""
    return _state_languages().get(code.replace("<", "").strip().upper())


def document_language(nationality: str, issuer: str) -> str | None:
    """The traveller's language from their document: nationality first, then the issuing state."""
    return state_language(nationality) or state_language(issuer)
