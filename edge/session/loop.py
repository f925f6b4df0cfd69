"""`LaneLoop`: the one thread that runs a `SessionController`, fed by a queue."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import structlog

from egate.edge.session.events import Event, FaceObserved, Tick
from egate.edge.session.machine import SessionController

log = structlog.get_logger(__name__)


class LaneLoop:
    """Runs one `SessionController` on its own thread: `post()` from any thread, `Tick` every `tick_s`.

    The controller stays single-threaded (only this thread calls `handle`), which is what keeps the
    state machine simple; producers (camera/engine worker, reader, turnstile, link) only enqueue.
    """

    def __init__(
        self,
        controller: SessionController,
        *,
        tick_s: float = 0.05,
        max_queue: int = 256,
        on_handled: Callable[[], None] | None = None,
    ) -> None:
        """`on_handled` runs on the loop's thread after every handled event and tick, when the controller's
        status is that event's (the traveller's screen publishes from there)."""
        if tick_s <= 0:
            raise ValueError(f"LaneLoop tick_s must be > 0 (got {tick_s}); 0.05 s suits a lane")
        self._controller = controller
        self._tick_s = tick_s
        # Bounded: face observations arrive at camera rate; if the loop falls behind, the oldest
        # observations are shed by post() rather than memory growing (see post()).
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._handled = threading.Condition()
        self._handled_count = 0
        self._dropped = 0
        self._on_handled = on_handled

    @property
    def controller(self) -> SessionController:
        return self._controller

    @property
    def dropped_observations(self) -> int:
        return self._dropped

    @property
    def handled(self) -> int:
        """Events handled so far (ticks excluded): with `wait_handled`, lets a caller wait for the next one."""
        with self._handled:
            return self._handled_count

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lane-session", daemon=True)
        self._thread.start()

    def post(self, event: Event) -> None:
        """Enqueue an event. When the queue is full a FaceObserved is dropped (the next frame replaces
        it); every other event waits for room, because losing a gate or health event is not safe."""
        if isinstance(event, FaceObserved):
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self._dropped += 1
            return
        self._queue.put(event)

    def wait_handled(self, count: int, timeout: float) -> bool:
        """Block until at least `count` posted events were handled in total (tests, orderly shutdown)."""
        with self._handled:
            return self._handled.wait_for(lambda: self._handled_count >= count, timeout=timeout)

    def close(self, timeout: float = 2.0) -> None:
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error("lane_loop_close_queue_full", timeout_s=timeout)
        thread.join(timeout)
        if thread.is_alive():
            log.error("lane_loop_thread_stuck_on_close", timeout_s=timeout)
        self._thread = None

    def __enter__(self) -> LaneLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_s
        while True:
            try:
                event = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                event = Tick()
            if event is None:
                return
            try:
                self._controller.handle(event)
            except Exception:  # one bad event must not stop the lane; the gate is already safe-locked
                log.exception("lane_event_failed", event_type=type(event).__name__)
            self._after_handled()
            if isinstance(event, Tick):
                next_tick = time.monotonic() + self._tick_s
            else:
                with self._handled:
                    self._handled_count += 1
                    self._handled.notify_all()
                if time.monotonic() >= next_tick:
                    self._tick()
                    next_tick = time.monotonic() + self._tick_s

    def _tick(self) -> None:
        try:
            self._controller.handle(Tick())
        except Exception:
            log.exception("lane_tick_failed")
        self._after_handled()

    def _after_handled(self) -> None:
        if self._on_handled is None:
            return
        try:
            self._on_handled()
        except Exception:  # an observer (the screen) must never stop the lane
            log.exception("lane_on_handled_failed")
