"""`[chip]` config section: the PC/SC reader the ePassport chip is read on (egate.drivers.chip)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChipReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reader: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="PC/SC reader to read ePassport chips on: the first reader whose name contains this text "
        "(`pcsc_scan` or `egate diag chip` list them, e.g. 'OMNIKEY' or 'Virtual PCD 00 00'). None: this gate "
        "has no chip reader, and lane.policy.chip must stay off.",
    )
    card_wait_s: float = Field(
        3.0,
        ge=0.0,
        le=30.0,
        description="After the page was read, how long to wait for a card on the reader before the document "
        "counts as having no chip (a full-page reader holds the chip in its field already: keep it short).",
    )
    apdu_timeout_s: float = Field(
        5.0, gt=0.0, le=30.0, description="Longest a chip may take to answer one command before it counts as silent."
    )
    extended_length: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Extended-length READ BINARY: auto follows the card's ATR (card capabilities), on/off forces it.",
    )
