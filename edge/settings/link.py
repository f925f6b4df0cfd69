"""`[link]` and `[outbox]` config sections: the MQTT connection to central ops and the on-disk queue.

Secrets (client key, password) are never here: the fields below only *name* credentials that systemd
hands over in `$CREDENTIALS_DIRECTORY` (`LoadCredential=`); `egate.edge.uplink.link.LinkCredentials` resolves them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from egate.drivers.credentials import CREDENTIAL_NAME_PATTERN

_TOPIC_PREFIX = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


class LinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Connect to central ops; false runs the gate standalone (outbox fills).")
    host: str = Field("localhost", min_length=1, max_length=253, description="MQTT broker host name or address.")
    port: int = Field(
        8883, ge=1, le=65535, strict=True, description="MQTT broker port (8883 for TLS, 1883 plain), a number."
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version: auto tries 5 and falls back to 3.1.1 when the broker refuses it."
    )
    tls: bool = Field(True, description="Use TLS (server verified against ca_credential). Off only on a lab broker.")
    ca_credential: str = Field(
        "mqtt-ca.pem",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Credential file name of the CA that signed the broker.",
    )
    cert_credential: str | None = Field(
        "mqtt-client.pem",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Credential file name of this gate's client certificate (PEM); none for no client cert.",
    )
    key_credential: str | None = Field(
        "mqtt-client.key",
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Credential file name of this gate's client private key (PEM); none for no client cert.",
    )
    username: str | None = Field(
        None, max_length=256, description="MQTT user name (not secret); none when the broker uses certificates."
    )
    password_credential: str | None = Field(
        None,
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Credential file name holding the MQTT password, when username is set.",
    )
    client_id_prefix: str = Field(
        "egate-",
        pattern=r"^[A-Za-z0-9_-]{0,32}$",
        description="Client id is <prefix><site>-<gate>: unique per gate, as MQTT brokers require.",
    )
    topic_prefix: str = Field(
        "egate/v1", pattern=_TOPIC_PREFIX, description="Topic root; topics are <prefix>/<site>/<gate>/... ."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive; the last will fires ~1.5x after loss.")
    reconnect_min_s: float = Field(1.0, ge=0.05, le=60, description="First reconnect delay; doubles per failure.")
    reconnect_max_s: float = Field(
        120.0, ge=0.1, le=3600, description="Longest reconnect delay; reset after a good connection."
    )
    max_inflight: int = Field(
        20, ge=1, le=1000, description="Outbox messages published and not yet acknowledged (PUBACK) at once."
    )
    downlink_qos: Literal[0, 1] = Field(
        1,
        description="QoS of the gate's bundle and command subscriptions. 0 on RabbitMQ 3.x clusters: there a "
        "QoS 1 subscription is a durable classic queue, which after its node crashed can stay unusable and lock "
        "the gate out; ops re-sends lost chunks and commands are acknowledged either way.",
    )
    chunk_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Bundle chunk size used by `egate ops push` (AWS IoT Core allows 128 KiB messages).",
    )
    max_bundle_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, le=8 * 1024**3, description="Largest bundle accepted over the link, in bytes."
    )
    incomplete_bundle_max_age_s: int = Field(
        6 * 3600,
        ge=60,
        le=90 * 24 * 3600,
        description="A partly received bundle with no new chunk for this long is deleted (checked every minute "
        "while running, and at start).",
    )
    max_concurrent_transfers: int = Field(
        2, ge=1, le=16, description="Bundle transfers held at once; chunk 0 of one more is refused with `busy`."
    )
    max_chunk_message_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        le=96 * 1024 * 1024,
        description="Largest `.../bundle/<kind>` message taken in (base64 makes a chunk ~4/3 its size); bigger "
        "ones are refused before they are parsed.",
    )
    max_command_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest `.../cmd` message taken in."
    )
    work_queue_length: int = Field(
        32,
        ge=1,
        le=4096,
        description="Downlink messages waiting for the link's worker. When full, more chunks are refused with a "
        "`busy` ack (at most ten such acks a second); signed commands have their own queue of the same length.",
    )
    health_interval_s: float = Field(30.0, ge=1, le=3600, description="How often the daemon publishes health.")

    @model_validator(mode="after")
    def _credentials_consistent(self) -> LinkConfig:
        if (self.cert_credential is None) != (self.key_credential is None):
            raise ValueError(
                "link.cert_credential and link.key_credential go together: set both (client certificate) or neither"
            )
        if self.password_credential is not None and self.username is None:
            raise ValueError("link.password_credential is set but link.username is not: set the MQTT user name")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("link.reconnect_max_s must be >= link.reconnect_min_s")
        if self.chunk_bytes > self.max_bundle_bytes:
            raise ValueError("link.chunk_bytes must not exceed link.max_bundle_bytes")
        if self.chunk_bytes * 4 // 3 + 1024 > self.max_chunk_message_bytes:
            raise ValueError(
                "link.max_chunk_message_bytes must hold a chunk of link.chunk_bytes in base64 (4/3 its size + 1 KiB)"
            )
        return self


class OutboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_messages: int = Field(1_000_000, ge=100, le=100_000_000, description="Largest number of queued messages.")
    max_bytes: int = Field(
        1024 * 1024 * 1024, ge=64 * 1024, le=64 * 1024**3, description="Largest total size of queued messages."
    )
    max_age_s: int = Field(
        30 * 24 * 3600,
        ge=60,
        le=365 * 24 * 3600,
        description="Oldest a queued message may get; at this age the outbox counts as full.",
    )
    alarm_ratio: float = Field(
        0.8, gt=0, lt=1, description="Fill level (count, bytes or age, whichever is highest) raising the alarm event."
    )
    min_free_disk_bytes: int = Field(
        32 * 1024 * 1024,
        ge=0,
        le=1024**4,
        description="Free space the outbox's file system must keep; below it the outbox reports unhealthy "
        "and the lane goes out of service before a commit can fail (0: only failed commits count).",
    )
    full_policy: Literal["refuse_new", "drop_oldest"] = Field(
        "refuse_new",
        description="When full: refuse_new makes append() raise OutboxFull so the lane goes out of service "
        "(nothing decided is lost); drop_oldest deletes the oldest messages, logs each range and queues an "
        "`outbox_dropped` event naming the lost sequence numbers.",
    )
