"""Helpers the DDS tests share: a node run as its own process, stamps, and waiting for a condition.

The test side gets its own rclpy context (:func:`ros_context`) and spins its nodes on a
:class:`~sdm_controller.ros.spin_thread.SpinThread`. Every node under test runs as
``python -m sdm_controller.ros.<module> --ros-args ...`` with its output in a log file, inherits
this run's ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and private ``ROS_DOMAIN_ID`` (set by
``conftest``), uses one torch thread, and is always stopped (SIGINT, then SIGKILL) in the test's
teardown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NS = 1_000_000_000


@contextlib.contextmanager
def ros_context(domain_id: int | None = None) -> Iterator:
    """A private rclpy context for the test side, shut down when the block ends."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@contextlib.contextmanager
def spun_node(name: str, domain_id: int | None = None) -> Iterator:
    """A test-side node in a context of its own, spun on a SpinThread for the block."""
    from rclpy.node import Node

    from sdm_controller.ros.spin_thread import SpinThread

    with ros_context(domain_id) as context:
        node = Node(name, context=context)
        spinner = SpinThread(node)
        try:
            yield node
        finally:
            spinner.close()
            node.destroy_node()


def stamp_ns(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


def wait_for(predicate, timeout: float, what: str, log=None, poll_s: float = 0.02):
    """``predicate()``'s first truthy value within ``timeout`` s; else fail with the node's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\nnode log:\n{log()}" if log else ""))


class NodeProcess:
    """One node of this package as a subprocess with a log file (``env`` adds to the environment)."""

    def __init__(self, module: str, log: Path, *ros_args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
        assert full_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and full_env.get("ROS_DOMAIN_ID")
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *self._entry(module), "--ros-args", *ros_args],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @staticmethod
    def _entry(module: str) -> list[str]:
        """A node module of this package (``policy_node``) or a script that starts one (``/tmp/x.py``)."""
        return [module] if module.endswith(".py") else ["-m", f"sdm_controller.ros.{module}"]

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
