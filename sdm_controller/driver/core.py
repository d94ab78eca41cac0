"""The driver's decisions, one control period at a time: which chunk runs, what velocity to send.

Modes:

* ``idle``: nothing to execute (start, after a reconnect or a recovery): at rest, and stays
  so until a chunk stamped after that moment arrives;
* ``tracking``: the running chunk's trajectory (see ``chunk_tracker``) is followed with
  ``v = dq_d(t + lookahead) + gain * (q_d(t) - q_measured)``;
* ``hold``: a chunk was rejected, or the watchdog fired, or the driver was stopped: the command
  brakes to zero velocity at the full acceleration limits and the arm stays where it stopped.
  A stop (:meth:`DriverCore.stop`, the node's ``~/stop``) is latched: every chunk is refused until
  a recovery (:meth:`DriverCore.reset` with ``release_stop``), so an operator or an evaluation
  harness can hold the arm while a policy keeps publishing. The watchdog fires early
  enough for the command to be at rest ``watchdog_ms`` after the last chunk arrived (braking
  starts ``|v| / a_max`` before that), so a late chunk slows the arm down and a new one picks
  up from the commanded state without a jump.

Every command goes through :class:`~sdm_controller.driver.command_limits.CommandLimits`
(velocity and acceleration scaled by ``dynamics_factor`` while tracking): the configured limits
capped by the robot's own (:meth:`DriverCore.set_robot_limits`, franky's limits read at connect),
in every mode. A new chunk starts
from the state commanded at its arrival, so replacing a chunk never jumps the commanded
velocity. Thread-safe: the control loop calls :meth:`step`, the ROS side
:meth:`offer_chunk`, :meth:`update_settings` and :meth:`report`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sdm_controller.driver.chunk_tracker import ChunkRejected, Trajectory, parse_chunk
from sdm_controller.driver.command_limits import CommandClamps
from sdm_controller.driver.settings import DriverSettings
from sdm_controller.driver.watchdog import Watchdog

IDLE, TRACKING, HOLD = "idle", "tracking", "hold"
OK, WARN, ERROR = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Command:
    """What one control period sends: arm velocity, the position it tracks, gripper finger or None."""

    velocity: np.ndarray
    q_desired: np.ndarray
    finger: float | None
    mode: str
    stream: bool  # False: at rest and already told so; nothing needs sending


@dataclass
class DriverReport:
    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


class DriverCore:
    def __init__(self, settings: DriverSettings) -> None:
        self._lock = threading.Lock()
        self._robot_velocity: np.ndarray | None = None  # what the robot accepts (None: not known yet)
        self._robot_acceleration: np.ndarray | None = None
        self._apply(settings)
        self.mode = IDLE
        self.hold_reason = "no chunk yet"
        self._trajectory: Trajectory | None = None
        self._chunk = None
        self._v = np.zeros(7)  # last commanded velocity
        self._q_desired: np.ndarray | None = None
        self._last_step_ns: int | None = None
        self._fresh_after_ns = -(2**62)  # chunks stamped before this are not fresh (after reset)
        self._reset_reason = ""
        self.stopped = ""  # why the driver was stopped; chunks are refused until a recovery releases it
        self.accepted = 0
        self.replaced = 0
        self.skipped_points = 0
        self.rejected: Counter[str] = Counter()
        self.last_rejection = ""
        self.clamps = CommandClamps()

    def _apply(self, settings: DriverSettings) -> None:
        self.settings = settings
        self.limits = settings.limits().capped(self._robot_velocity, self._robot_acceleration)
        self.rules = settings.rules()
        self.watchdog = getattr(self, "watchdog", None) or Watchdog(0)
        self.watchdog.timeout_ns = round(settings.watchdog_ms * 1e6)

    def update_settings(self, settings: DriverSettings) -> None:
        with self._lock:
            self._apply(settings)

    def set_robot_limits(self, velocity: np.ndarray | None, acceleration: np.ndarray | None) -> None:
        """Cap every command at what the robot accepts (from now on, whatever the settings say)."""
        with self._lock:
            self._robot_velocity = None if velocity is None else np.array(velocity, dtype=np.float64)
            self._robot_acceleration = None if acceleration is None else np.array(acceleration, dtype=np.float64)
            self._apply(self.settings)

    # -- chunks -------------------------------------------------------------------------------
    def offer_chunk(
        self,
        stamp_ns: int,
        names: Sequence[str],
        offsets_ns: Sequence[int],
        positions: Sequence[Sequence[float]],
        velocities: Sequence[Sequence[float]],
        now_ns: int,
    ) -> ChunkRejected | None:
        """Run the chunk from now on, or reject it (then the arm holds); returns the rejection."""
        with self._lock:
            try:
                if self.stopped:
                    raise ChunkRejected(
                        "stopped", f"the driver was stopped ({self.stopped}); call ~/recover to run chunks"
                    )
                if stamp_ns < self._fresh_after_ns:
                    raise ChunkRejected(
                        "stamp_before_reset",
                        f"header.stamp is before the driver's last reset ({self._reset_reason}): the chunk was "
                        "computed from an observation of the arm before it",
                    )
                chunk = parse_chunk(stamp_ns, names, offsets_ns, positions, velocities, now_ns, self.rules)
            except ChunkRejected as exc:
                self.rejected[exc.reason] += 1
                self.last_rejection = str(exc)
                self._hold(f"chunk rejected: {exc}")
                return exc
            if self.mode == TRACKING and self._trajectory is not None:
                q0, dq0 = self._trajectory.sample(now_ns)
                self.replaced += 1
            elif self._q_desired is None:
                self.rejected["not_ready"] += 1
                self.last_rejection = "no robot state read yet (starting or reconnecting)"
                return ChunkRejected("not_ready", self.last_rejection)
            else:
                q0, dq0 = self._q_desired, self._v.copy()
            q0 = self.limits.clamp_position(q0)
            trajectory, skipped = chunk.trajectory_from(now_ns, q0, dq0)
            trajectory = Trajectory(
                trajectory.times_ns, self.limits.clamp_position(trajectory.q, self.clamps), trajectory.dq
            )
            self.skipped_points += skipped
            self._trajectory, self._chunk = trajectory, chunk
            self.accepted += 1
            self.watchdog.feed(now_ns)
            self.mode = TRACKING
            self.hold_reason = ""
            return None

    def hold(self, reason: str) -> None:
        """Stop executing chunks: brake to rest (e.g. before shutting down)."""
        with self._lock:
            self._hold(reason)

    def stop(self, reason: str) -> None:
        """Brake to rest and refuse every chunk until a recovery (``reset(..., release_stop=True)``)."""
        with self._lock:
            self.stopped = reason
            self._hold(f"stopped: {reason}")

    @property
    def at_rest(self) -> bool:
        """Nothing runs and the last command was zero velocity."""
        with self._lock:
            return self.mode != TRACKING and not np.any(self._v)

    def _hold(self, reason: str) -> None:
        if self.mode == TRACKING:
            self.mode = HOLD
        self.hold_reason = reason
        self._trajectory = self._chunk = None

    def reset(self, reason: str, now_ns: int, release_stop: bool = False) -> None:
        """Forget everything running (reconnect, fault, recovery): at rest until a chunk stamped after
        now. Only a recovery (``release_stop``) ends a stop: a reconnect must not undo an operator's."""
        with self._lock:
            if release_stop:
                self.stopped = ""
            self.mode = IDLE
            self.hold_reason = f"stopped: {self.stopped}" if self.stopped else reason
            self._trajectory = self._chunk = None
            self._v = np.zeros(7)
            self._q_desired = None
            self._last_step_ns = None
            self._fresh_after_ns = now_ns
            self._reset_reason = reason
            self.watchdog.clear()

    # -- control period -----------------------------------------------------------------------
    def step(self, now_ns: int, q: np.ndarray, dq: np.ndarray) -> Command:
        """The command for this period from the measured arm state (q, dq)."""
        with self._lock:
            s = self.settings
            dt = 1.0 / s.control_rate_hz if self._last_step_ns is None else (now_ns - self._last_step_ns) / 1e9
            dt = min(max(dt, 1e-4), 5.0 / s.control_rate_hz)  # a stalled period must not allow a big step
            self._last_step_ns = now_ns
            if self.mode == TRACKING and self._must_brake(now_ns):
                self.watchdog.trips += 1
                self._hold(
                    f"no chunk for {self.watchdog.age_ns(now_ns) / 1e6:.0f} ms: braking to be at rest "
                    f"{s.watchdog_ms:g} ms (watchdog_ms) after the last one"
                )
            finger = None
            if self.mode == TRACKING:
                q_d, _ = self._trajectory.sample(now_ns)
                _, dq_ff = self._trajectory.sample(now_ns + round(s.lookahead_ms * 1e6))
                wanted = dq_ff + s.position_gain * (q_d - q)
                acceleration_scale = s.dynamics_factor
                finger = self._chunk.finger_at(now_ns + round(s.lookahead_ms * 1e6))
            else:
                q_d, wanted, acceleration_scale = np.asarray(q, dtype=np.float64), np.zeros(7), 1.0
            was_moving = bool(np.any(self._v != 0))
            v = self.limits.clamp_velocity(wanted, self._v, q, dt, s.dynamics_factor, acceleration_scale, self.clamps)
            if self.mode != TRACKING and np.all(np.abs(v) < 1e-4):
                v = np.zeros(7)
            self._v, self._q_desired = v, q_d
            return Command(v, q_d, finger, self.mode, stream=self.mode == TRACKING or was_moving)

    def _must_brake(self, now_ns: int) -> bool:
        """True once braking from the commanded velocity (at the full acceleration limits) must start
        for the arm to be at rest ``watchdog_ms`` after the last chunk arrived (within one period)."""
        age = self.watchdog.age_ns(now_ns)
        if age is None:
            return True
        braking_s = float(np.max(np.abs(self._v) / self.limits.acceleration))
        return age + (braking_s + 1.0 / self.settings.control_rate_hz) * 1e9 > self.watchdog.timeout_ns

    # -- diagnostics --------------------------------------------------------------------------
    def report(self, now_ns: int) -> DriverReport:
        with self._lock:
            age = self.watchdog.age_ns(now_ns)
            values = [
                ("mode", self.mode),
                ("hold reason", self.hold_reason),
                ("stopped", self.stopped),
                ("chunks accepted", str(self.accepted)),
                ("chunks replaced", str(self.replaced)),
                ("chunk age_ms", "none" if age is None else f"{age / 1e6:.1f}"),
                ("skipped past points", str(self.skipped_points)),
                ("watchdog trips", str(self.watchdog.trips)),
                ("rejected total", str(sum(self.rejected.values()))),
                *((f"rejected {reason}", str(count)) for reason, count in sorted(self.rejected.items())),
                ("last rejection", self.last_rejection),
                ("clamps position", str(self.clamps.position)),
                ("clamps velocity", str(self.clamps.velocity)),
                ("clamps acceleration", str(self.clamps.acceleration)),
                ("commanded velocity max_abs", f"{float(np.max(np.abs(self._v))):.4f}"),
                ("dynamics_factor", f"{self.settings.dynamics_factor:g}"),
                ("velocity limit effective", array_text(self.limits.velocity)),
                ("velocity limit tracking", array_text(self.limits.velocity * self.settings.dynamics_factor)),
                ("acceleration limit effective", array_text(self.limits.acceleration)),
            ]
            if self.mode == HOLD and self.hold_reason.startswith("chunk rejected"):
                return DriverReport(WARN, f"holding: {self.hold_reason}", values)
            if self.mode == TRACKING:
                return DriverReport(OK, "tracking a chunk", values)
            return DriverReport(OK, f"{self.mode}: {self.hold_reason}", values)


def array_text(values: np.ndarray) -> str:
    """Per-joint values as a diagnostics string, 4 significant digits."""
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
