"""Many simulated gates in a few worker processes, driven from the bench (`egate bench fleet`).

Each worker (`python -m egate.tools.sim.fleet_pool`, one per `processes`) hosts its share of the gates
(tools/sim/fleet.py: egate's own Outbox and MqttLink) and answers commands given as JSON lines on stdin,
one JSON line each on stdout; its logs go to a file. Why processes and not one: a gate is three threads
(paho's network loop, the link's forwarder and worker), so 200 gates in one interpreter queue up
behind one GIL, and paho waits on its sockets with select(), which fails for descriptors above 1,024.
With 50 gates a worker holds ~250 descriptors and the bench can use both cores.

Commands: `start` (gates, waiting until each is connected or the timeout passes), `append` (outcome
number `n` into every running gate's outbox), `close` (gates), `stats` (per gate: connected, outbox
depth, parked messages, applied bundle digests), `quit`. Passwords travel on stdin, never in argv.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class GateSpec:
    gate: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None


class SimGatePool:
    """The parent side: `with SimGatePool(...) as pool:` starts the workers; gates are spread round-robin."""

    def __init__(
        self,
        workdir: Path,
        site: str,
        specs: list[GateSpec],
        *,
        processes: int = 4,
        protocol: str = "3.1.1",
        reconnect_max_s: float = 5.0,
        downlink_qos: int = 1,
        seed: int = 19,
    ) -> None:
        self.workdir = Path(workdir)
        self.site = site
        self.specs = {s.gate: s for s in specs}
        self.processes = max(1, min(processes, len(specs)))
        self._owner = {s.gate: i % self.processes for i, s in enumerate(specs)}
        self._protocol = protocol
        self._reconnect_max_s = reconnect_max_s
        self._downlink_qos = downlink_qos
        self._seed = seed
        self._procs: list[subprocess.Popen[str]] = []
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> SimGatePool:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i in range(self.processes):
            log = (self.workdir / f"sim-worker-{i}.log").open("ab")
            self._logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-m", "egate.tools.sim.fleet_pool"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
            self._procs.append(proc)
            mine = [asdict(s) for g, s in self.specs.items() if self._owner[g] == i]
            self._send(
                i,
                {
                    "op": "init",
                    "workdir": str(self.workdir),
                    "site": self.site,
                    "gates": mine,
                    "protocol": self._protocol,
                    "reconnect_max_s": self._reconnect_max_s,
                    "downlink_qos": self._downlink_qos,
                    "seed": self._seed,
                },
            )
        for i in range(self.processes):
            self._receive(i)
        return self

    def __exit__(self, *exc: object) -> None:
        for i, proc in enumerate(self._procs):
            if proc.poll() is None:
                try:
                    self._send(i, {"op": "quit"})
                    proc.wait(timeout=60)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait()
        for log in self._logs:
            log.close()

    # ------------------------------------------------------------------ commands

    def start(self, gates: list[str], timeout_s: float = 60.0) -> list[str]:
        """Start `gates` (re-opening their outboxes if they ran before); returns those connected."""
        replies = self._each({"op": "start", "timeout_s": timeout_s}, gates)
        return [g for r in replies for g in r["connected"]]

    def close(self, gates: list[str]) -> None:
        self._each({"op": "close"}, gates)

    def append(self, n: int) -> int:
        """Outcome number `n` into every running gate's outbox (committed when this returns)."""
        return sum(r["appended"] for r in self._all({"op": "append", "n": n}))

    def stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for reply in self._all({"op": "stats"}):
            out.update(reply["gates"])
        return out

    # ------------------------------------------------------------------ plumbing

    def _each(self, command: dict[str, Any], gates: list[str]) -> list[dict[str, Any]]:
        by_worker: dict[int, list[str]] = {}
        for g in gates:
            by_worker.setdefault(self._owner[g], []).append(g)
        for i, mine in by_worker.items():
            self._send(i, {**command, "gates": mine})
        return [self._receive(i) for i in by_worker]

    def _all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        for i in range(self.processes):
            self._send(i, command)
        return [self._receive(i) for i in range(self.processes)]

    def _send(self, i: int, command: dict[str, Any]) -> None:
        stdin = self._procs[i].stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()

    def _receive(self, i: int) -> dict[str, Any]:
        stdout = self._procs[i].stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            tail = (self.workdir / f"sim-worker-{i}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"simulated gate worker {i} exited: {tail}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"simulated gate worker {i}: {reply['error']}")
        return reply


# ---------------------------------------------------------------- worker process


class _Worker:
    def __init__(self, init: dict[str, Any]) -> None:
        from egate.tools.sim.fleet import SimGate

        self.workdir = Path(init["workdir"])
        self.site = str(init["site"])
        self.protocol = str(init["protocol"])
        self.reconnect_max_s = float(init["reconnect_max_s"])
        self.downlink_qos = int(init.get("downlink_qos", 1))
        self.specs = {g["gate"]: GateSpec(**g) for g in init["gates"]}
        self.rngs = {g: random.Random(f"{init['seed']}/{g}") for g in self.specs}
        self.running: dict[str, SimGate] = {}
        self.applied: dict[str, list[str]] = {g: [] for g in self.specs}
        # Commits are fsynced: several at once keep the disk busy instead of waiting on each in turn.
        self.pool = ThreadPoolExecutor(8)

    def start(self, gates: list[str], timeout_s: float) -> dict[str, Any]:
        from egate.tools.sim.fleet import make_sim_gate

        for g in gates:
            if g in self.running:
                continue
            spec = self.specs[g]
            sim = make_sim_gate(
                self.workdir / "gates" / g,
                self.site,
                g,
                spec.host,
                spec.port,
                username=spec.username,
                password=spec.password,
                protocol=self.protocol,
                reconnect_max_s=self.reconnect_max_s,
                downlink_qos=self.downlink_qos,
            )
            sim.applied = self.applied[g]  # survives a restart of the simulated gate
            sim.start()
            self.running[g] = sim
        deadline = time.monotonic() + timeout_s
        for g in gates:
            self.running[g].link.wait_connected(max(0.0, deadline - time.monotonic()))
        return {"connected": [g for g in gates if self.running[g].link.connected]}

    def close(self, gates: list[str]) -> dict[str, Any]:
        for g in gates:
            sim = self.running.pop(g, None)
            if sim is not None:
                sim.close()
        return {"closed": len(gates)}

    def append(self, n: int) -> dict[str, Any]:
        from egate.tools.sim.fleet import synthetic_outcome

        def one(g: str) -> None:
            self.running[g].outbox.append("outcome", synthetic_outcome(g, self.rngs[g]))

        list(self.pool.map(one, list(self.running)))
        return {"appended": len(self.running), "n": n}

    def stats(self) -> dict[str, Any]:
        gates = {}
        for g in self.specs:
            sim = self.running.get(g)
            gates[g] = {
                "running": sim is not None,
                "connected": bool(sim and sim.link.connected),
                "depth": sim.outbox.depth() if sim else None,
                "parked": sim.link.stats().parked if sim else 0,
                "applied": list(self.applied[g]),
            }
        return {"gates": gates}

    def quit(self) -> None:
        for sim in self.running.values():
            sim.close()
        self.running.clear()
        self.pool.shutdown()


def main() -> None:
    import logging

    import structlog

    # stdout carries the replies: the gates' logs go to stderr (the worker's log file), warnings and up.
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    worker: _Worker | None = None
    out = sys.stdout
    for line in sys.stdin:
        command = json.loads(line)
        op = command.get("op")
        try:
            if op == "init":
                worker = _Worker(command)
                reply: dict[str, Any] = {"ok": True, "pid": os.getpid()}
            elif worker is None:
                reply = {"error": "init first"}
            elif op == "start":
                reply = worker.start(command["gates"], float(command.get("timeout_s", 60)))
            elif op == "close":
                reply = worker.close(command["gates"])
            elif op == "append":
                reply = worker.append(int(command["n"]))
            elif op == "stats":
                reply = worker.stats()
            elif op == "quit":
                worker.quit()
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the bench, which stops with the reason
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
