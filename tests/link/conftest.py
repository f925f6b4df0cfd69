"""The MQTT link to central ops against real mosquitto brokers (plain and TLS).

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""

from __future__ import annotations

from tests.support.link_fixtures import broker, pki, tls_broker  # noqa: F401 - fixtures for this folder
