"""MQTT topic names of the ops contract (docs/mqtt.md): one place builds them, gate and ops side alike."""

from __future__ import annotations

from dataclasses import dataclass

from egate.edge.ids import is_id


def _check_segment(what: str, value: str) -> str:
    # '+', '#' and '/' inside a site or gate id would silently widen subscriptions (MQTT 5.0 section 4.7).
    if not is_id(value):
        raise ValueError(f"{what} {value!r} cannot be used in an MQTT topic: use letters, digits, '-' or '_'")
    return value


@dataclass(frozen=True)
class GateTopics:
    """Topics of one gate: `<prefix>/<site>/<gate>/...`."""

    prefix: str
    site: str
    gate: str

    def __post_init__(self) -> None:
        _check_segment("site id", self.site)
        _check_segment("gate id", self.gate)

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gate}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def outcome(self) -> str:
        return f"{self.root}/outcome"

    @property
    def event(self) -> str:
        return f"{self.root}/event"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    def bundle(self, kind: str) -> str:
        return f"{self.root}/bundle/{_check_segment('bundle kind', kind)}"

    @property
    def bundle_wildcard(self) -> str:
        return f"{self.root}/bundle/+"

    @property
    def bundle_ack(self) -> str:
        return f"{self.root}/bundle/ack"

    @property
    def cmd(self) -> str:
        return f"{self.root}/cmd"

    @property
    def cmd_ack(self) -> str:
        return f"{self.root}/cmd/ack"

    def for_kind(self, kind: str) -> str:
        """Uplink topic of an outbox item kind (`outcome` or `event`)."""
        if kind == "outcome":
            return self.outcome
        if kind == "event":
            return self.event
        raise ValueError(f"outbox kind {kind!r} has no topic: use 'outcome' or 'event'")


def site_wildcard(prefix: str, site: str) -> str:
    """Everything every gate of a site publishes (ops side: `egate ops watch`)."""
    return f"{prefix}/{_check_segment('site id', site)}/+/#"


def split_topic(prefix: str, topic: str) -> tuple[str, str, str] | None:
    """`prefix/site/gate/rest...` -> (site, gate, rest), or None when the topic is not ours."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/", 2)
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]
