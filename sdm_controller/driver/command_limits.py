"""Limits of the streamed joint-velocity command: velocity, acceleration and position.

Each control period the driver turns the wanted velocity into the one it sends, in this order
(later bounds win):

1. ``|v - v_previous| <= acceleration * acceleration_scale * dt`` (no jump in commanded velocity);
2. ``|v| <= velocity * velocity_scale`` (after a live tightening of the limits the command drops
   to the new bound at once; franky smooths that step within the robot's jerk limits);
3. braking distance: a joint moving towards a position limit may go no faster than
   ``sqrt(2 * a * distance)`` to ``limit -/+ margin``, so it can always stop in time at the
   acceleration ``a`` used for braking; a joint outside its limits may only move back inside.

The velocity and acceleration arrays are the *effective* limits: the configured ones (FR3
datasheet unless tightened by parameters) capped by what the connected franky accepts
(:meth:`CommandLimits.capped`), so no mode, braking and hold included, can command more.

Position targets are clamped to ``[lower + margin, upper - margin]`` before they are tracked.
Every clamped joint is counted by kind, for the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from sdm_controller.common.fr3 import ARM_ACCELERATION, ARM_LOWER, ARM_UPPER, ARM_VELOCITY


@dataclass
class CommandClamps:
    """How many joint commands each limit changed (cumulative)."""

    position: int = 0
    velocity: int = 0
    acceleration: int = 0

    @property
    def total(self) -> int:
        return self.position + self.velocity + self.acceleration


@dataclass(frozen=True, eq=False)
class CommandLimits:
    """Per-joint bounds of the arm command (arrays of 7)."""

    lower: np.ndarray = field(default_factory=ARM_LOWER.copy)
    upper: np.ndarray = field(default_factory=ARM_UPPER.copy)
    velocity: np.ndarray = field(default_factory=ARM_VELOCITY.copy)
    acceleration: np.ndarray = field(default_factory=ARM_ACCELERATION.copy)
    margin: float = 0.02  # rad kept between a position limit and where braking ends

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "velocity", "acceleration"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if value.shape != (7,) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} limits need 7 finite values, got {value.tolist()}")
            object.__setattr__(self, name, value)
        if np.any(self.upper - self.lower <= 2 * self.margin):
            raise ValueError("every upper position limit must exceed its lower limit by more than twice the margin")
        if np.any(self.velocity <= 0) or np.any(self.acceleration <= 0) or self.margin < 0:
            raise ValueError("velocity and acceleration limits must be positive and the margin non-negative")

    def capped(self, velocity: np.ndarray | None, acceleration: np.ndarray | None) -> CommandLimits:
        """These limits, with velocity and acceleration at most ``velocity`` / ``acceleration`` (None: unchanged)."""
        return replace(
            self,
            velocity=self.velocity if velocity is None else np.minimum(self.velocity, velocity),
            acceleration=self.acceleration if acceleration is None else np.minimum(self.acceleration, acceleration),
        )

    def clamp_position(self, q: np.ndarray, clamps: CommandClamps | None = None) -> np.ndarray:
        inside = np.clip(q, self.lower + self.margin, self.upper - self.margin)
        if clamps is not None:
            clamps.position += int(np.count_nonzero(inside != q))
        return inside

    def clamp_velocity(
        self,
        wanted: np.ndarray,
        previous: np.ndarray,
        q: np.ndarray,
        dt: float,
        velocity_scale: float = 1.0,
        acceleration_scale: float = 1.0,
        clamps: CommandClamps | None = None,
    ) -> np.ndarray:
        """The velocity to send (see module docstring); ``q`` is the measured position."""
        clamps = clamps if clamps is not None else CommandClamps()
        step = self.acceleration * acceleration_scale * dt
        v = np.clip(wanted, previous - step, previous + step)
        clamps.acceleration += int(np.count_nonzero(np.abs(v - wanted) > 1e-12))
        bound = self.velocity * velocity_scale
        stepped = np.clip(v, -bound, bound)
        clamps.velocity += int(np.count_nonzero(stepped != v))
        brake = self.acceleration * acceleration_scale
        up = np.sqrt(2 * brake * np.maximum(self.upper - self.margin - q, 0.0))
        down = -np.sqrt(2 * brake * np.maximum(q - self.lower - self.margin, 0.0))
        braked = np.clip(stepped, down, up)
        clamps.position += int(np.count_nonzero(np.abs(braked - stepped) > 1e-12))
        return braked
