"""An rclpy executor with worker threads whose spin loop sleeps while a callback waits for a worker.

rclpy's ``MultiThreadedExecutor`` hands each ready callback to a thread pool, and until a worker
has *started* it, every pass of the spin loop (each new message or finished callback wakes one)
finds the same callback "not executing, not done" and hands it over again. Starting needs a
worker to be scheduled and to take the GIL, so with a few hundred messages a second the spin
thread keeps the GIL busy re-dispatching, and the workers it waits for fall behind: in
``tests/test_executors.py`` (three 200 Hz topics, 4 workers) it took twice the CPU of this
executor and lost about half of the messages.

:class:`WorkerThreadsExecutor` makes the same hand-over and then blocks until a worker has picked
the callback up. Callbacks still run in parallel across callback groups (what a node needs when a
service waits for data that other callbacks deliver); the spin thread just stops spinning.
Exceptions raised by callbacks surface from ``spin``, as with ``MultiThreadedExecutor``.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rclpy.executors import (
    ConditionReachedException,
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)


class WorkerThreadsExecutor(Executor):
    """Runs callbacks on ``num_threads`` worker threads; the spin thread waits, never polls."""

    def __init__(self, num_threads: int, *, context: Any = None) -> None:
        super().__init__(context=context)  # first: rclpy's __del__ needs what it sets up
        if num_threads < 2:
            raise ValueError("WorkerThreadsExecutor needs at least 2 threads; use SingleThreadedExecutor")
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="ros-callbacks")
        self._running: list[Future] = []

    def _spin_once_impl(self, timeout_sec: float | None = None, wait_condition=lambda: False) -> None:
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        started = threading.Event()

        def run() -> None:
            started.set()
            handler()
            handler.result()  # re-raises the callback's exception into this future

        self._running.append(self._pool.submit(run))
        # Every worker may be busy with a long callback: then nothing else could start anyway.
        started.wait()
        for future in [f for f in self._running if f.done()]:
            self._running.remove(future)
            future.result()

    def spin_once(self, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec)

    def spin_once_until_future_complete(self, future, timeout_sec: float | None = None) -> None:
        future.add_done_callback(lambda _: self.wake())
        self._spin_once_impl(timeout_sec, future.done)

    def _spin_once_until_future_complete(self, future, timeout_sec: float | None = None) -> None:
        self._spin_once_impl(timeout_sec, future.done)

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        done = super().shutdown(timeout_sec)
        self._pool.shutdown(wait=True)
        return done
