"""Log messages throttled per kind of problem, so that one noisy fault does not hide another.

rclpy throttles per call site: a single ``logger.warning(..., throttle_duration_sec=...)`` line
that reports every refused input would show the first fault of a burst and swallow a different
one that follows within the period. Here each key (``"joint_states nan"``, ``"clamps"``, …) gets
its own child logger, and with it its own throttle state.
"""

from __future__ import annotations

import threading
from typing import Any


class ThrottledLog:
    """``warning(key, message)`` / ``error(key, message)``: at most one line per key per ``period_s``."""

    def __init__(self, logger: Any, period_s: float) -> None:
        self._logger = logger
        self._period_s = period_s
        self._children: dict[str, Any] = {}
        self._lock = threading.Lock()  # nodes log from callbacks and from their own threads

    def _child(self, key: str) -> Any:
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._logger.get_child(key.replace(" ", "_"))
            return child

    def warning(self, key: str, message: str) -> bool:
        """Whether the line was logged (False: throttled)."""
        return self._child(key).warning(message, throttle_duration_sec=self._period_s)

    def error(self, key: str, message: str) -> bool:
        """Whether the line was logged (False: throttled)."""
        return self._child(key).error(message, throttle_duration_sec=self._period_s)
