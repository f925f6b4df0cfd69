"""`[turnstile]` config section: the OSDP link to the gate controller and its I/O map."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TurnstileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field("/dev/ttyUSB0", description="pyserial URL of the gate controller's OSDP port.")
