"""`GateController` over OSDP (IEC 60839-11-5): egate is the control panel (CP), the gate
controller is a peripheral device (PD) on a serial line.

Threads (none of them ever waits on inference):
- `osdp-refresh`: calls libosdp's refresh every `refresh_interval_ms` (2 ms: ~5 ms command latency,
  docs/turnstile.md) under `_osdp_lock`. libosdp calls our channel and callbacks from here, with that lock
  held: the callbacks only queue things (a `cp.*` call from inside one deadlocks for good).
- `gate-worker`: the single place that reads input reports and notifications, runs the door cycle,
  fires passage deadlines, supervises the link (silence, secure channel, the refresh thread) and
  reconnects with backoff. It alone calls the event callback.
- Callers' threads: open/lock/release/guidance take `_state_lock`, update the cycle and submit
  osdp_OUT commands; `open_for_passage` then waits (unlocked) for the PD's acknowledgement.

libosdp's `ControlPanel` wrapper starts its own 20 ms refresh thread and keeps an event queue that
grows unless drained; we drive the `osdp_sys` context it wraps directly to own both.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import osdp_sys
import structlog
from osdp import Capability, CompletionStatus, EventNotification, LibFlag, LogLevel, PDInfo, StatusReportType

from egate.drivers.turnstile.base import (
    GateController,
    GateEvent,
    GateEventCallback,
    GateStatus,
    GuidanceKind,
    LinkState,
    SerialLinkStatus,
)
from egate.drivers.turnstile.config import OsdpGateConfig, parse_scbk
from egate.drivers.turnstile.cycle import (
    OUT_PERMANENT_OFF,
    OUT_PERMANENT_ON,
    Actions,
    DoorCycle,
    OutputOrder,
    check_open_request,
    guidance_outputs,
)
from egate.drivers.turnstile.registry import CredentialReader, GateDriver, GateSetupError
from egate.drivers.turnstile.serial_channel import SerialChannel

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

PD_INDEX: Final = 0  # one gate controller per serial line
EVENT_STATUS: Final = osdp_sys.EVENT_STATUS
EVENT_NOTIFICATION: Final = osdp_sys.EVENT_NOTIFICATION
SCBK_LENGTH: Final = 16  # AES-128 secure channel base key (IEC 60839-11-5 annex D)
SUPERVISE_INTERVAL_S: Final = 0.02
REFRESH_STALL_S: Final = 2.0  # a refresh normally takes well under a millisecond
LOCK_WAIT_S: Final = 0.5  # longest wait for libosdp's lock outside the refresh thread
MAX_PENDING_COMMANDS: Final = 256
REFRESH_RT_PRIORITY: Final = 5  # low in the real-time range: above all ordinary work, below the kernel's

_LOG_LEVELS: Final = {
    "error": LogLevel.Error,
    "warning": LogLevel.Warning,
    "info": LogLevel.Info,
    "debug": LogLevel.Debug,
}


@dataclass
class _Pending:
    """An osdp_OUT command waiting for the PD's acknowledgement (libosdp's completion callback)."""

    command: dict[str, int]
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None

    def resolve(self, status: int | None) -> None:
        self.status = status
        self.done.set()

    def wait_ok(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s) and self.status == CompletionStatus.Ok


class OsdpGateController(GateController):
    def __init__(self, config: OsdpGateConfig, scbk: bytes | None, on_event: GateEventCallback) -> None:
        if config.secure_channel and (scbk is None or len(scbk) != SCBK_LENGTH):
            got = "none" if scbk is None else f"{len(scbk)} bytes"
            raise ValueError(
                f"turnstile SCBK must be {SCBK_LENGTH} bytes (got {got}): check the credential file "
                "holding the gate controller's secure channel key, or set turnstile.secure_channel = false "
                "only on a bench"
            )
        self._config = config
        self._scbk = scbk if config.secure_channel else None
        self._on_event = on_event
        self._cycle = DoorCycle(config.io)
        self._state_lock = threading.RLock()
        self._osdp_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stop = threading.Event()
        self._channel: SerialChannel | None = None
        self._ctx: Any = None
        self._refresh_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None
        self._refresh_heartbeat = 0.0
        self.refresh_gap_max_s = 0.0
        self._next_refresh_restart_at = 0.0
        self._link_state: LinkState = "stopped"
        self._link_changed_at = time.time()
        self._ever_up = False
        self._closed = False
        # reconnection (libosdp keeps a PD offline for 300 s after any failure: we disable and
        # re-enable it ourselves, with backoff)
        self._backoff_s = config.reconnect_initial_s
        self._next_attempt_at = math.inf
        self._disabling = False
        self._attempt_rx_bytes = 0
        self._attempt_sc_seen = False
        self._sc_failed_reported = False
        self._sc_failed = False
        self._sc_default_key = False
        self._caps_checked = False
        self.counters: dict[str, int] = {
            "reconnect_attempts": 0,
            "links_lost": 0,
            "commands_refused": 0,
            "commands_unacknowledged": 0,
            "refresh_errors": 0,
            "refresh_restarts": 0,
            "events": 0,
        }

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._ctx is not None or self._closed:
            raise RuntimeError("turnstile controller already started (or closed): create a new one")
        cfg = self._config
        if cfg.install_mode:
            log.warning(
                "turnstile_install_mode_on",
                url=cfg.url,
                address=cfg.address,
                fix="set turnstile.install_mode = false once the gate controller holds the SCBK",
            )
        if not cfg.secure_channel:
            log.warning("turnstile_secure_channel_off", url=cfg.url, fix="set turnstile.secure_channel = true")
        flags = [LibFlag.EnableNotification]
        if cfg.secure_channel and not cfg.install_mode:
            # Without EnforceSecure a wrong key silently falls back to plaintext and the PD obeys
            # plaintext osdp_OUT commands (docs/turnstile.md). Install mode must allow SCBK-D, so it cannot.
            flags.append(LibFlag.EnforceSecure)
        self._channel = SerialChannel(cfg.url, cfg.baud, reopen_interval_s=min(0.5, cfg.reconnect_initial_s))
        info = PDInfo(cfg.address, self._channel, scbk=self._scbk, name=f"gate-{cfg.address}", flags=flags)
        osdp_sys.set_loglevel(_LOG_LEVELS[cfg.osdp_log_level])
        self._ctx = osdp_sys.ControlPanel([info.get()])
        self._ctx.set_event_callback(self._on_osdp_event)
        self._ctx.set_command_completion_callback(self._on_command_completion)
        self._set_link_state("connecting", "starting")
        self._next_attempt_at = time.monotonic() + self._backoff_s
        self._start_refresh_thread()
        self._worker_thread = threading.Thread(target=self._worker, name="gate-worker", daemon=True)
        self._worker_thread.start()
        log.info(
            "turnstile_started",
            url=cfg.url,
            address=cfg.address,
            secure_channel=cfg.secure_channel,
            install_mode=cfg.install_mode,
            refresh_interval_ms=cfg.refresh_interval_ms,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pendings: list[_Pending | None] = []
        if self._ctx is not None:
            with self._state_lock:
                if self._link_state == "up":
                    pendings = self._send(self._cycle.safe_outputs())
                self._cycle.link_down("closed")
            deadline = time.monotonic() + self._config.command_timeout_s
            acked = all(p is not None and p.wait_ok(max(0.0, deadline - time.monotonic())) for p in pendings)
            if pendings and not acked:
                log.warning("turnstile_close_safe_state_unconfirmed", url=self._config.url)
        self._stop.set()
        self._inbox.put(None)
        for thread in (self._worker_thread, self._refresh_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=2.0)
        if self._channel is not None:
            self._channel.close()
        self._fail_pending()
        self._set_link_state("closed", "close() called")
        log.info("turnstile_closed", url=self._config.url, safe_state_sent=bool(pendings))

    # ------------------------------------------------------------ operations
    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        check_open_request(decision_id, timeout_s)
        with self._state_lock:
            if self._closed:
                return self._refused("open", "closed", decision_id)
            answer = self._cycle.request_open(decision_id, timeout_s, time.monotonic())
            if not answer.accepted or answer.reason:
                if answer.reason == "decision_already_used":
                    log.warning("gate_open_repeated", decision_id=decision_id, first_answer=answer.accepted)
                    return answer.accepted
                return self._refused("open", answer.reason, decision_id)
            pendings = self._send(answer.actions.outputs)
        self._inbox.put({"event": "_wake"})  # the worker must see the new deadline
        entry = pendings[0] if pendings else None
        if entry is not None and entry.wait_ok(self._config.command_timeout_s):
            log.debug("gate_opened", decision_id=decision_id, timeout_s=timeout_s)
            return True
        self.counters["commands_unacknowledged"] += 1
        with self._state_lock:
            self._send(self._cycle.open_failed(decision_id).outputs)
        log.error(
            "gate_open_not_acknowledged",
            decision_id=decision_id,
            status=None if entry is None else entry.status,
            link_state=self._link_state,
        )
        return False

    def lock(self) -> bool:
        with self._state_lock:
            if self._closed:
                return self._refused("lock", "closed", None)
            ok, reason, actions = self._cycle.request_lock()
            if not ok:
                return self._refused("lock", reason, None)
            self._send(actions.outputs)
        log.debug("gate_locked")
        return True

    def emergency_release(self) -> bool:
        with self._state_lock:
            if self._closed:
                return self._refused("emergency_release", "closed", None)
            ok, reason, actions = self._cycle.request_emergency_release(time.monotonic())
            if not ok:
                return self._refused("emergency_release", reason, None)
            self._send(actions.outputs)
        log.warning("gate_emergency_release_ordered")
        return True

    def set_guidance(self, kind: GuidanceKind) -> bool:
        orders = [
            OutputOrder(number, OUT_PERMANENT_ON if on else OUT_PERMANENT_OFF)
            for number, on in guidance_outputs(self._config.io, kind)
        ]
        with self._state_lock:
            if self._closed or self._link_state != "up":
                return self._refused("guidance", "link_down", None)
            self._send(orders)
        return True

    @property
    def link_state(self) -> LinkState:
        return self._link_state

    def status(self) -> GateStatus:
        with self._state_lock:
            inputs = dict(self._cycle.inputs) if self._cycle.inputs is not None else None
            serial = None
            if self._channel is not None:
                serial = SerialLinkStatus(
                    open=self._channel.is_open,
                    rx_bytes=self._channel.rx_bytes,
                    tx_bytes=self._channel.tx_bytes,
                    opens=self._channel.opens,
                    last_error=self._channel.last_error or "",
                )
            return GateStatus(
                driver="osdp",
                endpoint=f"{self._config.url} address {self._config.address}",
                link_state=self._link_state,
                link_changed_at=self._link_changed_at,
                link_security="secure_channel" if self._config.secure_channel else "plaintext",
                link_auth_failed=self._sc_failed,
                key_credential=self._config.scbk_credential if self._config.secure_channel else None,
                commissioning=self._config.install_mode or self._sc_default_key,
                gate_state=self._cycle.state,
                emergency=self._cycle.emergency_active,
                pending_decision=self._cycle.decision_id,
                inputs=None if inputs is None else {role: inputs[n] for role, n in self._config.io.input_roles()},
                counters=dict(self.counters),
                serial=serial,
                diagnostics={
                    "refresh_gap_max_ms": round(self.refresh_gap_max_s * 1000.0, 1),
                    "default_key_in_use": self._sc_default_key,
                },
            )

    # ------------------------------------------------------------- internals
    def _refused(self, op: str, reason: str, decision_id: str | None) -> bool:
        self.counters["commands_refused"] += 1
        log.warning("gate_command_refused", op=op, reason=reason, decision_id=decision_id)
        return False

    def _send(self, orders: list[OutputOrder]) -> list[_Pending | None]:
        """Submit osdp_OUT commands in order; a None entry was refused by libosdp (PD offline)."""
        return [self._submit(self._out_command(order)) for order in orders]

    @staticmethod
    def _out_command(order: OutputOrder) -> dict[str, int]:
        return {
            "command": osdp_sys.CMD_OUTPUT,
            "output_no": order.output_no,
            "control_code": order.control_code,
            "timer_count": order.timer_count,
        }

    def _submit(self, command: dict[str, int]) -> _Pending | None:
        if self._ctx is None:
            return None
        pending = _Pending(command)
        with self._submit_lock:
            # Queued before submitting: the completion may fire on the refresh thread at once.
            with self._pending_lock:
                self._pending.append(pending)
                while len(self._pending) > MAX_PENDING_COMMANDS:
                    self._pending.popleft().resolve(None)
            accepted = False
            if self._osdp_lock.acquire(timeout=LOCK_WAIT_S):
                try:
                    accepted = bool(self._ctx.submit_command(PD_INDEX, command))
                finally:
                    self._osdp_lock.release()
            if not accepted:
                with self._pending_lock:
                    if pending in self._pending:
                        self._pending.remove(pending)
                log.warning("osdp_command_not_queued", command=command, link_state=self._link_state)
                return None
        return pending

    def _fail_pending(self) -> None:
        with self._pending_lock:
            pendings = list(self._pending)
            self._pending.clear()
        for pending in pendings:
            pending.resolve(None)

    # libosdp callbacks: refresh thread, osdp lock held. Queue only; never call the context.
    def _on_osdp_event(self, pd: int, event: dict[str, Any]) -> int:
        self._inbox.put(event)
        return 0

    def _on_command_completion(self, pd: int, command: dict[str, Any], status: int) -> None:
        with self._pending_lock:
            index = next((i for i, p in enumerate(self._pending) if p.command == command), None)
            if index is None:
                return
            skipped = [self._pending.popleft() for _ in range(index)]
            pending = self._pending.popleft()
        for lost in skipped:  # commands complete in order: an earlier one without completion is lost
            lost.resolve(None)
        pending.resolve(status)

    # -------------------------------------------------------- refresh thread
    def _start_refresh_thread(self) -> None:
        self._refresh_heartbeat = time.monotonic()
        self._refresh_thread = threading.Thread(target=self._refresh_loop, name="osdp-refresh", daemon=True)
        self._refresh_thread.start()

    def _refresh_loop(self) -> None:
        interval = self._config.refresh_interval_ms / 1000.0
        ctx = self._ctx
        self._take_realtime()
        while not self._stop.is_set():
            try:
                with self._osdp_lock:
                    ctx.refresh()
            except Exception as exc:  # keep refreshing; the worker watches the counter
                self.counters["refresh_errors"] += 1
                log.error("osdp_refresh_failed", error=f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.1)
            now = time.monotonic()
            # The longest pause of this loop: libosdp only reads replies here, so a long one (a GIL
            # held elsewhere, a starved CPU) shows up as latency and, past link_silence_s, a lost link.
            self.refresh_gap_max_s = max(self.refresh_gap_max_s, now - self._refresh_heartbeat)
            self._refresh_heartbeat = now
            self._stop.wait(interval)

    def _take_realtime(self) -> None:
        """Put this thread (only) in the real-time round-robin class, where the OS allows it.

        Inside one refresh libosdp reads the channel and then checks its 200 ms reply deadline; a
        thread descheduled between the two by a busy CPU times out a reply that did arrive, and
        libosdp 3.2.9's re-send breaks the secure channel. A real-time thread is not preempted by
        ordinary work; it sleeps between refreshes, so it takes little. Without CAP_SYS_NICE the
        loop runs at normal priority (logged once)."""
        if not self._config.refresh_realtime:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(REFRESH_RT_PRIORITY))
        except (OSError, AttributeError) as exc:
            log.info("osdp_refresh_realtime_unavailable", error=str(exc), fix="grant CAP_SYS_NICE to egate")

    # ---------------------------------------------------------------- worker
    def _worker(self) -> None:
        while not self._stop.is_set():
            with self._state_lock:
                deadline = self._cycle.next_deadline()
            wait = max(0.0, min(SUPERVISE_INTERVAL_S, deadline - time.monotonic()))
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                item = None
            if self._stop.is_set():
                break
            try:
                events: list[GateEvent] = []
                while item is not None:
                    events += self._handle(item)
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        item = None
                events += self._supervise()
                with self._state_lock:
                    actions = self._cycle.on_tick(time.monotonic())
                    self._send(actions.outputs)
                events += actions.events
                self._emit(events)
            except Exception:  # the worker must survive anything; log it loudly
                log.exception("gate_worker_error")

    def _emit(self, events: list[GateEvent]) -> None:
        for event in events:
            self.counters["events"] += 1
            log.info("gate_event", kind=event.kind, decision_id=event.decision_id, detail=event.detail)
            try:
                self._on_event(event)
            except Exception:  # a broken consumer must not stop the gate
                log.exception("gate_event_callback_failed", kind=event.kind)

    def _handle(self, event: dict[str, Any]) -> list[GateEvent]:
        kind = event.get("event")
        if kind == EVENT_STATUS and event.get("type") == StatusReportType.Input:
            with self._state_lock:
                actions: Actions = self._cycle.on_inputs(bytes(event.get("report", b"")), time.monotonic())
                self._send(actions.outputs)
            return actions.events
        if kind == EVENT_NOTIFICATION:
            return self._on_notification(event)
        if kind != "_wake":
            log.debug("osdp_event_ignored", osdp_event=event)
        return []

    def _on_notification(self, event: dict[str, Any]) -> list[GateEvent]:
        ntype, arg0, arg1 = event.get("type"), event.get("arg0", 0), event.get("arg1", 0)
        if ntype == EventNotification.SecureChannelStatus:
            if arg0:
                self._attempt_sc_seen = True
                self._sc_default_key = bool(arg1)
                if arg1:
                    log.warning("turnstile_secure_channel_default_key", fix="install mode only: the SCBK is sent")
            return []
        if ntype == EventNotification.PeripheralDeviceStatus:
            # Act on the change before the next queued item: after a reconnect the controller's
            # baseline input report follows right behind and needs the cycle back in service.
            events = self._supervise()
            if not arg0:
                events += self._check_secure_channel_failure()
            return events
        return []

    def _check_secure_channel_failure(self) -> list[GateEvent]:
        """The PD went offline. If it answered during this attempt but no secure channel came up,
        the keys differ (libosdp: 'Failed to verify PD cryptogram', then offline for 300 s)."""
        if not self._config.secure_channel or self._link_state == "up" or self._channel is None:
            return []
        answered = self._channel.rx_bytes > self._attempt_rx_bytes
        if not answered or self._attempt_sc_seen:
            return []
        self._sc_failed = True
        log.error(
            "turnstile_secure_channel_failed",
            url=self._config.url,
            address=self._config.address,
            fix="the SCBK credential does not match the gate controller's key; install the right key, "
            "or commission the controller with turnstile.install_mode = true",
        )
        if self._sc_failed_reported:
            return []
        self._sc_failed_reported = True
        detail = "gate controller answered but refused the secure channel: SCBK mismatch"
        return [GateEvent(kind="secure_channel_failed", detail=detail)]

    def _call_osdp(self, call: Callable[[], _T]) -> _T | None:
        """Run a libosdp call under its lock, or give up (None) after LOCK_WAIT_S."""
        if not self._osdp_lock.acquire(timeout=LOCK_WAIT_S):
            return None
        try:
            return call()
        finally:
            self._osdp_lock.release()

    def _query_link(self) -> tuple[bool, bool, bool] | None:
        """(online, secure, enabled), or None when libosdp's lock stays taken (a stuck refresh)."""
        if not self._osdp_lock.acquire(timeout=LOCK_WAIT_S):
            return None
        try:
            online = bool(self._ctx.status() & (1 << PD_INDEX))
            secure = bool(self._ctx.sc_status() & (1 << PD_INDEX))
            enabled = bool(self._ctx.is_pd_enabled(PD_INDEX))
        finally:
            self._osdp_lock.release()
        return online, secure, enabled

    def _supervise(self) -> list[GateEvent]:
        assert self._channel is not None
        now = time.monotonic()
        events: list[GateEvent] = []
        thread = self._refresh_thread
        if thread is None or not thread.is_alive():
            events += self._link_down("controller fault: OSDP refresh thread stopped")
            if now >= self._next_refresh_restart_at:
                self._next_refresh_restart_at = now + 1.0
                self.counters["refresh_restarts"] += 1
                log.error("osdp_refresh_thread_stopped", fix="restarting it; report this with the log")
                self._start_refresh_thread()
            return events
        # A refresh stuck inside libosdp holds its lock: every libosdp call from here waits at most
        # LOCK_WAIT_S, then the link is declared lost (the controller relocks on its own).
        link = None if now - self._refresh_heartbeat > REFRESH_STALL_S else self._query_link()
        if link is None:
            stalled_s = time.monotonic() - self._refresh_heartbeat
            if self._link_state == "up":
                log.error("osdp_refresh_stalled", stalled_s=round(stalled_s, 2))
            return events + self._link_down(f"controller fault: OSDP refresh stalled for {stalled_s:.1f} s")
        online, secure, enabled = link
        silent_s = now - self._channel.last_rx_at
        want_secure = self._config.secure_channel
        up = online and (secure or not want_secure) and silent_s < self._config.link_silence_s
        if up and self._link_state != "up":
            events += self._link_up()
        elif not up and self._link_state == "up":
            if not online:
                reason = "gate controller went offline"
            elif want_secure and not secure:
                reason = "secure channel dropped"
            else:
                reason = f"no reply from the gate controller for {silent_s:.1f} s"
            events += self._link_down(reason)
        if not up:
            self._reconnect_step(now, enabled)
        return events

    def _link_up(self) -> list[GateEvent]:
        restored = self._ever_up
        self._ever_up = True
        self._backoff_s = self._config.reconnect_initial_s
        self._next_attempt_at = math.inf
        self._sc_failed = False
        self._sc_failed_reported = False
        with self._state_lock:
            self._send(self._cycle.link_up().outputs)
        self._set_link_state("up", "online with secure channel" if self._config.secure_channel else "online")
        if not self._caps_checked:
            self._caps_checked = True
            self._check_capabilities()
        if restored:
            return [GateEvent(kind="link_restored", detail="gate controller back online; entry locked")]
        return []

    def _link_down(self, reason: str) -> list[GateEvent]:
        with self._state_lock:
            actions = self._cycle.link_down(reason)
        self._fail_pending()
        if self._link_state == "up":
            self.counters["links_lost"] += 1
            self._set_link_state("down", reason)
            self._next_attempt_at = time.monotonic()  # libosdp would wait 300 s: restart it now
            self._start_attempt_bookkeeping()
        return actions.events

    def _start_attempt_bookkeeping(self) -> None:
        assert self._channel is not None
        self._attempt_rx_bytes = self._channel.rx_bytes
        self._attempt_sc_seen = False

    def _reconnect_step(self, now: float, enabled: bool) -> None:
        """libosdp takes a PD offline for 300 s after any failure (docs/turnstile.md). Recovery that works:
        disable_pd, wait until it reads disabled, enable_pd; retried with exponential backoff."""
        if self._disabling:
            if not enabled and self._call_osdp(lambda: self._ctx.enable_pd(PD_INDEX)) is not None:
                self._disabling = False
                self._start_attempt_bookkeeping()
            return
        if now < self._next_attempt_at:
            return
        self.counters["reconnect_attempts"] += 1
        log.info(
            "turnstile_reconnecting",
            url=self._config.url,
            attempt=self.counters["reconnect_attempts"],
            backoff_s=round(self._backoff_s, 2),
        )
        if self._call_osdp(lambda: self._ctx.disable_pd(PD_INDEX)) is None:
            return
        self._disabling = True
        self._next_attempt_at = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2.0, self._config.reconnect_max_s)

    def _check_capabilities(self) -> None:
        """Warn when the I/O map names outputs/inputs the controller does not have: a command to a
        missing output is NAKed, and any NAK takes the PD offline (docs/turnstile.md)."""
        io = self._config.io
        caps = self._call_osdp(
            lambda: (
                self._ctx.check_capability(PD_INDEX, Capability.OutputControl)[1],
                self._ctx.check_capability(PD_INDEX, Capability.ContactStatusMonitoring)[1],
            )
        )
        if caps is None:
            return
        outputs, inputs = caps
        if max(io.outputs()) >= outputs or max(io.inputs()) >= inputs:
            log.error(
                "turnstile_io_map_exceeds_controller",
                controller_outputs=outputs,
                controller_inputs=inputs,
                mapped_outputs=io.outputs(),
                mapped_inputs=io.inputs(),
                fix="correct turnstile.io to the controller's output/input numbers (0-based)",
            )

    def _set_link_state(self, state: LinkState, reason: str) -> None:
        if state == self._link_state:
            return
        previous, self._link_state = self._link_state, state
        self._link_changed_at = time.time()
        method = log.warning if state == "down" else log.info
        method("turnstile_link_state", state=state, previous=previous, reason=reason, url=self._config.url)


def _build(config: OsdpGateConfig, read_credential: CredentialReader, on_event: GateEventCallback) -> GateController:
    scbk: bytes | None = None
    if config.secure_channel:
        try:
            scbk = parse_scbk(read_credential(config.scbk_credential))
        except (OSError, ValueError) as exc:
            raise GateSetupError(
                f"turnstile: {exc}",
                f"provide the gate controller's secure channel key (16 bytes or 32 hex digits) as credential "
                f"{config.scbk_credential!r}; `egate diag gate status` shows whether the secure channel comes up",
            ) from None
    return OsdpGateController(config, scbk, on_event)


DRIVER = GateDriver(
    config_model=OsdpGateConfig, build=_build, summary="OSDP v2 gate controller on RS-485 (secure channel)"
)
