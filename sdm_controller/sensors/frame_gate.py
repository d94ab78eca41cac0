"""Which frames of a stream to publish, judged by frame number and device timestamp.

The RealSense SDK can hand out the same frame twice (a frameset whose other stream moved on re-uses
the last frame of this one; librealsense#1686) and can return queued frames older than one already
seen (librealsense#7837). Publishing those would give the policy the same picture under a new
stamp. :class:`FrameGate` keeps one stream's newest frame number and timestamp and classifies each
frame:

* ``new`` — a higher frame number: publish (a jump of more than one counts the skipped ones as lost);
* ``repeat`` — the same frame number as the newest: drop;
* ``stale`` — a lower frame number with a timestamp not after the newest: drop (an old, queued frame);
* ``restart`` — a lower frame number with a newer timestamp, or the ``restart_after``-th stale
  frame in a row (a device whose clock restarted with its numbering): the numbering started again;
  publish and carry on from there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from sdm_controller.common.stats import RateMeter

NEW = "new"
REPEAT = "repeat"
STALE = "stale"
RESTART = "restart"
PUBLISHED = (NEW, RESTART)


@dataclass
class GateCounts:
    """What a stream's gate has seen so far."""

    published: int = 0
    repeats: int = 0  # dropped: same frame number as the newest
    stale: int = 0  # dropped: older frame number and timestamp
    restarts: int = 0  # numbering went back with a newer timestamp (published)
    lost: int = 0  # frame numbers skipped between published frames
    last_number: int | None = None


class FrameGate:
    """One stream's frame-number gate plus its publish rate (thread-safe)."""

    def __init__(self, rate_window_s: float = 5.0, restart_after: int = 15) -> None:
        self._lock = threading.Lock()
        self._counts = GateCounts()
        self.restart_after = restart_after
        self._stale_run = 0
        self._last_timestamp = 0.0
        self._last_receive_ns: int | None = None
        self.rate = RateMeter(rate_window_s)

    def offer(self, number: int, timestamp_ms: float, receive_ns: int) -> str:
        """Classify a frame (``NEW``, ``REPEAT``, ``STALE`` or ``RESTART``) and count it."""
        with self._lock:
            c = self._counts
            if c.last_number is None or number > c.last_number:
                verdict = NEW
                c.lost += 0 if c.last_number is None else number - c.last_number - 1
            elif number == c.last_number:
                verdict = REPEAT
                c.repeats += 1
            elif timestamp_ms > self._last_timestamp or self._stale_run + 1 >= self.restart_after:
                verdict = RESTART
                c.restarts += 1
            else:
                verdict = STALE
                c.stale += 1
            self._stale_run = self._stale_run + 1 if verdict == STALE else 0
            if verdict in PUBLISHED:
                c.published += 1
                c.last_number = number
                self._last_timestamp = timestamp_ms
                self._last_receive_ns = receive_ns
        if verdict in PUBLISHED:
            self.rate.add(receive_ns)
        return verdict

    @property
    def counts(self) -> GateCounts:
        with self._lock:
            return replace(self._counts)

    def age_s(self, now_ns: int) -> float | None:
        """Seconds since the newest published frame arrived (None before the first)."""
        with self._lock:
            return None if self._last_receive_ns is None else (now_ns - self._last_receive_ns) / 1e9
