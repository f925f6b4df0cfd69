"""`egate bench gate --soak`: the turnstile link under full CPU load for minutes on end.

What a gate does in service, squeezed: the face pipeline runs at full rate in this process (the
daemon's process, sharing the GIL with the OSDP control panel), one busy-loop process per core takes
whatever CPU is left, and the panel drives open/lock cycles against the simulated controller on a
PTY with the secure channel on; every `walk_every`-th cycle a traveller walks through, so input
reports flow too. The simulated controller runs in its own process, as a real one has its own CPU.

Reported: link drops (the goal is 0), refused or unacknowledged openings, missed passage events, the
open command's acknowledgement latency (p50/p95/p99/max), how hard the load really was (pipeline
frames, busy loops) and how late the simulated controller ever was (a stand-in starved past OSDP's
200 ms reply deadline would explain a drop that is not the panel's fault).
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from egate.drivers.turnstile.base import GateEvent
from egate.drivers.turnstile.config import OsdpGateConfig
from egate.drivers.turnstile.gates.osdp import OsdpGateController
from egate.tools.paths import DEMO_MEDIA
from egate.tools.sim.osdp_gate import TurnstileSimulator

log = structlog.get_logger(__name__)

DEMO_CLIP = DEMO_MEDIA / "head-pose-face-detection-female-and-male.gif"
LINK_UP_DEADLINE_S = 30.0
PASSAGE_DEADLINE_S = 10.0


def percentiles(samples_s: list[float]) -> dict[str, float | int]:
    """n, p50, p95, p99 and max in milliseconds (nearest-rank)."""
    ms = sorted(s * 1000.0 for s in samples_s)
    if not ms:
        return {"n": 0}

    def rank(q: float) -> float:
        return round(ms[min(len(ms) - 1, max(0, math.ceil(q * len(ms)) - 1))], 2)

    return {"n": len(ms), "p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(ms[-1], 2)}


class _Events:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[GateEvent] = []

    def __call__(self, event: GateEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def count(self, kind: str) -> int:
        with self.cond:
            return sum(1 for e in self.events if e.kind == kind)

    def wait_passage(self, decision_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(e.kind == "passage_completed" and e.decision_id == decision_id for e in self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


class _FacePipelineLoad:
    """The real face engine analysing demo frames back to back, in this process. Loaded before the
    gate starts, as the daemon does (model loading and imports hold the GIL for long stretches)."""

    def __init__(self) -> None:
        self.frames = 0
        self.faces = 0
        self.error = ""
        self.model_id = ""
        self._images: list[Any] = []
        self._engine: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-face-pipeline", daemon=True)
        self._started = 0.0

    def prepare(self) -> None:
        try:
            import cv2

            from egate.engines.config import EngineConfig
            from egate.engines.models import default_model_dir
            from egate.engines.pipeline import FaceEngine

            capture = cv2.VideoCapture(str(DEMO_CLIP))
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                self._images.append(frame)
            capture.release()
            if not self._images:
                raise RuntimeError(f"no frames in {DEMO_CLIP}")
            self._engine = FaceEngine.from_config(EngineConfig(), default_model_dir())
            self.model_id = str(getattr(self._engine, "model_id", ""))
        except Exception as exc:  # report the missing load rather than pretend it ran
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("soak_face_pipeline_failed", error=self.error)

    def start(self) -> None:
        self._started = time.monotonic()
        if self._engine is not None:
            self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)
        if self._engine is not None:
            self._engine.close()
        seconds = max(1e-9, time.monotonic() - self._started)
        if self.error:
            return {"running": False, "error": self.error}
        return {
            "running": True,
            "model": self.model_id,
            "frames": self.frames,
            "faces": self.faces,
            "fps": round(self.frames / seconds, 1),
        }

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            self.faces += len(self._engine.analyze(self._images[i % len(self._images)]))
            self.frames += 1
            i += 1


def _start_busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def _stop_busy_loops(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def _wait_up(gate: OsdpGateController, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gate.link_state == "up" and gate.status().inputs is not None:
            return True
        time.sleep(0.01)  # polling a cheap predicate under a deadline
    return False


def run_soak(
    minutes: float,
    *,
    busy_loops: int | None = None,
    face_pipeline: bool = True,
    walk_every: int = 20,
    pause_ms: float = 20.0,
) -> dict[str, Any]:
    busy = (os.cpu_count() or 1) if busy_loops is None else busy_loops
    scbk = secrets.token_bytes(16)
    with tempfile.TemporaryDirectory(prefix="egate-soak-") as tmp:
        link = Path(tmp) / "gate"
        config = OsdpGateConfig(url=str(link), osdp_log_level="error", reconnect_initial_s=0.2, reconnect_max_s=1.0)
        events = _Events()
        sim = TurnstileSimulator(
            scbk=scbk, io=config.io, time_scale=0.02, link_path=link, walk_when_released=False, seed=1
        )
        sim.start()
        pipeline = _FacePipelineLoad() if face_pipeline else None
        if pipeline is not None:
            pipeline.prepare()
        gate = OsdpGateController(config, scbk, events)
        gate.start()
        procs: list[subprocess.Popen[bytes]] = []
        acks: list[float] = []
        cycles = walks = refused = missed_passages = 0
        try:
            if not _wait_up(gate, LINK_UP_DEADLINE_S):
                raise RuntimeError(f"gate link did not come up within {LINK_UP_DEADLINE_S:g} s: {gate.status()}")
            if pipeline is not None:
                pipeline.start()
            procs = _start_busy_loops(busy)
            started = time.monotonic()
            end = started + minutes * 60.0
            while time.monotonic() < end:
                decision = f"soak-{cycles}"
                walk = walk_every > 0 and cycles % walk_every == 0
                t0 = time.monotonic()
                opened = gate.open_for_passage(decision, 5.0)
                cycles += 1
                if not opened:
                    refused += 1
                    _wait_up(gate, LINK_UP_DEADLINE_S)  # a drop: count it, wait for the link, go on
                    continue
                acks.append(time.monotonic() - t0)
                if walk:
                    walks += 1
                    if not sim.walk_through() or not events.wait_passage(decision, PASSAGE_DEADLINE_S):
                        missed_passages += 1
                        gate.lock()
                else:
                    gate.lock()
                time.sleep(pause_ms / 1000.0)  # the next traveller's arrival, not a synchronisation
            elapsed = time.monotonic() - started
        finally:
            _stop_busy_loops(procs)
            load = pipeline.stop() if pipeline is not None else {"running": False, "error": "disabled"}
            counters = dict(gate.counters)
            panel_gap_ms = gate.status().diagnostics["refresh_gap_max_ms"]
            gap_max_ms = round(sim.refresh_gap_max_s * 1000.0, 1)
            gaps_over_100 = sim.refresh_gaps_over_100ms
            precedence = sim.precedence
            gate.close()
            sim.close()
    return {
        "version": 1,
        "bench": "gate_soak",
        "transport": "pty, secure channel; panel in this process, simulated controller in its own",
        "minutes": round(elapsed / 60.0, 2),
        "cpus": os.cpu_count(),
        "load": {"busy_loops": busy, "face_pipeline": load},
        "cycles": cycles,
        "walks": walks,
        "link_drops": events.count("link_lost"),
        "opens_refused": refused,
        "opens_unacknowledged": counters.get("commands_unacknowledged", 0),
        "passages_missed": missed_passages,
        "reconnect_attempts": counters.get("reconnect_attempts", 0),
        "command_ack_ms": percentiles(acks),
        "panel_refresh_gap_max_ms": panel_gap_ms,
        "controller_stand_in": {
            "scheduling": precedence,
            "refresh_gap_max_ms": gap_max_ms,
            "refresh_gaps_over_100ms": gaps_over_100,
        },
    }
