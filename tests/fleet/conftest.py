"""Fleet tests: RabbitMQ cluster, PostgreSQL store, per-gate broker ACLs, ops tools.

The cluster and PostgreSQL are session scoped: defined once here, they start once for the whole
folder (a session fixture imported into several test modules would start once per module).

Long tests here carry `@pytest.mark.slow`; `make test-fast` leaves them out."""

from __future__ import annotations

from tests.fleet.fleet_fixtures import acl_mosquitto, postgres, rabbit  # noqa: F401 - fixtures for this folder
