"""A background thread that spins an executor and always ends when asked.

The obvious pattern, ``threading.Thread(target=executor.spin)`` and later ``executor.shutdown()``
from another thread, can leave the spin thread blocked for good: rclpy's ``shutdown`` triggers and
then destroys the executor's guard condition without waiting for a spin that is still building its
wait set (ros2/rclpy#968), and a spin that misses the wake-up waits in ``rcl_wait`` with no timeout.
There, neither ``join`` nor a test's SIGALRM can reach it, and the next rclpy call that needs the
entities it holds may wait too.

:class:`SpinThread` waits at most ``poll_s`` at a time and checks a stop flag between waits; the
executor is shut down only after the thread has ended, so nothing races.
"""

from __future__ import annotations

import threading

from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node


class SpinThread:
    """Spins ``nodes`` (all of one context) on a ``SingleThreadedExecutor`` until :meth:`close`."""

    def __init__(self, *nodes: Node, name: str = "ros-spin", poll_s: float = 0.1) -> None:
        if not nodes:
            raise ValueError("SpinThread needs at least one node")
        self.executor = SingleThreadedExecutor(context=nodes[0].context)
        for node in nodes:
            self.executor.add_node(node)
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=self.poll_s)
            except (ExternalShutdownException, ShutdownException):
                return  # the context was shut down under us: nothing left to spin

    def close(self, timeout: float = 5.0) -> bool:
        """Stop spinning (at most ``poll_s`` plus the running callback), then shut the executor down.

        False when the thread is still in a callback after ``timeout``; the executor is then left
        as it is (shutting it down under that callback is the race this class avoids)."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self.executor.shutdown(timeout_sec=1.0)
        return True
