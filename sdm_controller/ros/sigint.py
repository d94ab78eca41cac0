"""Ctrl-C for nodes whose callbacks run on the main thread: let rclpy stop the spin, raise nothing.

Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT arrives. With a
``SingleThreadedExecutor`` that can be inside rclpy's message conversion, where pybind11 turns
the interrupt into a ``RuntimeError``: the node then exits 1 with a traceback instead of shutting
down in order. rclpy's own SIGINT handler (installed by ``rclpy.init``) already shuts the context
down, and ``spin`` then raises ``ExternalShutdownException`` at a safe point. Ignoring SIGINT at
the Python level before ``rclpy.init`` leaves only that path; it also keeps a second Ctrl-C (a
launcher forwards one to its process group) from interrupting the shutdown halfway.
"""

from __future__ import annotations

import contextlib
import signal


def ignore_sigint() -> None:
    """SIGINT no longer raises ``KeyboardInterrupt`` (call before ``rclpy.init``, and again after
    ``rclpy.try_shutdown``, which puts back the handler it found)."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
