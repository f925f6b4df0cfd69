"""A turnstile wired to a Modbus RTU I/O module, simulated with pymodbus's own serial server.

The module answers on one end of a PTY pair (socat links two PTYs, as a USB RS-485 adapter and the
module's line would be); egate's `ModbusGateController` opens the other end. What the simulator adds
to a plain register map is the hardware around the module:
- the relays: coil `entry_release_output` frees the entry, coil `exit_release_output` the egress;
- the building's emergency loop frees both in hardware, whatever the coils say;
- the module's communication watchdog: when egate wrote a timeout (milliseconds) into
  `watchdog_register` and then stays silent that long, the outputs fall to their power-on state
  (entry locked, egress free, lamps off), as industrial I/O modules do on a lost master;
- the passage sensors, door and tailgate contacts, set by the test or by `walk_through`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from egate.drivers.turnstile.config import TurnstileIoMap

_BITS_PER_REGISTER = 16


def _bits(registers: list[int], count: int) -> list[bool]:
    """Coil/input bits as pymodbus's simulator stores them: LSB first within each 16-bit register."""
    return [bool(registers[i // _BITS_PER_REGISTER] >> (i % _BITS_PER_REGISTER) & 1) for i in range(count)]


class ModbusGateSimulator:
    def __init__(
        self,
        *,
        io: TurnstileIoMap | None = None,
        device_id: int = 1,
        baud: int = 19200,
        parity: str = "E",
        stop_bits: int = 1,
        watchdog_register: int | None = 0,
    ) -> None:
        self.io = io or TurnstileIoMap()
        self.device_id = device_id
        self.baud, self.parity, self.stop_bits = baud, parity, stop_bits
        self.watchdog_register = watchdog_register
        self.n_coils = max(self.io.outputs()) + 1
        self.n_inputs = max(self.io.inputs()) + 1
        self._dir = Path(tempfile.mkdtemp(prefix="egate-modbus-"))
        self._module_end = self._dir / "module"
        self._gate_end = self._dir / "gate"
        self._cond = threading.Condition()
        self._coils = [False] * self.n_coils
        self._coils[self.io.exit_release_output] = True  # power-on state of the relay board
        self._inputs = [False] * self.n_inputs
        self._watchdog_ms = 0
        self._coil_registers: list[int] | None = None  # pymodbus's own coil block, once seen
        self._last_request = time.monotonic()
        self.requests = 0
        self.watchdog_trips = 0
        self.coil_writes: list[tuple[int, bool]] = []
        self._socat: subprocess.Popen[bytes] | None = None
        self._server_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._stop = threading.Event()
        self._watchdog_thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    @property
    def path(self) -> str:
        """The end egate opens."""
        return str(self._gate_end)

    def start(self) -> None:
        self.plug()
        self._watchdog_thread = threading.Thread(target=self._watchdog_loop, name="modbus-sim-watchdog", daemon=True)
        self._watchdog_thread.start()

    def close(self) -> None:
        self._stop.set()
        self.unplug()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join(timeout=2.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ModbusGateSimulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def plug(self) -> None:
        """Connect the line: a PTY pair and the module's server on its end."""
        if self._socat is not None:
            return
        for end in (self._module_end, self._gate_end):
            end.unlink(missing_ok=True)
        self._socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self._module_end}", f"pty,raw,echo=0,link={self._gate_end}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while not (self._module_end.exists() and self._gate_end.exists()):
            if time.monotonic() > deadline or self._socat.poll() is not None:
                raise RuntimeError("socat did not create the PTY pair: is socat installed?")
            time.sleep(0.01)  # socat creates the links within milliseconds
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                self._serve(started)
            except BaseException as exc:  # surfaced below: a missing pymodbus must say so, not time out
                failure.append(exc)
                started.set()

        self._server_thread = threading.Thread(target=serve, name="modbus-sim", daemon=True)
        self._server_thread.start()
        if not started.wait(10.0) or failure:
            self.unplug()
            raise RuntimeError(f"the Modbus server did not start: {failure[0] if failure else 'no answer in 10 s'}")

    def unplug(self) -> None:
        """Cut the line: the module stops answering and egate's port goes dead."""
        if self._loop is not None and self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(timeout=5.0)
        if self._server_thread is not None:
            self._server_thread.join(timeout=5.0)
        self._server_thread = self._loop = self._server = None
        if self._socat is not None:
            self._socat.terminate()
            self._socat.wait(timeout=5.0)
            self._socat = None

    # ----------------------------------------------------------- the module
    def _serve(self, started: threading.Event) -> None:
        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        registers = max(1, -(-max(self.n_coils, self.n_inputs) // _BITS_PER_REGISTER))
        holding = (self.watchdog_register or 0) + 1
        device = SimDevice(
            self.device_id,
            simdata=(
                [SimData(0, count=registers * _BITS_PER_REGISTER, values=False, datatype=DataType.BITS)],
                [SimData(0, count=registers * _BITS_PER_REGISTER, values=False, datatype=DataType.BITS)],
                [SimData(0, count=holding, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_request,
        )

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = ModbusSerialServer(
                device,
                framer=FramerType.RTU,
                port=str(self._module_end),
                baudrate=self.baud,
                parity=self.parity,
                stopbits=self.stop_bits,
            )
            started.set()
            await self._server.serve_forever()

        asyncio.run(main())

    async def _on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> None:
        """Called by pymodbus before (values set) and after (values None) each access of a block."""
        del start_address
        with self._cond:
            self._last_request = time.monotonic()
            self.requests += 1
            if function_code == 2:  # read discrete inputs: present the contacts as they are now
                bits = self._inputs + [False] * (len(registers) * _BITS_PER_REGISTER - self.n_inputs)
                for r in range(len(registers)):
                    registers[r] = sum(1 << i for i in range(_BITS_PER_REGISTER) if bits[r * _BITS_PER_REGISTER + i])
            elif function_code in (1, 5, 15):
                if values is not None:  # a write: keep the coils pymodbus will store
                    for offset, value in enumerate(values):
                        self.coil_writes.append((address + offset, bool(value)))
                else:  # after the access: the register block is the truth; mirror it for the hardware model
                    self._coil_registers = registers
                    self._coils = _bits(registers, self.n_coils)
            elif function_code == 6 and values is not None and address == self.watchdog_register:
                self._watchdog_ms = int(values[0])
            self._cond.notify_all()
        return None

    def _watchdog_loop(self) -> None:
        while not self._stop.wait(0.02):
            with self._cond:
                silent_ms = (time.monotonic() - self._last_request) * 1000.0
                if self._watchdog_ms and silent_ms > self._watchdog_ms and self._coils != self._power_on_coils():
                    self._coils = self._power_on_coils()
                    if self._coil_registers is not None:  # what the module reports once it answers again
                        for r in range(len(self._coil_registers)):
                            self._coil_registers[r] = sum(
                                1 << i
                                for i in range(_BITS_PER_REGISTER)
                                if r * _BITS_PER_REGISTER + i < self.n_coils and self._coils[r * _BITS_PER_REGISTER + i]
                            )
                    self.watchdog_trips += 1
                    self._cond.notify_all()

    def _power_on_coils(self) -> list[bool]:
        coils = [False] * self.n_coils
        coils[self.io.exit_release_output] = True
        return coils

    # ------------------------------------------------------------- hardware
    def coil(self, number: int) -> bool:
        with self._cond:
            return self._coils[number]

    def entry_free(self) -> bool:
        """The entry leaf is free: its relay is on, or the emergency loop released it."""
        with self._cond:
            return self._coils[self.io.entry_release_output] or self._emergency_active()

    def egress_free(self) -> bool:
        with self._cond:
            return self._coils[self.io.exit_release_output] or self._emergency_active()

    def _emergency_active(self) -> bool:
        raw = self._inputs[self.io.emergency_input]
        return raw != (self.io.emergency_input in self.io.inverted_inputs)

    def set_input(self, number: int, active: bool) -> None:
        """Set a contact as the gate's wiring reports it (inversion of NC contacts applied here)."""
        with self._cond:
            self._inputs[number] = active != (number in self.io.inverted_inputs)
            self._cond.notify_all()

    def set_emergency(self, on: bool) -> None:
        self.set_input(self.io.emergency_input, on)

    def walk_through(self) -> None:
        """A traveller crosses: each passage sensor becomes active in walking order, then all clear.
        Each step waits until the module has been polled, so egate sees every step."""
        for sensor in self.io.passage_sensor_inputs:
            self.set_input(sensor, True)
            self.wait_polls(2)
        for sensor in self.io.passage_sensor_inputs:
            self.set_input(sensor, False)
        self.wait_polls(2)

    def wait_polls(self, n: int, timeout: float = 10.0) -> None:
        """Return once the master has made `n` more requests."""
        with self._cond:
            target = self.requests + n
            if not self._cond.wait_for(lambda: self.requests >= target, timeout):
                raise TimeoutError(f"the master made no {n} requests within {timeout} s")

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


def socat_available() -> bool:
    return shutil.which("socat") is not None and os.name == "posix"
