"""An action chunk as a timed value: positions, when each is due, and knot velocities.

Timing convention (what ``JointTrajectory.header.stamp`` and ``time_from_start`` mean here):

* ``stamp`` is the header stamp of the newest observation the policy saw;
* the policy's executed actions start at that observation (``predict_action`` returns the chunk
  from index ``n_obs_steps - 1``, the newest observation's step). Action k was, in the
  demonstrations, the position *commanded* k control periods after the newest observation, and
  the position the arm reached one period later. So action k is **due at
  ``stamp + (k + 1) * period``**: ``time_from_start = (k + 1) * period``. Point 0 is never due at the
  observation instant itself, which has passed by the time any chunk is published.

Velocities (so that joint_trajectory_controller interpolates with cubic splines instead of
linear segments): central differences ``(p[k+1] - p[k-1]) / (2 period)`` inside the chunk; the first
point uses the position commanded one period before it (``reference``) as ``p[-1]`` when known,
else the forward difference; the last point's velocity is zero, because Jazzy's JTC rejects a
trajectory that ends moving, and a chunk that is not replaced in time should end at rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def finite_difference_velocities(
    positions: np.ndarray, period_s: float, reference: np.ndarray | None = None
) -> np.ndarray:
    """Knot velocities (N, D) of positions (N, D) spaced ``period_s`` apart (see module docstring)."""
    positions = np.asarray(positions, dtype=np.float64)
    n = positions.shape[0]
    velocities = np.zeros_like(positions)
    if n >= 2:
        velocities[1:-1] = (positions[2:] - positions[:-2]) / (2.0 * period_s)
        forward = (positions[1] - positions[0]) / period_s
        if reference is not None:
            central = (positions[1] - reference) / (2.0 * period_s)
            velocities[0] = np.where(np.isfinite(central), central, forward)
        else:
            velocities[0] = forward
    velocities[-1] = 0.0
    return velocities


@dataclass(frozen=True, eq=False)
class ActionChunk:
    """Positions (N, D) for ``names``; point k is due at ``stamp_ns + (offset + k + 1) * period_ns``.

    ``offset`` counts the policy's actions dropped from the front (``latest-only`` blending drops
    those already due); ``reference`` is the position commanded one period before point 0, when
    known (the step limit and the first velocity are taken from it).
    """

    stamp_ns: int
    period_ns: int
    names: tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray | None = None
    offset: int = 0
    reference: np.ndarray | None = None

    @classmethod
    def from_actions(cls, actions: np.ndarray, stamp_ns: int, period_ns: int, names: tuple[str, ...]) -> ActionChunk:
        positions = np.asarray(actions, dtype=np.float64)
        if positions.ndim != 2 or positions.shape[1] != len(names):
            raise ValueError(f"actions must be (steps, {len(names)}), got {positions.shape}")
        return cls(int(stamp_ns), int(period_ns), tuple(names), positions)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def period_s(self) -> float:
        return self.period_ns / 1e9

    @property
    def time_from_start_ns(self) -> np.ndarray:
        return (self.offset + 1 + np.arange(len(self), dtype=np.int64)) * self.period_ns

    @property
    def due_ns(self) -> np.ndarray:
        """Absolute time each point is due (same clock as the stamp)."""
        return self.stamp_ns + self.time_from_start_ns

    def head(self, n: int) -> ActionChunk:
        return replace(self, positions=self.positions[:n], velocities=None)

    def due_after(self, t_ns: int) -> ActionChunk | None:
        """The points due strictly after ``t_ns`` (None if none is)."""
        keep = int(np.searchsorted(self.due_ns, t_ns, side="right"))
        if keep >= len(self):
            return None
        if keep == 0:
            return self
        return replace(self, positions=self.positions[keep:], velocities=None, offset=self.offset + keep,
                       reference=self.positions[keep - 1])

    def covers(self, t_ns: int) -> bool:
        due = self.due_ns
        return bool(due[0] <= t_ns <= due[-1])

    def position_at(self, t_ns: int) -> np.ndarray:
        """Commanded position at ``t_ns``: linear between points (and from ``reference`` one period
        before point 0); held at the last point after the chunk ends."""
        offsets, points = self.time_from_start_ns, self.positions  # relative ints: exact, unlike float epochs
        if self.reference is not None:
            offsets = np.concatenate([[offsets[0] - self.period_ns], offsets])
            points = np.concatenate([self.reference[None], self.positions])
        t = int(np.clip(int(t_ns) - self.stamp_ns, offsets[0], offsets[-1]))
        index = int(np.searchsorted(offsets, t, side="right") - 1)
        if index >= len(offsets) - 1:
            return points[-1].copy()
        w = (t - int(offsets[index])) / int(offsets[index + 1] - offsets[index])
        return (1.0 - w) * points[index] + w * points[index + 1]

    def with_velocities(self) -> ActionChunk:
        return replace(self, velocities=finite_difference_velocities(self.positions, self.period_s, self.reference))

    def __repr__(self) -> str:
        return (f"ActionChunk(stamp={self.stamp_ns / 1e9:.6f}, {len(self)} points x {len(self.names)} joints, "
                f"first due +{self.time_from_start_ns[0] / 1e9:.3f} s, period {self.period_s:.4f} s)")
