"""Per-gate broker accounts: user names and RabbitMQ topic permissions (the same rules as the shipped
config/brokers/mosquitto.acl and config/brokers/rabbitmq-acl.sh; docs/fleet.md explains them).

A gate may publish only its own uplink topics and read only its own bundle and command topics under
`<prefix>/<site>/<gate>/`. The user name carries the topic root so one rule serves every gate:
mosquitto substitutes `%u` into topics as is (`<site>/<gate>`), RabbitMQ matches topics with `/`
turned into `.` (`<site>.<gate>`).
"""

from __future__ import annotations

import re

GATE_WRITES = ("status", "outcome", "event", "health", "bundle/ack", "cmd/ack")
GATE_READS = ("bundle/+", "cmd")


def gate_username(broker: str, site: str, gate: str) -> str:
    """The user name a gate logs in with on `broker` (`mosquitto` or `rabbitmq`)."""
    return f"{site}.{gate}" if broker == "rabbitmq" else f"{site}/{gate}"


def _dotted(prefix: str) -> str:
    return re.escape(prefix.replace("/", "."))


def rabbitmq_gate_permissions(prefix: str = "egate/v1") -> tuple[str, str]:
    """`(write, read)` regexes for `rabbitmqctl set_topic_permissions ... amq.topic WRITE READ`."""
    root = f"^{_dotted(prefix)}\\.{{username}}\\."
    writes = "|".join(re.escape(t.replace("/", ".")) for t in GATE_WRITES)
    reads = "|".join(re.escape(t.replace("/", ".")).replace("\\+", "\\*") for t in GATE_READS)
    return f"{root}({writes})$", f"{root}({reads})$"


def rabbitmq_ops_permissions(prefix: str = "egate/v1") -> tuple[str, str]:
    root = f"^{_dotted(prefix)}\\."
    return root, root
