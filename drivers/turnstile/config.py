"""`[turnstile]` config section: the OSDP link to the gate controller and its I/O map.

The SCBK (secure channel base key) is a secret: it never appears here. The daemon reads it from
`$CREDENTIALS_DIRECTORY` and hands the bytes to the driver's constructor.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from egate.drivers.credentials import CREDENTIAL_NAME_PATTERN

# OSDP osdp_OUT timers are 16-bit in IEC 60839-11-5, but libosdp 3.2.9's Python binding cuts
# `timer_count` to 8 bits (25.5 s). The driver asks the controller to relock by itself after
# 2 x timeout + 1 s (a backstop should the daemon hang), so the timeout must stay below 12 s.
MAX_PASSAGE_TIMEOUT_S = 12.0

# libosdp's control panel waits 200 ms for a reply, then pauses 800 ms before it sends the same
# command again (up to 8 times, ~8.4 s, before it takes the controller offline). One lost or late
# reply, a normal event on a noisy RS-485 line or a busy CPU, is therefore a silent gap of about
# 1 s followed by a successful retry. The link-loss and acknowledgement limits below must ride out
# such a gap, or one retry turns into a lost link and a refused traveller.
OSDP_REPLY_TIMEOUT_S = 0.2
OSDP_RETRY_WAIT_S = 0.8
OSDP_RETRY_GAP_S = OSDP_REPLY_TIMEOUT_S + OSDP_RETRY_WAIT_S
MIN_LINK_SILENCE_S = 1.5  # one retry gap plus a margin for a loaded CPU
MIN_COMMAND_TIMEOUT_S = 1.2  # one retry gap plus the retried exchange

IoNumber = Annotated[int, Field(ge=0, le=63)]


class TurnstileIoMap(BaseModel):
    """Which OSDP output and input numbers (0-based, osdp_OUT `output_no`, osdp_ISTATR index) do what."""

    model_config = ConfigDict(extra="forbid")

    entry_release_output: int = Field(
        0, ge=0, le=63, description="Output that releases the entry leaf/barrier for one passage (on = free)."
    )
    exit_release_output: int = Field(
        1, ge=0, le=63, description="Output that frees the egress path (on = free); on in service and in safe state."
    )
    guidance_green_output: int | None = Field(
        2, ge=0, le=63, description="Output driving the green 'proceed' lamp; none if the gate has none."
    )
    guidance_red_output: int | None = Field(
        3, ge=0, le=63, description="Output driving the red 'stop' lamp; none if the gate has none."
    )
    buzzer_output: int | None = Field(4, ge=0, le=63, description="Output driving the buzzer; none if absent.")
    passage_sensor_inputs: list[IoNumber] = Field(
        [0, 1],
        min_length=1,
        max_length=4,
        description="Passage sensor inputs in walking order; a passage is complete when each was active "
        "and all are clear again.",
    )
    door_position_input: int | None = Field(
        2, ge=0, le=63, description="Door/leaf position input (active = open); none if the gate has none."
    )
    tailgate_input: int | None = Field(
        3, ge=0, le=63, description="Tailgate/intrusion detector input (active = alarm); none if absent."
    )
    emergency_input: int = Field(
        4, ge=0, le=63, description="Emergency/fire input (active = release everything, software cannot override)."
    )
    inverted_inputs: list[IoNumber] = Field(
        [],
        max_length=16,
        description="Inputs wired normally-closed (reported 0 = active), e.g. a fail-safe fire loop.",
    )

    def outputs(self) -> list[int]:
        """Every output number in use."""
        optional = [self.guidance_green_output, self.guidance_red_output, self.buzzer_output]
        return [self.entry_release_output, self.exit_release_output, *(o for o in optional if o is not None)]

    def inputs(self) -> list[int]:
        """Every input number in use."""
        optional = [self.door_position_input, self.tailgate_input]
        return [*self.passage_sensor_inputs, self.emergency_input, *(i for i in optional if i is not None)]

    def input_roles(self) -> list[tuple[str, int]]:
        """Each input in use with the role a status report names it by."""
        roles = [(f"passage_sensor_{i}", n) for i, n in enumerate(self.passage_sensor_inputs)]
        roles.append(("emergency", self.emergency_input))
        if self.door_position_input is not None:
            roles.append(("door_open", self.door_position_input))
        if self.tailgate_input is not None:
            roles.append(("tailgate", self.tailgate_input))
        return roles

    @model_validator(mode="after")
    def _distinct_numbers(self) -> TurnstileIoMap:
        outputs = self.outputs()
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"turnstile.io: output numbers must be distinct, got {outputs}; give each its own")
        inputs = self.inputs()
        if len(set(inputs)) != len(inputs):
            raise ValueError(f"turnstile.io: input numbers must be distinct, got {inputs}; give each its own")
        unknown = sorted(set(self.inverted_inputs) - set(inputs))
        if unknown:
            raise ValueError(f"turnstile.io.inverted_inputs: {unknown} are not mapped inputs; remove them")
        return self


class GateDriverConfig(BaseModel):
    """What every gate driver's `[turnstile]` config has: the driver's name, its port, the I/O map and the
    passage timeout. Each driver's model extends it (`type` narrowed to its own name)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Gate driver (osdp, modbus).")
    url: str = Field("/dev/ttyUSB0", min_length=1, description="Serial port of the controller's line.")
    io: TurnstileIoMap = Field(default_factory=TurnstileIoMap, description="Output and input numbers.")
    passage_timeout_s: float = Field(
        8.0,
        gt=0.0,
        le=MAX_PASSAGE_TIMEOUT_S,
        description="Default time a released gate waits for the traveller to start the passage (and to finish it).",
    )


class OsdpGateConfig(GateDriverConfig):
    """`[turnstile]` with `type = "osdp"` (the default; dry contacts: type = "modbus", docs/turnstile_modbus.md)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["osdp"] = Field("osdp", description="Gate driver: OSDP (egate is the control panel).")

    url: str = Field(
        "/dev/ttyUSB0",
        min_length=1,
        description="pyserial URL of the gate controller's OSDP port (/dev/ttyUSB0, a PTY, rfc2217://host:port).",
    )
    baud: Literal[9600, 19200, 38400, 57600, 115200] = Field(
        115200, description="Serial speed; must match the gate controller (OSDP osdp_COMSET)."
    )
    address: int = Field(0, ge=0, le=126, description="OSDP address of the gate controller (0x7F is broadcast).")
    secure_channel: bool = Field(
        True, description="Use the OSDP secure channel (AES-128) and refuse any plaintext session."
    )
    scbk_credential: str = Field(
        "turnstile.scbk",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of the credential (file in $CREDENTIALS_DIRECTORY) holding the secure channel base "
        "key: 16 raw bytes or 32 hex digits.",
    )
    install_mode: bool = Field(
        False,
        description="Allow the default key SCBK-D so a new controller can receive our SCBK (osdp_KEYSET). "
        "Only while commissioning: a warning is logged at every start.",
    )
    io: TurnstileIoMap = Field(default_factory=TurnstileIoMap, description="OSDP output/input numbers.")
    passage_timeout_s: float = Field(
        8.0,
        gt=0.0,
        le=MAX_PASSAGE_TIMEOUT_S,
        description="Default time a released gate waits for the traveller to start the passage (and to finish it).",
    )
    command_timeout_s: float = Field(
        1.5,
        ge=MIN_COMMAND_TIMEOUT_S,
        le=5.0,
        description="How long to wait for the controller to acknowledge an output command "
        "(covers one OSDP retry: a lost reply is re-sent after ~1 s).",
    )
    link_silence_s: float = Field(
        2.5,
        ge=MIN_LINK_SILENCE_S,
        le=8.0,
        description="Declare the link lost after this long without a byte from the controller (OSDP polls "
        "every 50 ms; one lost reply is ~1 s of silence before the retry; libosdp itself needs ~8.4 s). "
        "The controller's own link-loss timer must be at least this long (docs/turnstile.md).",
    )
    reconnect_initial_s: float = Field(1.0, ge=0.05, le=30.0, description="First reconnect delay after a loss.")
    reconnect_max_s: float = Field(30.0, ge=0.1, le=300.0, description="Longest reconnect delay (backoff doubles).")
    refresh_interval_ms: float = Field(
        2.0,
        ge=0.5,
        le=20.0,
        description="Pause between libosdp refresh calls; 2 ms gives ~5 ms command latency at ~3% CPU.",
    )
    refresh_realtime: bool = Field(
        True,
        description="Run the libosdp refresh thread in the real-time round-robin class (needs CAP_SYS_NICE; "
        "without it the thread runs at normal priority), so a busy CPU cannot make it miss OSDP's 200 ms "
        "reply deadline.",
    )
    osdp_log_level: Literal["error", "warning", "info", "debug"] = Field(
        "warning", description="Level of libosdp's own messages (it writes straight to stderr)."
    )

    @model_validator(mode="after")
    def _check(self) -> OsdpGateConfig:
        if self.install_mode and not self.secure_channel:
            raise ValueError(
                "turnstile.install_mode needs turnstile.secure_channel = true (install mode hands the "
                "controller our SCBK over a secure channel opened with the default key)"
            )
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"turnstile.reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_initial_s "
                f"({self.reconnect_initial_s})"
            )
        return self


def parse_scbk(data: bytes) -> bytes:
    """The SCBK credential: 16 raw bytes, or 32 hex digits (how controllers print it)."""
    if len(data) == 16:
        return data
    text = data.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"SCBK credential is {len(data)} bytes: expected 16 raw bytes or 32 hex digits") from None
    if len(key) != 16:
        raise ValueError(f"SCBK credential holds {len(key)} bytes: expected 16 (32 hex digits)")
    return key
