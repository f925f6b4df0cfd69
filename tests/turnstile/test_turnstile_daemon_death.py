"""The real `egate run` killed (SIGKILL: a crash, the watchdog, a power cut of the computer) while the
gate is released, against the simulated controller: whatever the daemon ordered must not outlive it.
The controller's own rules (docs/turnstile.md) end in entry locked, egress free, and the emergency input
keeps everything released for as long as it is active."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from egate.tools.rig.lane import GATE, SITE, LaneRig, OpsMaterial, prepare_ops
from egate.tools.sim.osdp_gate import OUT_TEMPORARY_ON
from tests.support.rig import GAP, LEAD_IN, NEEDS_RIG

# The rig's skips; a longer timeout, as the module's first test also builds the ops material.
pytestmark = [pytest.mark.slow, *NEEDS_RIG, pytest.mark.timeout(300)]

DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def ops_material(tmp_path_factory: pytest.TempPathFactory) -> OpsMaterial:
    return prepare_ops(tmp_path_factory.mktemp("ops-death"), scope=f"{SITE}:{GATE}")


@pytest.fixture
def rig(tmp_path: Path, ops_material: OpsMaterial) -> Iterator[LaneRig]:
    lane = LaneRig(tmp_path / "rig", ops=ops_material, plan=None)
    try:
        lane.start()
        yield lane
    finally:
        lane.close()


def kill_daemon(rig: LaneRig) -> None:
    proc = rig.daemon
    assert proc is not None and proc.poll() is None, "the daemon is not running"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=DEADLINE_S)


def test_daemon_killed_during_an_emergency_leaves_egress_free_and_the_entry_locked_after_it(rig: LaneRig) -> None:
    sim = rig.sim
    entry = sim.io.entry_release_output
    sim.set_emergency(True)
    rig.wait_state("emergency", timeout=DEADLINE_S)

    kill_daemon(rig)
    assert sim.entry_free and sim.egress_free  # emergency egress works without the daemon
    assert sim.wait_for(lambda s: not s.online, DEADLINE_S), "the controller did not notice its panel is gone"
    assert sim.entry_free and sim.egress_free  # the link-loss rule does not end the emergency release
    assert not sim.output_on(entry)  # released by the input, not by an output the daemon latched

    sim.set_emergency(False)
    assert sim.wait_for(lambda s: not s.entry_free and s.egress_free, DEADLINE_S), "entry left open"


def test_daemon_killed_mid_passage_leaves_the_entry_locked_and_egress_free(rig: LaneRig) -> None:
    sim = rig.sim
    sim.walk_when_released = False  # the traveller is still in front of the released gate
    rig.play([LEAD_IN, "female", GAP])
    assert sim.wait_for(lambda s: s.entry_free, 30.0), "the accepted traveller's gate never opened"

    kill_daemon(rig)
    assert sim.egress_free
    # The passage's backstop timer would take 17 s; the controller's link-loss rule (3 s) comes first.
    assert sim.wait_for(lambda s: not s.entry_free and s.egress_free, DEADLINE_S), "entry left open"
    assert not sim.online
    # locked by the controller itself: the last order on the entry is still the timed release
    assert sim.commands_for(sim.io.entry_release_output)[-1].control_code == OUT_TEMPORARY_ON
    assert not sim.walk_through()  # and it stays locked
