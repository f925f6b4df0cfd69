"""A turnstile gate controller, simulated: a libosdp peripheral device (PD) on a PTY.

It plays what a real OSDP I/O controller wired to a turnstile does, with realistic timing:
- osdp_OUT on the entry output releases the entry; a traveller (if one is waiting) walks through in
  2-4 s: leaf opens, the passage sensors trip in walking order and clear, the leaf closes. Each
  change is reported to the CP as an osdp_ISTATR input report.
- the emergency input releases entry and egress at once, whatever the outputs say;
- on link loss (no byte from the CP for `link_silence_s`, 3 s by default) it goes to its own safe
  state: entry locked, egress free, any timed release cancelled, as docs/turnstile.md requires of a
  real controller whose panel dies. The emergency input still releases everything.
- a test or technician can trigger a tailgate, a forced door, the emergency input, a traveller who
  does or does not walk, and pull/replug the cable (`unplug()`/`plug()`) or cut it silently (`mute()`).

`TurnstileSimulator` runs the controller in a process of its own, as a real controller has its own
CPU: in the test's process it would share the GIL and the CPU with the control panel under test,
answer late on a loaded machine (libosdp's 200 ms reply deadline) and fail the panel for the
simulator's sake. The test-side object mirrors the controller's state, which the controller
publishes before it acknowledges a command, so what a test reads after an acknowledged command is
already up to date.

`time_scale` scales the traveller's timing (tests use ~0.02); OSDP timers commanded by the CP are
device time and are not scaled. Run `python -m egate.tools.sim.osdp_gate --help` for the technician's version.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import heapq
import itertools
import os
import pty
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import TracebackType
from typing import Any

import osdp_sys
import structlog
from osdp import Capability, Channel, LibFlag, LogLevel, PDCapabilities, PDInfo, StatusReportType
from typing_extensions import Self

from egate.drivers.turnstile.config import TurnstileIoMap

log = structlog.get_logger(__name__)

OUT_PERMANENT_OFF = 1
OUT_PERMANENT_ON = 2
OUT_PERMANENT_OFF_AFTER_TIMER = 3
OUT_PERMANENT_ON_AFTER_TIMER = 4
OUT_TEMPORARY_ON = 5
OUT_TEMPORARY_OFF = 6

# The controller's own link-loss timer: at least the panel's `turnstile.link_silence_s` (2.5 s by
# default), so that the panel notices a loss no later than the controller acts on it.
DEFAULT_LINK_LOSS_S = 3.0
START_DEADLINE_S = 60.0
CALL_DEADLINE_S = 30.0
SEND_BUFFER_BYTES = 8 * 1024 * 1024
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)  # Linux
SIM_RT_PRIORITY = 10  # the controller's process goes before ordinary work (see _take_precedence)
SIM_NICE = -10


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


class SimulatedController:
    """The controller itself: libosdp PD, relays, inputs and traveller model, in this process.

    Tests and tools use `TurnstileSimulator`, which runs one of these in a process of its own."""

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
        link_silence_s: float = DEFAULT_LINK_LOSS_S,
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
        self.reports_total = 0  # reports ever appended to report_log
        self.refresh_gap_max_s = 0.0  # longest time between two libosdp refreshes
        self.refresh_gaps_over_100ms = 0
        self.precedence = "normal"  # scheduling the process got: "rr", "nice" or "normal"
        # machinery
        self._osdp_lock = threading.Lock()
        self._wakeups: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_seq = itertools.count()
        self._stop = threading.Event()
        self._ctx: Any = None
        self._threads: list[threading.Thread] = []
        # Called (under `_cond`) after every change of the observable state: the process wrapper
        # publishes the state from here.
        self.on_change: Callable[[], None] = lambda: None

    def _changed(self) -> None:
        """Wake waiters and publish; call with `_cond` held."""
        self._cond.notify_all()
        self.on_change()

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
        with self._cond:
            self._changed()

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

    def wait_for(self, predicate: Callable[[SimulatedController], bool], timeout: float) -> bool:
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
            self._changed()

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
            self._changed()
        self._report(report)

    def _report(self, report: bytes) -> None:
        if not self._online:
            return  # a controller reports changes to a panel it is talking to; the baseline follows
        event = {"event": osdp_sys.EVENT_STATUS, "type": StatusReportType.Input, "report": report}
        submitted_at = time.monotonic()
        with self._osdp_lock:
            ok = self._ctx.submit_event(event)
        with self._cond:
            self.last_report_at = submitted_at
            self.report_log.append((self.last_report_at, report))
            self.reports_total += 1
            if ok:
                self.reports_sent += 1
            else:
                self.reports_dropped += 1
            self._changed()
        if not ok:
            log.warning("sim_report_dropped", report=report.hex())

    # libosdp callback: refresh thread, library lock held. A pd.* call here deadlocks for good, so
    # the command is applied to the simulated relays under `_cond` only (no code path holds `_cond`
    # while taking `_osdp_lock`): like a real controller, the relay has moved before the ACK leaves.
    # Always return a (0, None) tuple: non-zero NAKs (and a NAK takes the PD offline for 300 s in
    # libosdp 3.2.9), and a bare 0 silently kills the library's thread.
    def _on_command(self, command: dict[str, Any]) -> tuple[int, None]:
        command = dict(command)
        command["_at"] = time.monotonic()
        try:
            self._apply_command(command)
        except Exception as exc:  # a NAK would take the link down for 300 s: log instead
            log.error("sim_command_failed", command=str(command), error=str(exc))
        return (0, None)

    def _refresh_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                with self._osdp_lock:
                    self._ctx.refresh()
            except Exception as exc:  # keep the simulated device alive
                log.error("sim_refresh_failed", error=str(exc))
            now = time.monotonic()
            # A real controller answers within OSDP's 200 ms reply deadline; record how close the
            # simulated one came, so a run on a starved machine can be told from a driver fault.
            gap, last = now - last, now
            if gap > self.refresh_gap_max_s:
                self.refresh_gap_max_s = gap
            if gap > 0.1:
                self.refresh_gaps_over_100ms += 1
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
            with self._cond:
                self.keysets.append(key)
                self.scbk = key  # a real controller stores it in flash
                self._changed()
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
            self._changed()
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
                self._changed()

    def snapshot(self, history_from: int, reports_from: int) -> dict[str, Any]:
        """The observable state, with history and reports after the given counts (call under `_cond`)."""
        with self._cond:
            new_reports = min(self.reports_total - reports_from, len(self.report_log))
            return {
                "outputs": list(self._outputs),
                "timed": dict(self._timed),
                "inputs": list(self._inputs),
                "emergency": self._emergency,
                "online": self._online,
                "passages": self.passages,
                "reports_sent": self.reports_sent,
                "reports_dropped": self.reports_dropped,
                "reports_total": self.reports_total,
                "last_report_at": self.last_report_at,
                "scbk": self.scbk,
                "keysets": list(self.keysets),
                "path": self.path,
                "walk_when_released": self.walk_when_released,
                "refresh_gap_max_s": self.refresh_gap_max_s,
                "refresh_gaps_over_100ms": self.refresh_gaps_over_100ms,
                "precedence": self.precedence,
                "history": [astuple(c) for c in self.history[history_from:]],
                "reports": list(self.report_log)[len(self.report_log) - new_reports :] if new_reports > 0 else [],
            }

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
            self._changed()
        log.info("sim_link", online=up)
        if up:
            self._report(report)  # baseline of every input for the panel


# ------------------------------------------------------------------------------------------------
# The controller in its own process


def _take_precedence() -> str:
    """A real controller has a CPU of its own and always meets OSDP's 200 ms reply deadline (with
    libosdp 3.2.9 a late reply is re-sent, and the re-send breaks the secure channel). On a shared,
    loaded machine the stand-in gets that CPU where the OS allows: a real-time round-robin policy
    (it sleeps between refreshes, so it takes little), else a higher nice priority, else none; the
    simulator records how late it ever was in `refresh_gap_max_s` either way. Threads started later
    inherit the policy. Called once the imports are done: a real-time process busy importing would
    starve other real-time work (another simulator, the panel's refresh thread). Returns what was
    granted."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(SIM_RT_PRIORITY))
        return "rr"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, SIM_NICE)
        return "nice"
    except OSError:
        log.info("sim_priority_unchanged", fix="run as a user with CAP_SYS_NICE for a faithful controller")
        return "normal"


def _widen_send_buffer(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER_BYTES)  # beyond wmem_max: root
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)  # capped at wmem_max
    finally:
        sock.detach()  # the fd stays open for the Connection


def _serve(fd: int) -> int:
    """Child side: run one SimulatedController and obey the test-side object over `fd`.

    State goes out from inside libosdp's command callback, so the test side has it before the
    acknowledgement; the callback must never block on a busy test process, hence small messages
    (changes only) and the largest socket buffer the OS grants."""
    # Ctrl-C at a terminal reaches the whole foreground group: the test-side object decides when this
    # controller stops (it closes the connection), so the child must not die of it with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    precedence = _take_precedence()
    _widen_send_buffer(fd)
    conn = Connection(fd)
    options: dict[str, Any] = conn.recv()
    options["io"] = TurnstileIoMap(**options["io"])
    link_path = options.pop("link_path")
    sim = SimulatedController(link_path=None if link_path is None else Path(link_path), **options)
    sim.precedence = precedence
    send_lock = threading.Lock()
    sent = {"history": 0, "reports": 0}
    last: dict[str, Any] = {}  # what the test side already has: only changes are sent

    def send(message: tuple[Any, ...]) -> None:
        try:
            with send_lock:
                conn.send(message)
        except OSError:
            pass  # the test side is gone: the receive loop below ends on EOF

    def publish() -> None:  # called with the controller's `_cond` held: messages leave in order
        snap = sim.snapshot(sent["history"], sent["reports"])
        sent["history"] += len(snap["history"])
        sent["reports"] = snap["reports_total"]
        changed = {k: v for k, v in snap.items() if k in ("history", "reports") or last.get(k, k) != v}
        last.update(changed)
        send(("state", changed))

    def set_walk(on: bool) -> None:
        with sim._cond:
            sim.walk_when_released = on
            sim._changed()

    calls: dict[str, Callable[..., Any]] = {
        "plug": sim.plug,
        "unplug": sim.unplug,
        "mute": sim.mute,
        "set_emergency": sim.set_emergency,
        "trigger_tailgate": sim.trigger_tailgate,
        "force_door": sim.force_door,
        "walk_through": sim.walk_through,
        "set_walk_when_released": set_walk,
    }
    sim.on_change = publish
    sim.start()
    with sim._cond:
        publish()
    send(("ready",))
    try:
        while True:
            try:
                _, seq, name, args = conn.recv()
            except (EOFError, OSError):
                break
            if name == "close":
                break
            try:
                send(("result", seq, calls[name](*args)))
            except Exception as exc:  # report it to the caller; the controller keeps running
                send(("error", seq, f"{type(exc).__name__}: {exc}"))
    finally:
        sim.close()
    send(("closed",))
    conn.close()
    return 0


class TurnstileSimulator:
    """The simulated controller for tests and tools: runs `SimulatedController` in a child process
    and mirrors its state here. Same constructor and queries as the controller itself."""

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
        link_silence_s: float = DEFAULT_LINK_LOSS_S,
        refresh_interval_ms: float = 2.0,
        seed: int | None = None,
        osdp_log_level: int = LogLevel.Warning,
    ) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        self.io = io or TurnstileIoMap()
        self.address = address
        self.time_scale = time_scale
        self.link_silence_s = link_silence_s
        self.n_outputs = max(self.io.outputs()) + 1
        self.n_inputs = max(self.io.inputs()) + 1
        self._options: dict[str, Any] = {
            "scbk": scbk,
            "address": address,
            "io": self.io.model_dump(),
            "time_scale": time_scale,
            "link_path": None if link_path is None else str(link_path),
            "install_mode": install_mode,
            "enforce_secure": enforce_secure,
            "walk_when_released": walk_when_released,
            "passage_s": passage_s,
            "link_silence_s": link_silence_s,
            "refresh_interval_ms": refresh_interval_ms,
            "seed": seed,
            "osdp_log_level": int(osdp_log_level),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._pump_lock = threading.Lock()  # taken before _cond, never the other way round
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._results: dict[int, tuple[str, Any]] = {}
        self._ready = False
        self._gone = False
        self._state: dict[str, Any] = {
            "outputs": [False] * self.n_outputs,
            "timed": {},
            "inputs": [0] * self.n_inputs,
            "emergency": False,
            "online": False,
            "passages": 0,
            "reports_sent": 0,
            "reports_dropped": 0,
            "last_report_at": 0.0,
            "scbk": scbk,
            "keysets": [],
            "path": "" if link_path is None else str(link_path),
            "walk_when_released": walk_when_released,
            "refresh_gap_max_s": 0.0,
            "refresh_gaps_over_100ms": 0,
            "precedence": "normal",
        }
        self._history: list[SimCommand] = []
        self.report_log: deque[tuple[float, bytes]] = deque(maxlen=1024)

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("simulator already started")
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "egate.tools.sim.osdp_gate", "--serve-fd", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        # Nice at once (on a loaded machine its imports alone take seconds); real-time once they are done.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, SIM_NICE)
        self._conn = Connection(ours.detach())
        self._conn.send(self._options)
        self._reader = threading.Thread(target=self._read_loop, name="sim-mirror", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_DEADLINE_S
        with self._cond:
            while not self._ready:
                if self._gone or time.monotonic() > deadline:
                    code = self._proc.poll()
                    self._kill()
                    raise RuntimeError(f"turnstile simulator did not start (exit code {code})")
                self._cond.wait(0.05)

    def close(self) -> None:
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        if proc.poll() is None and not self._gone:
            try:
                with self._send_lock:
                    conn.send(("call", next(self._seq), "close", ()))
                proc.wait(timeout=10.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        with self._cond:
            self._gone = True
            self._cond.notify_all()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------- mirroring
    def _read_loop(self) -> None:
        while not self._gone:
            conn = self._conn
            if conn is None:
                return
            try:
                wait([conn], timeout=0.05)
            except (OSError, ValueError):
                return
            self._sync()

    def _sync(self) -> None:
        """Apply every message the controller has sent so far."""
        with self._pump_lock:
            conn = self._conn
            while conn is not None and not self._gone:
                try:
                    if not conn.poll(0):
                        return
                    message = conn.recv()
                except (EOFError, OSError, ValueError):
                    with self._cond:
                        self._gone = True
                        self._cond.notify_all()
                    return
                self._apply(message)

    def _apply(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        with self._cond:
            if kind == "state":
                snap = dict(message[1])
                self._history.extend(SimCommand(*c) for c in snap.pop("history"))
                self.report_log.extend(snap.pop("reports"))
                self._state.update(snap)
            elif kind in ("result", "error"):
                self._results[message[1]] = (kind, message[2])
            elif kind == "ready":
                self._ready = True
            elif kind == "closed":
                self._gone = True
            self._cond.notify_all()

    def _call(self, name: str, *args: Any) -> Any:
        conn = self._conn
        if conn is None or self._gone:
            raise RuntimeError(f"turnstile simulator is not running: cannot {name}")
        seq = next(self._seq)
        with self._send_lock:
            conn.send(("call", seq, name, args))
        deadline = time.monotonic() + CALL_DEADLINE_S
        while True:
            self._sync()
            with self._cond:
                if seq in self._results:
                    kind, value = self._results.pop(seq)
                    break
                if self._gone or time.monotonic() > deadline:
                    raise RuntimeError(f"turnstile simulator did not answer {name}")
                self._cond.wait(0.02)
        if kind == "error":
            raise RuntimeError(f"turnstile simulator: {name} failed: {value}")
        return value

    def _get(self, key: str) -> Any:
        self._sync()
        with self._cond:
            return self._state[key]

    # --------------------------------------------------------------- queries
    @property
    def path(self) -> str:
        """Where the CP opens its end: the stable link if one was asked for, else the PTY slave."""
        return str(self._get("path"))

    @property
    def scbk(self) -> bytes | None:
        value: bytes | None = self._get("scbk")
        return value

    @property
    def keysets(self) -> list[bytes]:
        return list(self._get("keysets"))

    @property
    def passages(self) -> int:
        return int(self._get("passages"))

    @property
    def reports_sent(self) -> int:
        return int(self._get("reports_sent"))

    @property
    def reports_dropped(self) -> int:
        return int(self._get("reports_dropped"))

    @property
    def last_report_at(self) -> float:
        return float(self._get("last_report_at"))

    @property
    def online(self) -> bool:
        return bool(self._get("online"))

    @property
    def walk_when_released(self) -> bool:
        return bool(self._get("walk_when_released"))

    @walk_when_released.setter
    def walk_when_released(self, on: bool) -> None:
        self._call("set_walk_when_released", bool(on))

    @property
    def refresh_gap_max_s(self) -> float:
        """Longest pause of the controller's OSDP loop: above 0.2 s it may have missed a reply deadline."""
        return float(self._get("refresh_gap_max_s"))

    @property
    def refresh_gaps_over_100ms(self) -> int:
        return int(self._get("refresh_gaps_over_100ms"))

    @property
    def precedence(self) -> str:
        """The scheduling the controller's process was granted: "rr", "nice" or "normal"."""
        return str(self._get("precedence"))

    @property
    def history(self) -> list[SimCommand]:
        self._sync()
        with self._cond:
            return list(self._history)

    def _output_on(self, number: int, now: float) -> bool:
        end = self._state["timed"].get(number)
        if end is not None and now < end:
            return True
        return bool(self._state["outputs"][number])

    @property
    def entry_free(self) -> bool:
        self._sync()
        with self._cond:
            return bool(self._state["emergency"]) or self._output_on(self.io.entry_release_output, time.monotonic())

    @property
    def egress_free(self) -> bool:
        self._sync()
        with self._cond:
            return bool(self._state["emergency"]) or self._output_on(self.io.exit_release_output, time.monotonic())

    def output_on(self, number: int) -> bool:
        self._sync()
        with self._cond:
            return self._output_on(number, time.monotonic())

    def input_active(self, number: int) -> bool:
        return bool(self._get("inputs")[number])

    def commands_for(self, output_no: int) -> list[SimCommand]:
        return [c for c in self.history if c.output_no == output_no]

    def wait_for(self, predicate: Callable[[TurnstileSimulator], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds (re-checked at every state change) or the deadline."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._cond:
                self._cond.wait(min(left, 0.02))  # also wakes for timed outputs running out
        return True

    # ------------------------------------------------------------ scenarios
    def set_emergency(self, on: bool) -> None:
        """The fire/emergency input: releases everything at once, in the controller itself."""
        self._call("set_emergency", on)

    def trigger_tailgate(self) -> None:
        """The tailgate/intrusion detector trips for a moment."""
        self._call("trigger_tailgate")

    def force_door(self) -> None:
        """Someone pushes the locked leaf open; it swings shut again 1.5 s later."""
        self._call("force_door")

    def walk_through(self, tailgater: bool = False) -> bool:
        """A traveller walks through now if the entry is free (False, nothing happens, if not)."""
        return bool(self._call("walk_through", tailgater))

    def plug(self) -> None:
        """A fresh PTY pair (and the stable link pointed at it): the cable is in."""
        self._call("plug")

    def unplug(self) -> None:
        """Close the PTY pair (and remove the link): the CP's port errors out."""
        self._call("unplug")

    def mute(self, on: bool = True) -> None:
        """Cut the line silently: every byte is lost both ways but the port stays."""
        self._call("mute", on)


def _run_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m egate.tools.sim.osdp_gate",
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
    sim = SimulatedController(
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
    if sys.argv[1:2] == ["--serve-fd"]:
        # Started by TurnstileSimulator: its log goes to stderr, so the stdout of the tool that started it
        # (`egate demo --once --json`) carries only that tool's output.
        from egate.edge.service.logs import configure_logging

        configure_logging(level="info", stream=sys.stderr)
        raise SystemExit(_serve(int(sys.argv[2])))
    raise SystemExit(_run_cli())
