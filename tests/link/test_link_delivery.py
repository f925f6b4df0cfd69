"""Store-and-forward against a real mosquitto: outages, broker restarts, SIGKILLed gate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import pytest

from egate.edge.settings.link import OutboxConfig
from egate.edge.uplink.messages import CmdAck, HealthPayload
from egate.edge.uplink.outbox import Outbox
from tests.support.broker import Mosquitto, wait_until
from tests.support.link_fixtures import GATE, SITE, Recorder, fast_link_config, latest_status, make_link

ROOT = f"egate/v1/{SITE}/{GATE}"
PROJECT = Path(__file__).resolve().parents[2]


class GateProcess:
    """tests/link/link_gate_proc.py as a real process (the daemon's link side), killable with SIGKILL."""

    def __init__(self, state: Path, broker: Mosquitto, append: int = 0, max_inflight: int = 20) -> None:
        self.lines: list[dict[str, object]] = []
        self._logdir = state.parent
        self._stderr = (state.parent / f"gate-proc-{time.monotonic_ns()}.log").open("wb")
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.link.link_gate_proc",
                "--state",
                str(state),
                "--port",
                str(broker.port),
                "--append",
                str(append),
                "--max-inflight",
                str(max_inflight),
            ],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # structlog lines
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_event(self, event: str, timeout: float = 60) -> dict[str, object]:
        with self._cond:
            ok = self._cond.wait_for(lambda: any(x.get("event") == event for x in self.lines), timeout)
            logs = "".join(p.read_text(errors="replace")[-3000:] for p in self._logdir.glob("gate-proc-*.log"))
            assert ok, f"gate process never said {event!r}: {self.lines}\n{logs}"
            return next(x for x in self.lines if x.get("event") == event)

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self._stderr.closed:
            self._stderr.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._stderr.close()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        self._stderr.close()
        return code


@pytest.fixture
def gate_procs() -> Iterator[list[GateProcess]]:
    """Collects the gate processes a test starts; any still running at the end are killed."""
    procs: list[GateProcess] = []
    yield procs
    for proc in procs:
        proc.ensure_dead()


def test_outcomes_during_outage_arrive_in_order(tmp_path: Path, broker: Mosquitto) -> None:
    rec = Recorder(broker, f"{ROOT}/outcome", persistent_id="ops-collector")
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    link.start()
    try:
        assert link.wait_connected(10)
        first = [outbox.append("outcome", {"n": i}).id for i in range(20)]
        rec.wait(lambda r: len(r.distinct("outcome")) == 20, 20, "20 outcomes before the outage")

        broker.stop()
        wait_until(lambda: not link.connected, 10, "link noticing the outage")
        during = [outbox.append("outcome", {"n": 100 + i}).id for i in range(300)]
        assert outbox.depth() >= 300  # held on disk while the broker is down

        broker.start()
        expected = first + during
        rec.wait(lambda r: len(r.distinct("outcome")) == len(expected), 60, "all outcomes after the outage")
        got = rec.distinct("outcome")
        assert list(got) == expected, "delivered in commit order, none lost"
        assert list(got.values()) == sorted(got.values())
        wait_until(lambda: outbox.depth() == 0, 20, "outbox drained after PUBACKs")
    finally:
        link.close()
        outbox.close()
        rec.close()


@pytest.mark.slow
def test_sigkill_with_1000_queued_delivers_all_after_restart(
    tmp_path: Path, broker: Mosquitto, gate_procs: list[GateProcess]
) -> None:
    rec = Recorder(broker, f"{ROOT}/#", persistent_id="ops-collector")
    state = tmp_path / "state"
    broker.stop()  # the gate queues 1,000 outcomes with nowhere to send them
    # One message in flight at a time: the drain is slow enough for the kill to land in the middle.
    gate = GateProcess(state, broker, append=1000, max_inflight=1)
    gate_procs.append(gate)
    assert gate.wait_event("appended")["depth"] == 1000
    broker.start()
    rec.wait(lambda r: len(r.distinct("outcome")) >= 20, 60, "forwarding under way")
    gate.kill()  # mid-drain: some acked, one in flight, most still queued
    rec.wait(lambda r: any(m.json()["state"] == "offline" for m in r.on("status")), 20, "last will (offline)")
    with Outbox(state / "outbox.sqlite", OutboxConfig(), GATE) as outbox:
        left = outbox.depth()
    assert 0 < left < 1000, f"the kill must hit a partly drained outbox ({left} left)"

    gate2 = GateProcess(state, broker, append=0)
    gate_procs.append(gate2)
    rec.wait(lambda r: len(r.distinct("outcome")) == 1000, 90, "all 1,000 outcomes after restart")
    assert gate2.terminate() == 0
    got = rec.distinct("outcome")
    assert sorted(got.values()) == list(range(1, 1001))
    # At-least-once: any duplicate carries the same id for the same seq, so ops dedupes exactly.
    pairs = {(m.json()["id"], m.json()["seq"]) for m in rec.on("outcome")}
    assert len(pairs) == 1000
    with Outbox(state / "outbox.sqlite", OutboxConfig(), GATE) as outbox:
        assert outbox.depth() == 0
    statuses = [m.json()["state"] for m in rec.on("status")]
    assert statuses[-1] == "stopped"
    rec.close()


def test_broker_restart_subscriptions_status_and_will(tmp_path: Path, broker: Mosquitto) -> None:
    rec = Recorder(broker, f"{ROOT}/#", persistent_id="ops-watch")
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    commands: list[bytes] = []

    def on_command(raw: bytes) -> CmdAck:
        commands.append(raw)
        return CmdAck.done(json.loads(raw)["id"])

    link.set_command_handler(on_command)
    link.start()
    try:
        assert link.wait_connected(10)
        wait_until(lambda: latest_status(broker)["state"] == "online", 10, "online status")
        for round_ in range(2):
            before = datetime.fromisoformat(latest_status(broker)["ts"].replace("Z", "+00:00"))
            broker.restart()
            # A fresh `online` (newer ts) proves the gate re-published it; it is sent after the
            # subscriptions on the same connection, so from here on commands reach the gate.
            wait_until(
                lambda b=before: datetime.fromisoformat(latest_status(broker)["ts"].replace("Z", "+00:00")) > b,  # type: ignore[misc]
                20,
                "status re-published",
            )
            status = latest_status(broker)
            assert status["state"] == "online" and status["mode"] == "exit" and status["gallery_version"] == "g-1"
            # The cmd subscription came back with the reconnect: a command reaches the handler and is acked.
            cmd_id = f"c-{round_}"
            ack_count = len(rec.on("cmd/ack"))
            rec.client.publish(f"{ROOT}/cmd", json.dumps({"id": cmd_id}).encode())
            rec.wait(lambda r, n=ack_count: len(r.on("cmd/ack")) > n, 20, "command ack")  # type: ignore[misc]
            ack = CmdAck.model_validate_json(rec.on("cmd/ack")[-1].raw)
            assert (ack.cmd_id, ack.status, ack.gate) == (cmd_id, "done", GATE)
        assert len(commands) == 2
        assert link.publish_health(HealthPayload(gate=GATE, fps=14.5, outbox_depth=outbox.depth()))
        rec.wait(lambda r: bool(r.on("health")), 10, "health sample")
    finally:
        link.close(clean=True)
        outbox.close()
    assert latest_status(broker)["state"] == "stopped"
    rec.close()


def test_last_will_when_gate_process_dies(tmp_path: Path, broker: Mosquitto, gate_procs: list[GateProcess]) -> None:
    gate = GateProcess(tmp_path / "state", broker)
    gate_procs.append(gate)
    gate.wait_event("connected")
    wait_until(lambda: latest_status(broker)["state"] == "online", 10, "online status")
    gate.kill()
    # The broker publishes the will once it sees the dead socket: wait for it, do not race it.
    wait_until(lambda: latest_status(broker)["state"] == "offline", 20, "the offline will")
    assert latest_status(broker)["gate"] == GATE
    # The broker keeps the will across its own restart (retained + persistence).
    broker.restart()
    assert latest_status(broker, require_retained=True)["state"] == "offline"


def test_unclean_close_leaves_the_will(tmp_path: Path, broker: Mosquitto) -> None:
    outbox, link = make_link(tmp_path, fast_link_config(broker))
    link.start()
    try:
        assert link.wait_connected(10)
        wait_until(lambda: latest_status(broker)["state"] == "online", 10, "online status")
    finally:
        link.close(clean=False)  # MQTT 5 DISCONNECT 0x04: the broker publishes the will
        outbox.close()
    wait_until(lambda: latest_status(broker)["state"] == "offline", 20, "the offline will")
