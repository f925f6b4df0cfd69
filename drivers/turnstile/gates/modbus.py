"""A gate driven through dry contacts by a Modbus RTU I/O module on RS-485 (pymodbus client).

Many turnstiles and swing doors have no protocol of their own: relay inputs release the entry and
the egress, contacts report the passage sensors, the door position, the tailgate detector and the
building's emergency loop. A Modbus RTU I/O module (Modbus Application Protocol v1.1b3) bridges
them: egate writes coils (function 05) for the outputs and polls discrete inputs (function 02).
The same `TurnstileIoMap` numbers the OSDP driver uses are the coil and input addresses here, and
the same pure `DoorCycle` decides every transition, so both drivers obey one safety logic.

Safety, as for every `GateController`:
- the entry is released only by `open_for_passage`, once per decision id, and relocked at the end of
  the passage, at its timeout, on `lock()` and on `close()`;
- a lost link is declared after `link_loss_polls` failed polls in a row: the gate goes to its safe
  state in software, and the module's own communication watchdog (when `watchdog_register` is set,
  written at every link-up) drops the outputs to their power-on state (entry locked, egress free on
  a normally-closed egress relay) when egate stops polling, whatever happened to egate;
- the emergency input is only reported and echoed (everything released); requests are refused
  while it is active, and software never writes a lock against it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import structlog
from pydantic import ConfigDict, Field

from egate.drivers.turnstile.base import (
    GateController,
    GateEvent,
    GateEventCallback,
    GateStatus,
    GuidanceKind,
    LinkState,
)
from egate.drivers.turnstile.config import MAX_PASSAGE_TIMEOUT_S, GateDriverConfig, TurnstileIoMap
from egate.drivers.turnstile.cycle import (
    OUT_PERMANENT_OFF,
    DoorCycle,
    OutputOrder,
    check_open_request,
    guidance_outputs,
)
from egate.drivers.turnstile.registry import CredentialReader, GateDriver

log = structlog.get_logger(__name__)


class ModbusGateConfig(GateDriverConfig):
    """`[turnstile]` with `type = "modbus"`: the RS-485 line to the I/O module and its I/O map."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["modbus"] = Field("modbus", description="Gate driver: a Modbus RTU I/O module.")
    url: str = Field("/dev/ttyUSB0", min_length=1, description="Serial port of the RS-485 adapter.")
    baud: Literal[9600, 19200, 38400, 57600, 115200] = Field(19200, description="Line speed of the module.")
    parity: Literal["N", "E", "O"] = Field(
        "E", description="Parity; Modbus over serial line v1.02 section 2.5.1 makes even parity the default."
    )
    stop_bits: Literal[1, 2] = Field(1, description="Stop bits (2 when parity is N, per the same section).")
    device_id: int = Field(1, ge=1, le=247, description="Modbus address of the I/O module (1-247).")
    io: TurnstileIoMap = Field(default_factory=TurnstileIoMap, description="Coil and discrete input addresses.")
    passage_timeout_s: float = Field(
        8.0, gt=0.0, le=MAX_PASSAGE_TIMEOUT_S, description="Time a released gate waits for the traveller."
    )
    poll_interval_s: float = Field(0.05, ge=0.01, le=1.0, description="Pause between two polls of the inputs.")
    response_timeout_s: float = Field(0.25, ge=0.02, le=5.0, description="How long one request waits for its answer.")
    link_loss_polls: int = Field(
        4, ge=1, le=100, description="Failed requests in a row after which the link is lost (gate to its safe state)."
    )
    watchdog_register: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Holding register of the module's communication watchdog (milliseconds; vendor-specific), "
        "written at every link-up; none if the module has none.",
    )
    watchdog_ms: int = Field(
        1000, ge=100, le=60000, description="Silence after which the module drops its outputs to power-on state."
    )


class ModbusGateController(GateController):
    """One poll thread owns the line; requests from other threads take the same lock for their writes."""

    def __init__(self, config: ModbusGateConfig, on_event: GateEventCallback, *, client: Any = None) -> None:
        self._config = config
        self._on_event = on_event
        self._cycle = DoorCycle(config.io)
        self._lock = threading.RLock()  # the line, the client and the cycle
        self._stop = threading.Event()
        self._client = client
        self._thread: threading.Thread | None = None
        self._link_state: LinkState = "stopped"
        self._link_changed_at = time.time()
        self._failures = 0
        self._closed = False
        self._n_inputs = max(config.io.inputs()) + 1
        self.counters: dict[str, int] = {"polls": 0, "poll_errors": 0, "links_lost": 0, "writes": 0, "write_errors": 0}

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None or self._closed:
            raise RuntimeError("modbus gate already started (or closed): create a new one")
        if self._client is None:
            from pymodbus.client import ModbusSerialClient

            c = self._config
            self._client = ModbusSerialClient(
                c.url,
                baudrate=c.baud,
                parity=c.parity,
                stopbits=c.stop_bits,
                timeout=c.response_timeout_s,
                retries=0,  # the poll loop counts failures itself; a retry storm would hide a dead line
                reconnect_delay=0,
            )
        self._set_link_state("connecting", "starting")
        self._thread = threading.Thread(target=self._poll_loop, name="modbus-gate", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            if self._link_state == "up":
                self._write(self._cycle.safe_outputs())
            if self._client is not None:
                self._client.close()
            self._set_link_state("closed", "closed")

    # --------------------------------------------------------------- requests
    def open_for_passage(self, decision_id: str, timeout_s: float) -> bool:
        check_open_request(decision_id, timeout_s)
        with self._lock:
            if self._closed:
                return self._refused("open", "closed", decision_id)
            answer = self._cycle.request_open(decision_id, timeout_s, time.monotonic())
            if answer.reason == "decision_already_used":
                log.warning("gate_open_repeated", decision_id=decision_id, first_answer=answer.accepted)
                return answer.accepted
            if not answer.accepted:
                return self._refused("open", answer.reason, decision_id)
            if self._write(answer.actions.outputs):
                log.debug("gate_opened", decision_id=decision_id, timeout_s=timeout_s)
                return True
            self._write(self._cycle.open_failed(decision_id).outputs)
        log.error("gate_open_not_acknowledged", decision_id=decision_id, link_state=self._link_state)
        return False

    def lock(self) -> bool:
        with self._lock:
            if self._closed:
                return self._refused("lock", "closed", None)
            ok, reason, actions = self._cycle.request_lock()
            if not ok:
                return self._refused("lock", reason, None)
            return self._write(actions.outputs)

    def emergency_release(self) -> bool:
        with self._lock:
            if self._closed:
                return self._refused("emergency_release", "closed", None)
            ok, reason, actions = self._cycle.request_emergency_release(time.monotonic())
            if not ok:
                return self._refused("emergency_release", reason, None)
            log.warning("gate_emergency_release_ordered")
            return self._write(actions.outputs)

    def set_guidance(self, kind: GuidanceKind) -> bool:
        with self._lock:
            if self._closed or self._link_state != "up":
                return self._refused("guidance", "link_down", None)
            return all([self._write_coil(number, on) for number, on in guidance_outputs(self._config.io, kind)])

    @property
    def link_state(self) -> LinkState:
        return self._link_state

    def status(self) -> GateStatus:
        with self._lock:
            inputs = dict(self._cycle.inputs) if self._cycle.inputs is not None else None
            return GateStatus(
                driver="modbus",
                endpoint=f"{self._config.url} device {self._config.device_id}",
                link_state=self._link_state,
                link_changed_at=self._link_changed_at,
                link_security="none",
                gate_state=self._cycle.state,
                emergency=self._cycle.emergency_active,
                pending_decision=self._cycle.decision_id,
                inputs=None if inputs is None else {role: inputs[n] for role, n in self._config.io.input_roles()},
                counters=dict(self.counters),
            )

    # ------------------------------------------------------------- internals
    def _refused(self, op: str, reason: str, decision_id: str | None) -> bool:
        log.warning("gate_command_refused", op=op, reason=reason, decision_id=decision_id)
        return False

    def _write_coil(self, address: int, on: bool) -> bool:
        """One coil write (function 05); a failure counts towards link loss."""
        self.counters["writes"] += 1
        try:
            reply = self._client.write_coil(address, on, device_id=self._config.device_id)
            ok = not reply.isError()
        except Exception as exc:  # pymodbus raises ModbusException subclasses and OSError on a dead port
            log.warning("modbus_write_failed", address=address, error=str(exc))
            ok = False
        if not ok:
            self.counters["write_errors"] += 1
            self._failures += 1
        return ok

    def _write(self, orders: list[OutputOrder]) -> bool:
        """Apply the cycle's orders in order; every write must be acknowledged. A timed release
        (OSDP's temporary-on) is a plain 'on' here: the poll loop's deadline and the module's
        watchdog take the role of the controller's timer."""
        ok = True
        for order in orders:
            ok = self._write_coil(order.output_no, order.control_code != OUT_PERMANENT_OFF) and ok
        return ok

    def _poll_once(self) -> list[GateEvent]:
        """Read the inputs and feed the cycle; handles link loss and return. Holds the lock."""
        now = time.monotonic()
        self.counters["polls"] += 1
        try:
            reply = self._client.read_discrete_inputs(0, count=self._n_inputs, device_id=self._config.device_id)
            report = None if reply.isError() else bytes(int(bit) for bit in reply.bits[: self._n_inputs])
        except Exception as exc:
            log.debug("modbus_poll_failed", error=str(exc))
            report = None
        events: list[GateEvent] = []
        if report is None:
            self.counters["poll_errors"] += 1
            self._failures += 1
            if self._failures >= self._config.link_loss_polls and self._link_state != "down":
                self.counters["links_lost"] += 1
                self._set_link_state("down", f"{self._failures} requests unanswered")
                events += self._cycle.link_down(f"I/O module silent for {self._failures} requests").events
            return events
        self._failures = 0
        if self._link_state != "up":
            if not (self._arm_watchdog() and self._write(self._cycle.link_up().outputs)):
                return events
            self._set_link_state("up", "I/O module answering")
            events.append(GateEvent(kind="link_restored", detail="I/O module answering; entry locked"))
        actions = self._cycle.on_inputs(report, now)
        tick = self._cycle.on_tick(now)
        self._write(actions.outputs + tick.outputs)
        return events + actions.events + tick.events

    def _arm_watchdog(self) -> bool:
        """Write the module's communication timeout (function 06) so it relocks without us."""
        register = self._config.watchdog_register
        if register is None:
            return True
        try:
            ok = not self._client.write_register(
                register, self._config.watchdog_ms, device_id=self._config.device_id
            ).isError()
        except Exception as exc:
            log.warning("modbus_watchdog_write_failed", register=register, error=str(exc))
            ok = False
        if not ok:
            self._failures += 1
        return ok

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._closed:
                    return
                events = self._poll_once()
            for event in events:
                try:
                    self._on_event(event)
                except Exception as exc:  # a broken consumer must not stop the gate's supervision
                    log.error("gate_event_callback_failed", kind=event.kind, error=str(exc))
            self._stop.wait(self._config.poll_interval_s)

    def _set_link_state(self, state: LinkState, reason: str) -> None:
        if state != self._link_state:
            log.info("gate_link_state", protocol="modbus", state=state, reason=reason)
            self._link_state = state
            self._link_changed_at = time.time()


def _build(config: ModbusGateConfig, read_credential: CredentialReader, on_event: GateEventCallback) -> GateController:
    return ModbusGateController(config, on_event)  # dry contacts: no key to read


DRIVER = GateDriver(
    config_model=ModbusGateConfig, build=_build, summary="dry contacts through a Modbus RTU I/O module on RS-485"
)
