"""Capture time of a frame on the host clock, from its device timestamp.

A RealSense frame carries ``get_timestamp()`` (milliseconds) in one of three domains:

* ``global_time`` — the SDK maps the camera's hardware clock onto the host clock (enabled with
  ``rs.option.global_time_enabled``); ``system_time`` — the host clock at arrival (when the
  camera sends no hardware timestamp). Both are host wall-clock milliseconds: the stamp is the
  timestamp itself (``HOST`` mode), capped at the arrival time so that no stamp lies in the future;
* ``hardware_clock`` — the camera's own clock with an arbitrary origin, and any timestamp read
  from a recording (its host times are from the day it was recorded): ``ANCHORED`` mode keeps
  the device's spacing between frames and places it on the host clock with the smallest
  ``arrival − device time`` seen over the last ``window_s`` seconds. The smallest difference
  belongs to the frame that waited least between capture and arrival, so a frame delayed in
  transport is still stamped when it was captured (as closely as the fastest delivery tells),
  and no stamp is later than its frame's arrival. The window lets the offset follow a slow
  drift of the camera clock against the host's. The first frame anchors the offset, so the
  first stamps may lie a little late until a faster delivery lowers it. A frame whose offset is
  more than ``jump_s`` above the one in use means the device clock jumped back (a camera reset, a
  recording that starts over): the clock anchors afresh on that frame.
"""

from __future__ import annotations

import math
import threading
from collections import deque

HOST = "host"
ANCHORED = "anchored"
HOST_DOMAINS = ("global_time", "system_time")
NS_PER_MS = 1_000_000


def stamp_mode(domain: str, playback: bool) -> str:
    """``HOST`` for host-clock domains of a live camera, ``ANCHORED`` otherwise."""
    return HOST if domain in HOST_DOMAINS and not playback else ANCHORED


def ms_to_ns(ms: float) -> int:
    """Whole and fractional milliseconds apart: ``ms * 1e6`` as a float would lose the nanoseconds."""
    whole = math.floor(ms)
    return whole * NS_PER_MS + round((ms - whole) * NS_PER_MS)


class CaptureClock:
    """Maps (device timestamp in ms, arrival time in ns) → capture time in ns (thread-safe).

    One clock serves all streams of a device, so frames captured together get the same offset.
    """

    def __init__(self, playback: bool = False, window_s: float = 30.0, jump_s: float = 1.0) -> None:
        self.playback = playback
        self.window_ns = int(window_s * 1e9)
        self.jump_ns = int(jump_s * 1e9)
        self._offsets: deque[tuple[int, int]] = deque()  # (arrival ns, offset ns), offsets increasing
        self._lock = threading.Lock()
        self.last_mode: str | None = None

    def capture_ns(self, timestamp_ms: float, domain: str, receive_ns: int) -> int:
        device_ns = ms_to_ns(timestamp_ms)
        mode = stamp_mode(domain, self.playback)
        self.last_mode = mode
        if mode == HOST:
            return min(device_ns, receive_ns)
        with self._lock:
            return device_ns + self._update_offset(receive_ns, receive_ns - device_ns)

    def _update_offset(self, receive_ns: int, offset_ns: int) -> int:
        """Sliding-window minimum of the offsets (a monotonic deque: O(1) amortised)."""
        offsets = self._offsets
        if offsets and offset_ns - offsets[0][1] > self.jump_ns:
            offsets.clear()
        while offsets and offsets[-1][1] >= offset_ns:
            offsets.pop()
        offsets.append((receive_ns, offset_ns))
        while offsets[0][0] < receive_ns - self.window_ns:
            offsets.popleft()
        return offsets[0][1]

    @property
    def offset_ns(self) -> int | None:
        """The offset in use (anchored mode), None before the first anchored frame."""
        with self._lock:
            return self._offsets[0][1] if self._offsets else None
