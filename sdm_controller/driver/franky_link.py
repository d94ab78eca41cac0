"""The only module that imports franky: connect, read the arm state, stream velocity commands,
move the gripper, recover from errors.

Commands are ``JointVelocityWaypointMotion``s sent asynchronously each control period: franky
preempts the running one and Ruckig interpolates to the new target velocity at 1 kHz within the
robot's jerk limits (``sdm_controller/bench/driver_tracking.py`` measured this against re-sent position
waypoints and ``JointImpedanceTracker``). Each target velocity is held for ``STREAM_HOLD_MS``
only: if the driver stops streaming (a stalled or dead process), the motion ends and franky
brings the arm to rest by itself.

franky checks every velocity waypoint against its own joint limits (``Robot.joint_velocity_limit``;
franky 2.0: 2.175 rad/s for joints 1-4, 2.61 rad/s for 5-7, below the FR3 datasheet) and aborts the
motion when one is exceeded. :meth:`FrankyLink.connect` reads those limits from the connected Robot
(:attr:`FrankyLink.franky_limits`); the driver clamps its commands to ``LIMIT_MARGIN`` of them.

Failures surface as :class:`LinkDown` (the connection is gone: reconnect) or
:class:`RobotFault` (the robot refused a motion, e.g. a reflex: recover first).

Shutdown: :meth:`FrankyLink.close` stops a running motion, waits for franky's control thread and
for a running gripper move, then drops the franky objects, in that order, on the calling thread
(the control thread must have ended: franky objects must never be destroyed while in use).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import franky
import numpy as np

STREAM_HOLD_MS = 60
#: fraction of franky's own joint limits the driver may command (franky rejects a waypoint above them)
LIMIT_MARGIN = 0.98
#: franky/libfranka exceptions that mean the connection is gone
_NETWORK_ERRORS = (franky.NetworkException, franky.ProtocolException, franky.IncompatibleVersionException)


class LinkDown(Exception):
    """The robot cannot be reached (connection refused, lost, or timed out)."""


class RobotFault(Exception):
    """The robot refused or aborted a command (control or command exception)."""


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, _NETWORK_ERRORS) or (isinstance(exc, RuntimeError) and "Net" in str(exc)):
        return LinkDown(f"{type(exc).__name__}: {exc}")
    return RobotFault(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, eq=False)
class FrankyLimits:
    """The joint limits the connected franky enforces (arrays of 7, rad/s, rad/s^2, rad/s^3)."""

    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray


def _read_limits(robot) -> FrankyLimits:
    def current(limit) -> np.ndarray:
        value = np.asarray(limit.get(), dtype=np.float64).reshape(-1)
        if value.shape != (7,) or not np.all(np.isfinite(value)) or np.any(value <= 0):
            raise ValueError(f"franky reports an unusable {limit.desc} limit {value.tolist()}")
        return value

    return FrankyLimits(
        current(robot.joint_velocity_limit), current(robot.joint_acceleration_limit), current(robot.joint_jerk_limit)
    )


class FrankyLink:
    """One robot (and optionally its gripper) at ``host``."""

    def __init__(self, host: str, gripper: bool = True) -> None:
        self.host = host
        self.use_gripper = gripper
        self.robot = None
        self.gripper = None
        self.gripper_error = ""
        self._gripper_future = None
        #: what the connected franky enforces (None until the first connect)
        self.franky_limits: FrankyLimits | None = None
        self._closed = threading.Event()

    @property
    def connected(self) -> bool:
        return self.robot is not None

    def connect(self) -> None:
        """Connect to the robot (raises :class:`LinkDown`) and, when wanted, its gripper."""
        if self._closed.is_set():
            raise LinkDown(f"the link to '{self.host}' is closed (shutting down)")
        try:
            robot = franky.Robot(self.host, realtime_config=franky.RealtimeConfig.Ignore)
            # The driver shapes velocity and acceleration itself (CommandLimits); franky only
            # smooths each step within the robot's own jerk limits.
            robot.relative_dynamics_factor = 1.0
            limits = _read_limits(robot)
        except Exception as exc:  # noqa: BLE001 - every failure to connect is "the robot is not there"
            raise LinkDown(f"cannot connect to the robot at '{self.host}': {type(exc).__name__}: {exc}") from None
        self.robot, self.franky_limits = robot, limits
        self.gripper, self.gripper_error, self._gripper_future = None, "", None
        if self.use_gripper:
            try:
                self.gripper = franky.Gripper(self.host)
            except Exception as exc:  # noqa: BLE001 - the arm works without a hand
                self.gripper_error = f"no gripper at '{self.host}': {type(exc).__name__}: {exc}"

    def disconnect(self) -> None:
        """Forget the connection (it is gone already); the franky objects are released here, on the
        control thread, which is the only one using them."""
        self.robot = self.gripper = self._gripper_future = None

    def close(self, timeout: float = 2.0) -> None:
        """Stop what runs and release franky, in order (see module docstring). Never raises."""
        self._closed.set()
        robot, gripper, future = self.robot, self.gripper, self._gripper_future
        # failures are ignored: the connection may be gone, and a stopped motion's error no longer matters
        if robot is not None:
            with contextlib.suppress(Exception):
                if robot.is_in_control:
                    robot.stop()  # ends the streamed motion now (it would end STREAM_HOLD_MS later anyway)
            with contextlib.suppress(Exception):
                robot.join_motion(timeout=timeout)  # franky's control thread has finished
        if future is not None:
            with contextlib.suppress(Exception):
                future.wait(timeout)  # the gripper move's thread must not outlive its Gripper
        self.robot = self.gripper = self._gripper_future = None
        del robot, gripper, future  # the last references: franky disconnects here, not at interpreter exit

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm joint positions and velocities (blocks until the next state when no motion runs)."""
        try:
            state = self.robot.current_joint_state
            return np.array(state.position, dtype=np.float64), np.array(state.velocity, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None

    def send_velocity(self, velocity: np.ndarray) -> None:
        waypoint = franky.JointVelocityWaypoint(
            np.asarray(velocity, dtype=np.float64), hold_target_duration=franky.Duration(STREAM_HOLD_MS)
        )
        try:
            self.robot.move(franky.JointVelocityWaypointMotion([waypoint]), asynchronous=True)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None

    def robot_time_s(self) -> float:
        """The robot's own clock (franky-sim: simulated time), for the clock-rate diagnostic."""
        try:
            return float(self.robot.state.time.to_sec())
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None

    def has_errors(self) -> bool:
        try:
            return bool(self.robot.has_errors)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None

    def recover(self) -> None:
        """franky's error recovery (``recover_from_errors``); raises LinkDown/RobotFault."""
        if self.robot is None:
            raise LinkDown(f"not connected to '{self.host}'")
        try:
            self.robot.recover_from_errors()
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None

    # -- gripper ------------------------------------------------------------------------------
    def gripper_width(self) -> float | None:
        if self.gripper is None:
            return None
        try:
            return float(self.gripper.width)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None

    def gripper_busy(self) -> bool:
        future = self._gripper_future
        return future is not None and not future.wait(0)

    def move_gripper(self, width: float, speed: float) -> None:
        """Start a gripper move to ``width`` (m) unless one is still running."""
        if self.gripper is None or self.gripper_busy():
            return
        try:
            self._gripper_future = self.gripper.move_async(float(width), float(speed))
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc) from None
