"""A received action chunk as a time-indexed trajectory of the FR3 arm (and gripper).

``parse_chunk`` validates a chunk (the plain fields of a ``trajectory_msgs/JointTrajectory``)
against the rules of :class:`ChunkRules` and maps its joints, given in any order, onto
``FR3_ARM_JOINTS`` plus the optional gripper joint. Point k is due at the absolute time
``stamp + time_from_start[k]`` (the policy's latency compensation: a chunk is timed by the
observation it was computed from, not by when it arrived).

``TimedChunk.trajectory_from(now, q, dq)`` is what the driver executes: the points still due
after ``now`` (points already in the past are skipped and counted), joined to the commanded
state at ``now`` so a newer chunk continues the running motion without a jump in position or
velocity. Between knots the trajectory is a cubic Hermite spline through the positions with
the knot velocities (the chunk's own, or finite differences when it has none); after the last
knot it rests at the last position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdm_controller.common.fr3 import FR3_ARM_JOINTS, FR3_GRIPPER_JOINT, FR3_MIRROR_GRIPPER_JOINT

NS = 1_000_000_000
#: a still-due point closer than this to ``now`` is treated as past: a spline segment that short
#: would ask for an unbounded velocity
MIN_SEGMENT_NS = 2_000_000


class ChunkRejected(Exception):
    """A chunk the driver refuses; ``reason`` is a short key for counters, the message a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ChunkRules:
    """What a chunk must satisfy to be executed."""

    min_points: int = 2
    max_age_ns: int = NS  # header stamp at most this far behind the driver's clock
    max_lead_ns: int = NS // 10  # and at most this far ahead of it (clock skew between machines)


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Knots (times_ns (N,), q (N, 7), dq (N, 7)); cubic Hermite between them, at rest outside."""

    times_ns: np.ndarray
    q: np.ndarray
    dq: np.ndarray

    def sample(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity at ``t_ns`` (before the first knot: its position, at rest)."""
        times = self.times_ns
        if t_ns < times[0]:
            return self.q[0].copy(), np.zeros_like(self.q[0])
        if t_ns >= times[-1]:
            return self.q[-1].copy(), np.zeros_like(self.q[-1])
        k = int(np.searchsorted(times, t_ns, side="right")) - 1
        h = (times[k + 1] - times[k]) / NS
        s = (t_ns - times[k]) / NS / h
        p0, p1, m0, m1 = self.q[k], self.q[k + 1], self.dq[k] * h, self.dq[k + 1] * h
        s2, s3 = s * s, s * s * s
        q = (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * m1
        dq = ((6 * s2 - 6 * s) * p0 + (3 * s2 - 4 * s + 1) * m0 + (-6 * s2 + 6 * s) * p1 + (3 * s2 - 2 * s) * m1) / h
        return q, dq

    @property
    def end_ns(self) -> int:
        return int(self.times_ns[-1])


@dataclass(frozen=True, eq=False)
class TimedChunk:
    """A validated chunk: absolute due times, arm knots in FR3 order, gripper finger opening or None."""

    stamp_ns: int
    times_ns: np.ndarray  # (N,)
    q: np.ndarray  # (N, 7)
    dq: np.ndarray  # (N, 7)
    finger: np.ndarray | None  # (N,) metres, one finger's opening

    def due_after(self, now_ns: int) -> int:
        """Index of the first point still due later than ``now_ns`` (+ the shortest segment)."""
        return int(np.searchsorted(self.times_ns, now_ns + MIN_SEGMENT_NS, side="right"))

    def trajectory_from(self, now_ns: int, q: np.ndarray, dq: np.ndarray) -> tuple[Trajectory, int]:
        """The trajectory from the commanded state (q, dq) at ``now_ns`` and the number of points skipped."""
        first = self.due_after(now_ns)
        times = np.concatenate([[now_ns], self.times_ns[first:]]).astype(np.int64)
        knots_q = np.vstack([q, self.q[first:]])
        knots_dq = np.vstack([dq, self.dq[first:]])
        return Trajectory(times, knots_q, knots_dq), first

    def finger_at(self, t_ns: int) -> float | None:
        """The gripper finger opening due at ``t_ns`` (linear between points), or None."""
        if self.finger is None:
            return None
        return float(np.interp(t_ns, self.times_ns, self.finger))


def knot_velocities(times_ns: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Finite-difference knot velocities for a chunk that has none: central inside, zero at the end."""
    t = times_ns / NS
    dq = np.zeros_like(q)
    if len(t) >= 2:
        dq[0] = (q[1] - q[0]) / (t[1] - t[0])
        if len(t) >= 3:
            dq[1:-1] = (q[2:] - q[:-2]) / (t[2:] - t[:-2])[:, None]
    return dq


def parse_chunk(
    stamp_ns: int,
    names: Sequence[str],
    offsets_ns: Sequence[int],
    positions: Sequence[Sequence[float]],
    velocities: Sequence[Sequence[float]],
    now_ns: int,
    rules: ChunkRules = ChunkRules(),
) -> TimedChunk:
    """Validate and map a chunk (see module docstring); raises :class:`ChunkRejected`."""
    names = list(names)
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in FR3_ARM_JOINTS if n not in index]
    unknown = [n for n in names if n not in FR3_ARM_JOINTS and n not in (FR3_GRIPPER_JOINT, FR3_MIRROR_GRIPPER_JOINT)]
    if missing or unknown or len(index) != len(names):
        raise ChunkRejected(
            "joint_names",
            f"joint_names {names} must name each of {list(FR3_ARM_JOINTS)} once (plus optionally "
            f"'{FR3_GRIPPER_JOINT}'); missing {missing}, unknown {unknown}",
        )
    n = len(positions)
    if n < rules.min_points:
        raise ChunkRejected("too_few_points", f"the chunk has {n} points; at least {rules.min_points} are needed")
    try:
        p = np.asarray(positions, dtype=np.float64)
        v = np.asarray(velocities, dtype=np.float64) if any(len(row) for row in velocities) else None
    except ValueError:
        raise ChunkRejected("malformed", "every point must have one position per joint name") from None
    if p.shape != (n, len(names)) or (v is not None and v.shape != p.shape):
        raise ChunkRejected(
            "malformed",
            f"every point must have {len(names)} positions and {len(names)} velocities (or none); got "
            f"positions {p.shape}" + ("" if v is None else f", velocities {v.shape}"),
        )
    offsets = np.asarray(offsets_ns, dtype=np.int64)
    if not np.all(np.isfinite(p)) or (v is not None and not np.all(np.isfinite(v))):
        raise ChunkRejected("non_finite", "the chunk holds NaN or infinite positions or velocities")
    if offsets[0] < 0 or np.any(np.diff(offsets) <= 0):
        raise ChunkRejected("timing", "time_from_start must be non-negative and strictly increasing")
    age = now_ns - stamp_ns
    if age > rules.max_age_ns:
        raise ChunkRejected(
            "stamp_past",
            f"header.stamp is {age / 1e6:.0f} ms in the past (at most {rules.max_age_ns / 1e6:.0f} ms allowed)",
        )
    if -age > rules.max_lead_ns:
        raise ChunkRejected(
            "stamp_future",
            f"header.stamp is {-age / 1e6:.0f} ms in the future (at most {rules.max_lead_ns / 1e6:.0f} ms allowed)",
        )
    times = stamp_ns + offsets
    if times[-1] <= now_ns + MIN_SEGMENT_NS:
        raise ChunkRejected(
            "all_points_past", f"every point was due already (the last {(now_ns - times[-1]) / 1e6:.0f} ms ago)"
        )
    arm = [index[name] for name in FR3_ARM_JOINTS]
    q = p[:, arm]
    dq = v[:, arm] if v is not None else knot_velocities(times, q)
    finger = p[:, index[FR3_GRIPPER_JOINT]] if FR3_GRIPPER_JOINT in index else None
    return TimedChunk(int(stamp_ns), times, q, dq, finger)
