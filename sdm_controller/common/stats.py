"""Small rolling statistics for the diagnostics: event rates and latency percentiles."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class RateMeter:
    """Events per second over the last ``window_s`` seconds (times in integer nanoseconds)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()
        self.count = 0
        self._lock = threading.Lock()

    def add(self, t_ns: int) -> None:
        with self._lock:
            self._times.append(int(t_ns))
            self.count += 1
            self._trim(int(t_ns))

    def _trim(self, now_ns: int) -> None:
        while self._times and self._times[0] < now_ns - self.window_ns:
            self._times.popleft()

    def rate(self, now_ns: int) -> float:
        with self._lock:
            self._trim(int(now_ns))
            if len(self._times) < 2:
                return 0.0
            span = max(now_ns - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / (span / 1e9) if span > 0 else 0.0


class LatencyWindow:
    """The last ``size`` latencies (ms) and their percentiles."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(float(ms))

    def percentiles(self, *qs: float) -> list[float]:
        with self._lock:
            if not self._values:
                return [float("nan")] * len(qs)
            return [float(v) for v in np.percentile(np.fromiter(self._values, float), qs)]


class Tally:
    """Thread-safe counts by key (refused inputs per stream and reason, cycle outcomes)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))

    def __getitem__(self, key: str) -> int:
        with self._lock:
            return self._counts[key]
