"""The one id rule for sites, gates and commands, as config, topics, payloads and bundle scopes apply it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from egate.edge.ids import is_id
from egate.edge.settings.core import GateConfig
from egate.edge.trust.bundles import BundleScope
from egate.edge.uplink.messages import StatusPayload
from egate.edge.uplink.topics import GateTopics

GOOD = ["ams", "gate-07", "T2_north", "a" * 64]
BAD = ["", "-gate", "gate/07", "gate+", "gate#", "a" * 65, "gate\n", "gate 07"]


@pytest.mark.parametrize("value", GOOD)
def test_every_place_takes_a_good_id(value: str) -> None:
    assert is_id(value)
    GateConfig(site_id=value, gate_id=value)
    GateTopics("egate/v1", value, value)
    StatusPayload(state="online", site=value, gate=value)
    BundleScope(site=value, gates=(value,))


@pytest.mark.parametrize("value", BAD)
def test_every_place_refuses_a_bad_id(value: str) -> None:
    assert not is_id(value)
    with pytest.raises(ValidationError):
        GateConfig(site_id=value)
    with pytest.raises(ValueError, match="cannot be used in an MQTT topic"):
        GateTopics("egate/v1", value, "gate-01")
    with pytest.raises(ValidationError):
        StatusPayload(state="online", site=value, gate="gate-01")
    with pytest.raises(ValidationError):
        BundleScope(site="ams", gates=(value,))


def test_a_bundle_scope_may_name_every_site_but_a_gate_config_may_not() -> None:
    assert BundleScope(site="*").site == "*"
    with pytest.raises(ValidationError):
        GateConfig(site_id="*")
