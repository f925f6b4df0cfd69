"""A turnstile gate controller, simulated: a libosdp peripheral device (PD) on a PTY.

It plays what a real OSDP I/O controller wired to a turnstile does, with realistic timing:
- osdp_OUT on the entry output releases the entry; a traveller (if one is waiting) walks through in
  2-4 s: leaf opens, the passage sensors trip in walking order and clear, the leaf closes. Each
  change is reported to the CP as an osdp_ISTATR input report.
- the emergency input releases entry and egress at once, whatever the outputs say;
- on link loss (no byte from the CP for `link_silence_s`) it goes to its own safe state: entry
  locked, egress free, as gate controllers do when their panel dies.
- a test or technician can trigger a tailgate, a forced door, the emergency input, a traveller who
  does or does not walk, and pull/replug the cable (`unplug()`/`plug()`) or cut it silently (`mute()`).

`time_scale` scales the traveller's timing (tests use ~0.02); OSDP timers commanded by the CP are
device time and are not scaled. Run `python -m tools.turnstile_sim --help` for the technician's version.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import itertools
import os
import pty
import queue
import random
import signal
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import osdp_sys
import structlog
from osdp import Capability, Channel, LibFlag, LogLevel, PDCapabilities, PDInfo, StatusReportType

from drivers.turnstile.config import TurnstileIoMap

log = structlog.get_logger(__name__)

OUT_PERMANENT_OFF = 1
OUT_PERMANENT_ON = 2
OUT_PERMANENT_OFF_AFTER_TIMER = 3
OUT_PERMANENT_ON_AFTER_TIMER = 4
OUT_TEMPORARY_ON = 5
OUT_TEMPORARY_OFF = 6


@dataclass(frozen=True)
class SimCommand:
    """An osdp_OUT the simulated controller received (monotonic arrival time)."""

    at: float
    output_no: int
    control_code: int
    timer_count: int


class _PtyChannel(Channel):
    """The PD's end of the PTY (the master fd). Never raises into libosdp."""

    def __init__(self) -> None:
        super().__init__()
        self.fd: int | None = None
        self.muted = False
        self.last_rx_at = 0.0
        self.rx_bytes = 0

    def read(self, max_bytes: int) -> bytes:
        fd = self.fd
        if fd is None:
            return b""
        try:
            data = os.read(fd, max_bytes)
        except OSError:
            return b""
        if self.muted or not data:
            return b""
        self.rx_bytes += len(data)
        self.last_rx_at = time.monotonic()
        return data

    def write(self, buf: bytes) -> int:
        fd = self.fd
        if fd is None or self.muted:
            return len(buf)  # bytes into a cut cable vanish
        try:
            return os.write(fd, buf)
        except OSError:
            return 0

    def flush(self) -> None:
        return None


class TurnstileSimulator:
    def __init__(
        self,
        *,
        scbk: bytes | None,
        address: int = 0,
        io: TurnstileIoMap | None = None,
        time_scale: float = 1.0,
        link_path: Path | None = None,
        install_mode: bool = False,
        enforce_secure: bool = True,
        walk_when_released: bool = True,
        passage_s: tuple[float, float] = (2.0, 4.0),
        link_silence_s: float = 1.0,
        refresh_interval_ms: float = 2.0,
        seed: int | None = None,
        osdp_log_level: int = LogLevel.Warning,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.io = io or TurnstileIoMap()
        self.scbk = scbk
        self.address = address
        self.time_scale = time_scale
        self.walk_when_released = walk_when_released
        self.passage_s = passage_s
        self.link_silence_s = link_silence_s
        self._install_mode = install_mode or scbk is None
        self._enforce_secure = enforce_secure and scbk is not None
        self._refresh_s = refresh_interval_ms / 1000.0
        self._log_level = osdp_log_level
        self._rng = random.Random(seed)
        self._link_path = link_path
        self._channel = _PtyChannel()
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self.n_outputs = max(self.io.outputs()) + 1
        self.n_inputs = max(self.io.inputs()) + 1
        # physical state, guarded by _cond
        self._cond = threading.Condition()
        self._outputs = [False] * self.n_outputs
        self._outputs[self.io.exit_release_output] = True  # power-up safe state: egress free
        self._timed: dict[int, float] = {}  # output -> monotonic end of a temporary-on
        self._inputs = [0] * self.n_inputs
        self._emergency = False
        self._online = False
        self._walking = False
        self.history: list[SimCommand] = []
        self.keysets: list[bytes] = []
        self.passages = 0
        self.reports_sent = 0
        self.reports_dropped = 0
        self.last_report_at = 0.0
        self.report_log: deque[tuple[float, bytes]] = deque(maxlen=1024)  # (monotonic, report) sent
        # machinery
        self._osdp_lock = threading.Lock()
        self._wakeups: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stop = threading.Event()
        self._ctx: Any = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------- lifecycle
    @property
    def path(self) -> str:
        """Where the CP opens its end: the stable link if one was asked for, else the PTY slave."""
        return str(self._link_path) if self._link_path is not None else self._slave_name

    def start(self) -> None:
        self.plug()
        flags = [LibFlag.InstallMode] if self._install_mode else []
        if self._enforce_secure and not self._install_mode:
            flags.append(LibFlag.EnforceSecure)
        caps = PDCapabilities(
            [
                (Capability.OutputControl, 1, self.n_outputs),
                (Capability.ContactStatusMonitoring, 1, self.n_inputs),
                (Capability.CommunicationSecurity, 1, 1),
            ]
        )
        info = PDInfo(self.address, self._channel, scbk=self.scbk, name="turnstile-sim", flags=flags)
        osdp_sys.set_loglevel(self._log_level)
        self._ctx = osdp_sys.PeripheralDevice(info.get(), capabilities=caps.get())
        self._ctx.set_command_callback(self._on_command)
        for target, name in ((self._refresh_loop, "sim-osdp-refresh"), (self._behaviour_loop, "sim-turnstile")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self._wakeups.put(None)
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._threads.clear()
        self.unplug()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- cable
    def plug(self) -> None:
        """Create a fresh PTY pair (and point the stable link at it): the cable is in."""
        if self._master is not None:
            return
        master, slave = pty.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave  # keep the slave open so the master never reads EIO
        self._slave_name = os.ttyname(slave)
        if self._link_path is not None:
            tmp = self._link_path.with_name(self._link_path.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self._slave_name)
            tmp.replace(self._link_path)
        self._channel.fd = master

    def unplug(self) -> None:
        """Close the PTY pair (and remove the link): the CP's port errors out, as when a USB
        adapter is pulled."""
        self._channel.fd = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self._link_path is not None:
            self._link_path.unlink(missing_ok=True)

    def mute(self, on: bool = True) -> None:
        """Cut the line silently: every byte is lost both ways but the port stays."""
        self._channel.muted = on

    # ------------------------------------------------------- physical state
    def _output_on(self, number: int, now: float) -> bool:
        end = self._timed.get(number)
        if end is not None and now < end:
            return True
        return self._outputs[number]

    @property
    def entry_free(self) -> bool:
        with self._cond:
            return self._emergency or self._output_on(self.io.entry_release_output, time.monotonic())

    @property
    def egress_free(self) -> bool:
        with self._cond:
            return self._emergency or self._output_on(self.io.exit_release_output, time.monotonic())

    @property
    def online(self) -> bool:
        return self._online

    def output_on(self, number: int) -> bool:
        with self._cond:
            return self._output_on(number, time.monotonic())

    def input_active(self, number: int) -> bool:
        with self._cond:
            return bool(self._inputs[number])

    def commands_for(self, output_no: int) -> list[SimCommand]:
        with self._cond:
            return [c for c in self.history if c.output_no == output_no]

    def wait_for(self, predicate: Callable[[TurnstileSimulator], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds (re-checked at every state change) or the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))  # also wakes for timed outputs running out
            return True

    # ------------------------------------------------------------ scenarios
    def set_emergency(self, on: bool) -> None:
        """The fire/emergency input: releases everything at once, in the controller itself."""
        self._schedule(0.0, lambda: self._set_emergency(on))

    def trigger_tailgate(self) -> None:
        """The tailgate/intrusion detector trips for a moment."""
        if self.io.tailgate_input is not None:
            number = self.io.tailgate_input
            self._schedule(0.0, lambda: self._set_input(number, True))
            self._schedule(0.5 * self.time_scale, lambda: self._set_input(number, False))

    def force_door(self) -> None:
        """Someone pushes the locked leaf open; it swings shut again 1.5 s later."""
        if self.io.door_position_input is not None:
            number = self.io.door_position_input
            self._schedule(0.0, lambda: self._set_input(number, True))
            self._schedule(1.5 * self.time_scale, lambda: self._set_input(number, False))

    def walk_through(self, tailgater: bool = False) -> bool:
        """A traveller walks through now if the entry is free (False, nothing happens, if not)."""
        with self._cond:
            if self._walking or not (
                self._emergency or self._output_on(self.io.entry_release_output, time.monotonic())
            ):
                return False
            self._walking = True
        self._schedule(0.0, lambda: self._walk(tailgater))
        return True

    def _walk(self, tailgater: bool) -> None:
        low, high = self.passage_s
        total = self._rng.uniform(low, high) * self.time_scale
        sensors = self.io.passage_sensor_inputs
        steps: list[tuple[float, Callable[[], None]]] = []
        door = self.io.door_position_input
        if door is not None:
            steps.append((0.05, lambda: self._set_input(door, True)))
            steps.append((1.0, lambda: self._set_input(door, False)))
        for i, number in enumerate(sensors):
            on_at = 0.2 + 0.4 * i / len(sensors)
            steps.append((on_at, functools.partial(self._set_input, number, True)))
            steps.append((on_at + 0.4, functools.partial(self._set_input, number, False)))
        if tailgater and self.io.tailgate_input is not None:
            tail = self.io.tailgate_input
            steps.append((0.5, lambda: self._set_input(tail, True)))
            steps.append((0.7, lambda: self._set_input(tail, False)))
        steps.append((1.0, self._walk_done))
        for fraction, action in steps:
            self._schedule(fraction * total, action)

    def _walk_done(self) -> None:
        with self._cond:
            self._walking = False
            self.passages += 1
            self._cond.notify_all()

    # -------------------------------------------------------------- plumbing
    def _schedule(self, delay_s: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._timer_seq), action))
        self._wakeups.put({"command": "_wake"})

    def _set_emergency(self, on: bool) -> None:
        with self._cond:
            self._emergency = on
        self._set_input(self.io.emergency_input, on)
        log.info("sim_emergency", active=on)

    def _set_input(self, number: int, active: bool) -> None:
        inverted = number in self.io.inverted_inputs
        with self._cond:
            self._inputs[number] = int(active != inverted)
            report = bytes(self._inputs)
            self._cond.notify_all()
        self._report(report)

    def _report(self, report: bytes) -> None:
        if not self._online:
            return  # a controller reports changes to a panel it is talking to; the baseline follows
        event = {"event": osdp_sys.EVENT_STATUS, "type": StatusReportType.Input, "report": report}
        submitted_at = time.monotonic()
        with self._osdp_lock:
            ok = self._ctx.submit_event(event)
        self.last_report_at = submitted_at
        self.report_log.append((self.last_report_at, report))
        if ok:
            self.reports_sent += 1
        else:
            self.reports_dropped += 1
            log.warning("sim_report_dropped", report=report.hex())

    # libosdp callback: refresh thread, library lock held. A pd.* call here deadlocks for good, so
    # the command is applied to the simulated relays under `_cond` only (no code path holds `_cond`
    # while taking `_osdp_lock`): like a real controller, the relay has moved before the ACK leaves.
    # Always return a (0, None) tuple: non-zero NAKs, and a bare 0 kills the thread (STACK.md).
    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        command = dict(command)
        command["_at"] = time.monotonic()
        try:
            self._apply_command(command)
        except Exception as exc:  # a NAK would take the link down for 300 s: log instead
            log.error("sim_command_failed", command=str(command), error=str(exc))
        return (0, None)

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._osdp_lock:
                    self._ctx.refresh()
            except Exception as exc:  # keep the simulated device alive
                log.error("sim_refresh_failed", error=str(exc))
            self._stop.wait(self._refresh_s)

    def _behaviour_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                due = self._timers[0][0] if self._timers else time.monotonic() + 0.02
            try:
                item = self._wakeups.get(timeout=max(0.0, min(0.02, due - time.monotonic())))
            except queue.Empty:
                item = None
            del item  # only a wake-up: commands are applied in the libosdp callback
            self._run_due_timers()
            self._watch_link()
            self._expire_timed_outputs()

    def _run_due_timers(self) -> None:
        while True:
            with self._cond:
                if not self._timers or self._timers[0][0] > time.monotonic():
                    return
                _, _, action = heapq.heappop(self._timers)
            action()

    def _apply_command(self, command: dict[str, Any]) -> None:
        if command.get("command") == osdp_sys.CMD_KEYSET:
            key = bytes(command.get("data", b""))
            self.keysets.append(key)
            self.scbk = key  # a real controller stores it in flash
            log.info("sim_keyset_received", key_length=len(key))
            return
        if command.get("command") != osdp_sys.CMD_OUTPUT:
            return
        number, code, timer = command["output_no"], command["control_code"], command.get("timer_count", 0)
        now = time.monotonic()
        with self._cond:
            was_free = self._emergency or self._output_on(self.io.entry_release_output, now)
            self.history.append(SimCommand(command["_at"], number, code, timer))
            if 0 <= number < self.n_outputs:
                if code in (OUT_PERMANENT_OFF, OUT_PERMANENT_ON):
                    self._timed.pop(number, None)
                    self._outputs[number] = code == OUT_PERMANENT_ON
                elif code in (OUT_PERMANENT_OFF_AFTER_TIMER, OUT_PERMANENT_ON_AFTER_TIMER):
                    self._outputs[number] = code == OUT_PERMANENT_ON_AFTER_TIMER
                elif code == OUT_TEMPORARY_ON:
                    self._timed[number] = now + timer / 10.0
                elif code == OUT_TEMPORARY_OFF:
                    self._timed.pop(number, None)
            now_free = self._emergency or self._output_on(self.io.entry_release_output, now)
            self._cond.notify_all()
        if now_free and not was_free and self.walk_when_released:
            self._schedule(0.1 * self.time_scale, self._walk_if_free)

    def _walk_if_free(self) -> None:
        self.walk_through()

    def _expire_timed_outputs(self) -> None:
        now = time.monotonic()
        with self._cond:
            expired = [n for n, end in self._timed.items() if end <= now]
            for number in expired:
                del self._timed[number]
            if expired:
                self._cond.notify_all()

    def _watch_link(self) -> None:
        with self._osdp_lock:
            online = bool(self._ctx.is_online())
            secure = bool(self._ctx.is_sc_active())
        heard = time.monotonic() - self._channel.last_rx_at < self.link_silence_s
        up = online and heard and (secure or not self._enforce_secure)
        if up == self._online:
            return
        with self._cond:
            self._online = up
            if not up:
                # The controller's own fail-safe: entry locked, egress free.
                self._timed.clear()
                self._outputs[self.io.entry_release_output] = False
                self._outputs[self.io.exit_release_output] = True
            report = bytes(self._inputs)
            self._cond.notify_all()
        log.info("sim_link", online=up)
        if up:
            self._report(report)  # baseline of every input for the panel


def _run_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.turnstile_sim",
        description="Simulated OSDP turnstile controller on a PTY; prints the PTY path to open.",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--scbk-file", type=Path, help="file holding the 16-byte SCBK (raw or 32 hex chars)")
    key.add_argument("--install-mode", action="store_true", help="start without a key (accepts osdp_KEYSET)")
    parser.add_argument("--address", type=int, default=0, help="OSDP address (0-126)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="scale the traveller's timing")
    parser.add_argument("--link", type=Path, help="also make this symlink to the PTY (stable across replug)")
    parser.add_argument("--stay", action="store_true", help="travellers do not walk when released")
    args = parser.parse_args(argv)
    scbk: bytes | None = None
    if args.scbk_file is not None:
        raw = args.scbk_file.read_bytes().strip()
        scbk = bytes.fromhex(raw.decode()) if len(raw) == 32 else raw
        if len(scbk) != 16:
            parser.error(f"--scbk-file {args.scbk_file}: need 16 bytes or 32 hex characters, got {len(raw)}")
    elif not args.install_mode:
        parser.error("give --scbk-file PATH (the gate's key) or --install-mode")
    sim = TurnstileSimulator(
        scbk=scbk,
        address=args.address,
        time_scale=args.time_scale,
        link_path=args.link,
        install_mode=args.install_mode,
        walk_when_released=not args.stay,
    )
    sim.start()
    print(f"PTY {sim.path}", flush=True)
    print(
        "commands: walk | tailgate | force | emergency on|off | auto on|off | unplug | plug | mute on|off "
        "| status | quit",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    actions: dict[str, Callable[[list[str]], object]] = {
        "walk": lambda _a: sim.walk_through(),
        "tailgate": lambda _a: sim.trigger_tailgate(),
        "force": lambda _a: sim.force_door(),
        "emergency": lambda a: sim.set_emergency(a[:1] == ["on"]),
        "auto": lambda a: setattr(sim, "walk_when_released", a[:1] != ["off"]),
        "unplug": lambda _a: sim.unplug(),
        "plug": lambda _a: sim.plug(),
        "mute": lambda a: sim.mute(a[:1] != ["off"]),
    }
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] in ("quit", "exit"):
                break
            if words[0] == "status":
                print(
                    f"online={sim.online} entry_free={sim.entry_free} egress_free={sim.egress_free} "
                    f"passages={sim.passages} path={sim.path}",
                    flush=True,
                )
            elif words[0] in actions:
                print(f"{words[0]}: {actions[words[0]](words[1:])}", flush=True)
            else:
                print(f"unknown command {words[0]!r}", flush=True)
        else:
            stop.wait()  # stdin closed (run in the background): serve until SIGTERM/SIGINT
    except KeyboardInterrupt:
        pass
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_run_cli())
