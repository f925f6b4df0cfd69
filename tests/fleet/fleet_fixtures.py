"""Fixtures for the fleet tests: a three-node RabbitMQ cluster, PostgreSQL, mosquitto with per-gate ACLs.

The cluster and PostgreSQL are session scoped and start only when a test asks for them (the cluster
takes ~30 s to form); tests that need them are marked `slow`. tests/fleet/conftest.py provides them
once for the folder (a session fixture imported into several test modules would start once per module),
so tests just name the fixtures `rabbit`, `postgres`, `acl_mosquitto`.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from egate.tools.ops.broker_acl import gate_username
from egate.tools.rig.local_postgres import Postgres, postgres_available
from egate.tools.rig.local_rabbit import RabbitCluster, rabbitmq_available
from tests.support.broker import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_ACL = ROOT / "config" / "brokers" / "mosquitto.acl"
RABBITMQ_ACL_SCRIPT = ROOT / "config" / "brokers" / "rabbitmq-acl.sh"
OPS_USER = "egate-ops"


@dataclass
class Rabbit:
    """The session's cluster, its ops account, and gate accounts made on demand with the shipped script."""

    cluster: RabbitCluster
    ops_password: str
    gates: dict[str, str] = field(default_factory=dict)  # user -> password

    @property
    def host(self) -> str:
        return self.cluster.host

    @property
    def ports(self) -> list[int]:
        return self.cluster.mqtt_ports

    def gate_account(self, site: str, gate: str) -> tuple[str, str]:
        """User and password of a gate, created with config/brokers/rabbitmq-acl.sh on first use."""
        user = gate_username("rabbitmq", site, gate)
        if user not in self.gates:
            password = secrets.token_hex(8)
            run_acl_script(self.cluster, "gate", user, password)
            self.gates[user] = password
        return user, self.gates[user]


def run_acl_script(cluster: RabbitCluster, role: str, user: str, password: str) -> None:
    proc = subprocess.run(
        ["sh", str(RABBITMQ_ACL_SCRIPT), role, user, password],
        env={"RABBITMQCTL": str(cluster.ctl_script()), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed (scripts/setup.sh installs it)")
    with RabbitCluster(tmp_path_factory.mktemp("rabbit")) as cluster:
        password = secrets.token_hex(8)
        run_acl_script(cluster, "ops", OPS_USER, password)
        yield Rabbit(cluster, password)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    if not postgres_available():
        pytest.skip("postgresql is not installed (scripts/setup.sh installs it)")
    with Postgres() as pg:
        yield pg


@dataclass
class AclMosquitto:
    broker: Mosquitto
    passwords: dict[str, str]

    def account(self, user: str) -> tuple[str, str]:
        return user, self.passwords[user]


ACL_GATES = [("site-a", "gate-01"), ("site-a", "gate-02"), ("site-b", "gate-01")]


@pytest.fixture
def acl_mosquitto(tmp_path: Path) -> Iterator[AclMosquitto]:
    """mosquitto with passwords and the shipped ACL file; users: egate-ops and the gates of ACL_GATES."""
    users = {OPS_USER: secrets.token_hex(8)}
    for site, gate in ACL_GATES:
        users[gate_username("mosquitto", site, gate)] = secrets.token_hex(8)
    with Mosquitto(tmp_path / "acl-broker", users=users, extra_config=f"acl_file {MOSQUITTO_ACL}") as broker:
        yield AclMosquitto(broker, users)
