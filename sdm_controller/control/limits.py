"""Joint limits applied to every published chunk: positions, steps, velocities.

For each point in order, starting from the position commanded one period before the first point
(``reference``; NaN entries, or no reference at all, leave that joint's first step unbounded):

1. the step from the previous point is clamped to ``min(max_step, velocity_limit * period)``;
2. the position is clamped to ``[lower, upper]``. Position limits are applied last and always
   win: if the reference itself lies outside them, the point is pulled inside even when that is
   a larger step.

Knot velocities are then computed from the clamped positions and clipped to the same per-period
bound. Every clamped (point, joint) entry is counted by kind, for the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClampCounts:
    """How many (point, joint) entries each limit changed."""

    position: int = 0
    step: int = 0
    velocity: int = 0

    @property
    def total(self) -> int:
        return self.position + self.step + self.velocity

    def __iadd__(self, other: ClampCounts) -> ClampCounts:
        self.position += other.position
        self.step += other.step
        self.velocity += other.velocity
        return self


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Per-joint bounds (arrays of the action dimension; ``velocity`` may hold inf)."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    max_step: float = np.inf
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "velocity"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        if not (self.lower.shape == self.upper.shape == self.velocity.shape):
            raise ValueError("lower, upper and velocity limits need one value per joint")
        if np.any(self.lower >= self.upper):
            raise ValueError("every lower position limit must be below its upper limit")
        if np.any(self.velocity <= 0) or not self.max_step > 0:
            raise ValueError("velocity limits and max_step must be positive")

    def step_bound(self, period_s: float) -> np.ndarray:
        """Largest change per control period, per joint."""
        return np.minimum(self.max_step, self.velocity * period_s)

    def apply(
        self, positions: np.ndarray, period_s: float, reference: np.ndarray | None = None
    ) -> tuple[np.ndarray, ClampCounts]:
        """Clamped copy of positions (N, D) and the counts (see module docstring)."""
        out = np.array(positions, dtype=np.float64, copy=True)
        counts = ClampCounts()
        bound = self.step_bound(period_s)
        previous = None if reference is None else np.asarray(reference, dtype=np.float64)
        for k in range(out.shape[0]):
            point = out[k]
            if previous is not None:
                bounded = np.isfinite(previous)
                stepped = np.where(bounded, np.clip(point, previous - bound, previous + bound), point)
                counts.step += int(np.count_nonzero(stepped != point))
                point = stepped
            inside = np.clip(point, self.lower, self.upper)
            counts.position += int(np.count_nonzero(inside != point))
            out[k] = inside
            previous = inside
        return out, counts

    def clip_velocities(self, velocities: np.ndarray, period_s: float) -> tuple[np.ndarray, int]:
        """Velocities clipped to the per-period bound; counts only real excess, not float rounding."""
        bound = self.step_bound(period_s) / period_s
        clipped = np.clip(velocities, -bound, bound)
        excess = np.abs(velocities) > bound * (1.0 + 1e-9) + 1e-12
        return clipped, int(np.count_nonzero(excess))
