"""`[reader]` config section: where documents and boarding passes come from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReaderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    serial_url: str | None = Field(
        None, description="pyserial URL of a serial MRZ/BCBP reader (e.g. /dev/ttyUSB1); none to disable."
    )
