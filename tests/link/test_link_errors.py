"""Refusals and TLS against a real mosquitto: clear reasons, never `connected`, retries without a crash loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from egate.edge.service.secrets import CredentialError
from egate.edge.settings.link import LinkConfig
from egate.edge.uplink.link import LinkCredentials
from egate.tools.ops.client import OpsTls
from tests.support.broker import Mosquitto, wait_until
from tests.support.link_fixtures import GATE, SITE, Pki, Recorder, fast_link_config, make_link

ROOT = f"egate/v1/{SITE}/{GATE}"


def _assert_keeps_retrying_offline(link: object, *categories: str) -> None:
    from egate.edge.uplink.link import MqttLink

    assert isinstance(link, MqttLink)
    wait_until(lambda: link.last_error is not None, 10, "a connection error")
    start = link.stats().connect_attempts
    # No crash loop: the link stays alive, keeps retrying with backoff, and never claims to be connected.
    wait_until(lambda: link.stats().connect_attempts >= start + 2, 20, "further reconnect attempts")
    assert not link.connected
    assert link.stats().connects == 0
    assert link.last_error is not None
    assert link.last_error.category in categories


def test_bad_credentials_refused_with_reason(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "b", users={"gate-07": "right", "ops": "ops-pw"}) as broker:
        rec = Recorder(broker, f"{ROOT}/#", username="ops", password="ops-pw")
        outbox, link = make_link(
            tmp_path,
            fast_link_config(broker, username="gate-07"),
            credentials=LinkCredentials(username="gate-07", password=b"wrong"),
        )
        link.start()
        try:
            outbox.append("outcome", {"n": 1})
            # MQTT 5 has 0x86 for a bad password, but mosquitto 2 answers 0x87 (not authorised).
            _assert_keeps_retrying_offline(link, "bad_credentials", "not_authorised")
            assert link.last_error is not None
            assert "link.username" in link.last_error.message
            assert outbox.depth() == 1  # kept for when the credentials are fixed
            assert not [m for m in rec.on("status") if m.json()["state"] == "online"]
        finally:
            link.close()
            outbox.close()

        # With the right password the same outbox drains.
        outbox, link = make_link(
            tmp_path,
            fast_link_config(broker, username="gate-07"),
            credentials=LinkCredentials(username="gate-07", password=b"right"),
        )
        link.start()
        try:
            rec.wait(lambda r: len(r.on("outcome")) == 1, 20, "the queued outcome")
        finally:
            link.close()
            outbox.close()
            rec.close()


def test_bad_ca_is_a_tls_failure(tmp_path: Path, tls_broker: Mosquitto, pki: Pki) -> None:
    config = fast_link_config(tls_broker, tls=True, cert_credential="c.pem", key_credential="c.key")
    creds = LinkCredentials(ca_path=pki.other_ca, cert_path=pki.client_cert, key_path=pki.client_key)
    outbox, link = make_link(tmp_path, config, credentials=creds)
    link.start()
    try:
        _assert_keeps_retrying_offline(link, "tls_failure")
        assert link.last_error is not None
        assert "not trusted" in link.last_error.message and "link.ca_credential" in link.last_error.message
    finally:
        link.close()
        outbox.close()


def test_tls_with_client_certificate_delivers(tmp_path: Path, tls_broker: Mosquitto, pki: Pki) -> None:
    ops_tls = OpsTls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    rec = Recorder(tls_broker, f"{ROOT}/#", tls=ops_tls)
    config = fast_link_config(tls_broker, tls=True, cert_credential="c.pem", key_credential="c.key")
    creds = LinkCredentials(ca_path=pki.ca, cert_path=pki.client_cert, key_path=pki.client_key)
    outbox, link = make_link(tmp_path, config, credentials=creds)
    link.start()
    try:
        assert link.wait_connected(10), link.last_error
        outbox.append("outcome", {"n": 7})
        rec.wait(lambda r: len(r.on("outcome")) == 1, 10, "outcome over TLS")
        assert rec.on("outcome")[0].json()["payload"] == {"n": 7}
    finally:
        link.close()
        outbox.close()
        rec.close()


def test_nothing_listening_is_unreachable(tmp_path: Path) -> None:
    from tests.support.broker import free_port

    config = LinkConfig(
        host="127.0.0.1",
        port=free_port(),
        tls=False,
        cert_credential=None,
        key_credential=None,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    outbox, link = make_link(tmp_path, config)
    link.start()
    try:
        _assert_keeps_retrying_offline(link, "unreachable")
    finally:
        link.close()
        outbox.close()


def test_credentials_resolved_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    (creds_dir / "mqtt-ca.pem").write_bytes(pki.ca.read_bytes())
    (creds_dir / "mqtt-client.pem").write_bytes(pki.client_cert.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds_dir))
    with pytest.raises(CredentialError, match=r"mqtt-client\.key"):
        LinkCredentials.from_credentials_dir(LinkConfig())
    (creds_dir / "mqtt-client.key").write_bytes(pki.client_key.read_bytes())
    creds = LinkCredentials.from_credentials_dir(LinkConfig())
    assert creds.ca_path == creds_dir / "mqtt-ca.pem"
    assert creds.key_path == creds_dir / "mqtt-client.key"
