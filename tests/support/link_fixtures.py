"""Fixtures for link tests (and the lane tests): real mosquitto brokers, a test PKI, an ops-side recorder.

A folder's conftest.py imports the fixtures (tests/link/conftest.py); test modules import the helpers::

    from tests.support.link_fixtures import Recorder, make_link

- `broker`: plain mosquitto on a free loopback port (function scoped, restartable: `broker.stop()/start()`).
- `pki`: CA, server certificate (localhost, 127.0.0.1), client certificate, and a second unrelated CA.
- `tls_broker`: mosquitto with TLS and client certificates required, made from `pki`.
- `Recorder`: an ops-side subscriber that records messages and waits on conditions with deadlines.
- `make_link(...)`: an Outbox + MqttLink pair pointed at a broker, closed by the caller.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from egate.edge.settings.link import LinkConfig, OutboxConfig
from egate.edge.uplink.link import LinkCredentials, MqttLink
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.outbox import Outbox
from egate.tools.ops.client import OpsTls
from egate.tools.rig.mqtt_recorder import MqttRecorder
from tests.support.broker import BrokerTls, Mosquitto

SITE = "site-a"
GATE = "gate-07"


# ---------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the broker uses: "bad CA" tests


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """A fresh CA with a server certificate for 127.0.0.1/localhost and one client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("egate test CA")
    other_key, other_cert = _ca("unrelated CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, f"egate-{SITE}-{GATE}", server=False)
    pem = serialization.Encoding.PEM
    paths = Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )
    paths.ca.write_bytes(ca_cert.public_bytes(pem))
    paths.other_ca.write_bytes(other_cert.public_bytes(pem))
    paths.server_cert.write_bytes(server_cert.public_bytes(pem))
    paths.client_cert.write_bytes(client_cert.public_bytes(pem))
    _write_key(server_key, paths.server_key)
    _write_key(client_key, paths.client_key)
    _ = other_key
    return paths


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as mosq:
        yield mosq


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    tls = BrokerTls(ca=pki.ca, cert=pki.server_cert, key=pki.server_key, require_client_cert=True)
    with Mosquitto(tmp_path / "tls-broker", tls=tls) as mosq:
        yield mosq


# ---------------------------------------------------------------- ops-side recorder


class Recorder(MqttRecorder):
    """Subscribes (as ops would) to `topic_filter` on `broker` and records every message."""

    def __init__(
        self,
        broker: Mosquitto,
        topic_filter: str,
        *,
        tls: OpsTls | None = None,
        username: str | None = None,
        password: str | None = None,
        persistent_id: str | None = None,
    ) -> None:
        """`persistent_id`: a broker-side session that survives broker and recorder restarts (nothing missed)."""
        super().__init__(
            broker.host,
            broker.port,
            topic_filter,
            tls=tls,
            username=username,
            password=password,
            client_id=persistent_id,
            session_expiry_s=3600 if persistent_id else 0,
        )
        self.start()

    def wait(self, predicate: Callable[[Recorder], bool], timeout: float, what: str) -> None:
        try:
            self.wait_for(lambda: predicate(self), timeout, what)
        except TimeoutError as err:
            raise AssertionError(str(err)) from None


def latest_status(
    broker: Mosquitto, site: str = SITE, gate: str = GATE, timeout: float = 5.0, *, require_retained: bool = False
) -> dict[str, Any]:
    """The status as a fresh subscriber sees it (what ops sees after a restart): the retained message,
    or a live one that raced the subscription. `require_retained` insists on the retained copy."""
    with Recorder(broker, f"egate/v1/{site}/{gate}/status") as rec:
        rec.wait(lambda r: bool(r.messages), timeout, "status")
        msg = rec.messages[-1]
        if require_retained:
            assert rec.messages[0].retain, "status must be retained"
            msg = rec.messages[0]
        return dict(msg.json())


# ---------------------------------------------------------------- gate side


def fast_link_config(broker: Mosquitto, **overrides: Any) -> LinkConfig:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "tls": False,
        "cert_credential": None,
        "key_credential": None,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    values.update(overrides)
    return LinkConfig(**values)


def status_provider(mode: str = "exit") -> Callable[[], StatusPayload]:
    def provide() -> StatusPayload:
        return StatusPayload(state="online", site=SITE, gate=GATE, mode=mode, gallery_version="g-1")

    return provide


def make_link(
    tmp: Path,
    config: LinkConfig,
    *,
    outbox_config: OutboxConfig | None = None,
    credentials: LinkCredentials | None = None,
) -> tuple[Outbox, MqttLink]:
    outbox = Outbox(tmp / "outbox.sqlite", outbox_config or OutboxConfig(), GATE)
    link = MqttLink(config, SITE, GATE, outbox, status_provider(), credentials or LinkCredentials())
    return outbox, link
