"""A small `egate bench fleet` on the session's RabbitMQ cluster: 10 gates, a node killed mid-run,
both collectors store every outcome exactly once, and a rollout reaches late gates too."""

from __future__ import annotations

from pathlib import Path

import pytest

from egate.tools.bench.fleet import run_fleet_bench
from egate.tools.rig.local_postgres import Postgres
from tests.fleet.fleet_fixtures import Rabbit


@pytest.mark.slow
def test_small_fleet_survives_a_node_kill_and_rolls_out_to_every_gate(
    rabbit: Rabbit, postgres: Postgres, tmp_path: Path
) -> None:
    result = run_fleet_bench(
        rabbit.cluster,
        tmp_path / "fleet",
        gates=10,
        outcomes=12,
        offline=2,
        gallery_bytes=300_000,
        kill_node=1,
        postgres_dsn=postgres.dsn,
        ops_password=rabbit.ops_password,
        late_s=2.0,
        timeout_s=180.0,
    )
    assert result["all_connected"]
    phase1 = result["outcomes"]
    assert phase1["outboxes_drained"]
    for db in ("sqlite", "postgresql"):
        assert phase1[db]["stored"] == 120, phase1
        assert phase1[db]["lost"] == 0
        assert phase1[db]["duplicates_stored"] == 0
        assert phase1[db]["gaps"] == 0
    rollout = result["rollout"]
    assert rollout["applied"] == 10 and rollout["pending"] == 0 and rollout["rejected"] == {}, rollout
    assert rollout["bytes_through_broker"] > 10 * 300_000
