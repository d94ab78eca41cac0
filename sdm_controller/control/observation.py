"""Observation history per stream, aligned by header stamps, not by arrival order.

Streams are the policy's inputs: one per low-dim key (filled from ``joint_states``) and one per
camera. Samples carry their header stamp in integer nanoseconds (float seconds would lose the
exact stamp, and the node must echo it in the chunk it publishes).

Sampling a window (``n_obs_steps`` frames, oldest first, as the policy was trained):

* the reference time is the *oldest* of the streams' newest stamps: the latest instant at which
  every stream has data, so no stream is extrapolated. It is also the stamp of the newest sample
  used (the stream that defines it contributes its newest sample), i.e. the chunk's stamp;
* frame k (k = 0 newest) of each stream is that stream's latest sample with stamp <=
  ``reference - k * control_period``;
* the window is stale when the reference is older than ``timeout`` on the node's clock (a silent
  camera therefore stops inference however fast the other streams are), or when a frame's sample
  lies more than ``timeout`` before the time it stands for.

Samples are refused (``RejectedInput``) when their stamp is further than ``future_tolerance`` ahead
of the node's clock, older than ``timeout``, or not newer than the stream's newest sample (a
duplicate or a clock going backwards). Samples the node's clock has fallen behind by more than
the tolerance are dropped first, so a restarted simulation clock recovers by itself.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from sdm_controller.common.rejected import STAMP_FUTURE, STAMP_NOT_INCREASING, STAMP_STALE, RejectedInput
from sdm_controller.errors import SdmError

WAITING = "waiting"  # a stream has no (or too little) data yet
STALE = "stale"  # data stopped arriving or is too old


class NotReady(SdmError):
    """No window can be built now; ``reason`` is WAITING or STALE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class ObservationWindow:
    """One input window: ``arrays[stream]`` is (n_obs_steps, ...) oldest first."""

    stamp_ns: int  # reference time = stamp of the newest sample used
    arrays: dict[str, np.ndarray]
    sample_stamps: dict[str, tuple[int, ...]]  # stamps of the samples used, oldest first


class _Stream:
    __slots__ = ("stamps", "values")

    def __init__(self) -> None:
        self.stamps: list[int] = []
        self.values: list[np.ndarray] = []


class ObservationBuffer:
    """Thread-safe history of every stream (sensor callbacks add, the inference cycle reads)."""

    def __init__(
        self,
        streams: Iterable[str],
        n_obs_steps: int,
        period_ns: int,
        timeout_ns: int,
        future_tolerance_ns: int,
        max_samples: int = 4096,
    ) -> None:
        if n_obs_steps < 1 or period_ns <= 0:
            raise ValueError("n_obs_steps must be >= 1 and period_ns > 0")
        self.n_obs_steps = n_obs_steps
        self.period_ns = int(period_ns)
        self.max_samples = max_samples
        self._streams = {name: _Stream() for name in streams}
        self._lock = threading.Lock()
        self.set_timing(timeout_ns, future_tolerance_ns)

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)

    def set_timing(self, timeout_ns: int, future_tolerance_ns: int) -> None:
        with self._lock:
            self.timeout_ns = int(timeout_ns)
            self.future_tolerance_ns = int(future_tolerance_ns)
            # history kept: the window's span, plus the timeout a frame may lag behind its slot
            self._keep_ns = (self.n_obs_steps - 1) * self.period_ns + 2 * self.timeout_ns

    def clear(self) -> None:
        with self._lock:
            for stream in self._streams.values():
                stream.stamps.clear()
                stream.values.clear()

    def newest_stamp(self, stream: str) -> int | None:
        with self._lock:
            stamps = self._streams[stream].stamps
            return stamps[-1] if stamps else None

    def add(self, stream: str, stamp_ns: int, value: np.ndarray, now_ns: int) -> None:
        """Add one sample; raises :class:`RejectedInput` (nothing is stored) when its stamp is bad."""
        self.add_many({stream: value}, stamp_ns, now_ns)

    def add_many(self, values: Mapping[str, np.ndarray], stamp_ns: int, now_ns: int) -> None:
        """Add samples of several streams with one stamp (all or none), e.g. the vectors of one JointState."""
        stamp_ns, now_ns = int(stamp_ns), int(now_ns)
        with self._lock:
            ahead = stamp_ns - now_ns
            if ahead > self.future_tolerance_ns:
                raise RejectedInput(
                    STAMP_FUTURE, f"stamp is {ahead / 1e9:.3f} s ahead of the node's clock "
                    f"(tolerance {self.future_tolerance_ns / 1e9:.3f} s); are the clocks synchronised?"
                )
            age = now_ns - stamp_ns
            if age > self.timeout_ns:
                raise RejectedInput(
                    STAMP_STALE, f"stamp is {age / 1e9:.3f} s old, more than observation_timeout_s "
                    f"{self.timeout_ns / 1e9:.3f}"
                )
            for name in values:
                stream = self._streams[name]
                self._forget_future(stream, now_ns)
                if stream.stamps and stamp_ns <= stream.stamps[-1]:
                    step = (stamp_ns - stream.stamps[-1]) / 1e9
                    raise RejectedInput(
                        STAMP_NOT_INCREASING, f"stamp does not increase ({step:+.4f} s after the previous "
                        "sample): a duplicate or a clock going backwards"
                    )
            for name, value in values.items():
                stream = self._streams[name]
                stream.stamps.append(stamp_ns)
                stream.values.append(value)
                self._forget_old(stream)

    def _forget_future(self, stream: _Stream, now_ns: int) -> None:
        limit = now_ns + self.future_tolerance_ns
        while stream.stamps and stream.stamps[-1] > limit:
            stream.stamps.pop()
            stream.values.pop()

    def _forget_old(self, stream: _Stream) -> None:
        # Keep one sample older than the horizon: it is the latest sample <= the oldest slot.
        cutoff = stream.stamps[-1] - self._keep_ns
        first = max(0, bisect.bisect_right(stream.stamps, cutoff) - 1, len(stream.stamps) - self.max_samples)
        if first:
            del stream.stamps[:first]
            del stream.values[:first]

    def window(self, now_ns: int) -> ObservationWindow:
        """The newest complete window, or :class:`NotReady` saying which stream holds it back."""
        now_ns = int(now_ns)
        with self._lock:
            newest: dict[str, int] = {}
            for name, stream in self._streams.items():
                self._forget_future(stream, now_ns)
                if not stream.stamps:
                    raise NotReady(WAITING, f"no sample of '{name}' yet")
                newest[name] = stream.stamps[-1]
            limiting = min(newest, key=newest.__getitem__)
            reference = newest[limiting]
            age = now_ns - reference
            if age > self.timeout_ns:
                raise NotReady(
                    STALE, f"'{limiting}' is stale: its newest sample is {age / 1e9:.3f} s old "
                    f"(observation_timeout_s {self.timeout_ns / 1e9:.3f})"
                )
            arrays: dict[str, np.ndarray] = {}
            used: dict[str, tuple[int, ...]] = {}
            for name, stream in self._streams.items():
                frames, stamps = [], []
                for k in range(self.n_obs_steps - 1, -1, -1):
                    slot = reference - k * self.period_ns
                    index = bisect.bisect_right(stream.stamps, slot) - 1
                    if index < 0:
                        raise NotReady(WAITING, f"'{name}' has no sample for the observation {k} steps back yet")
                    lag = slot - stream.stamps[index]
                    if lag > self.timeout_ns:
                        raise NotReady(
                            STALE, f"'{name}' has a gap: the sample for {k} steps back is {lag / 1e9:.3f} s "
                            "older than its slot"
                        )
                    frames.append(stream.values[index])
                    stamps.append(stream.stamps[index])
                arrays[name] = np.stack(frames)
                used[name] = tuple(stamps)
        return ObservationWindow(stamp_ns=reference, arrays=arrays, sample_stamps=used)
