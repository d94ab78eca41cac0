"""The only module that imports franky: connect, read the arm state, stream velocity commands,
move the gripper, recover from errors.

Commands are ``JointVelocityWaypointMotion``s sent asynchronously each control period: franky
preempts the running one and Ruckig interpolates to the new target velocity at 1 kHz within the
robot's jerk limits (``benchmarks/driver_tracking.py`` measured this against re-sent position
waypoints and ``JointImpedanceTracker``). Each target velocity is held for ``STREAM_HOLD_MS``
only: if the driver stops streaming (a stalled or dead process), the motion ends and franky
brings the arm to rest by itself.

Failures surface as :class:`LinkDown` (the connection is gone: reconnect) or
:class:`RobotFault` (the robot refused a motion, e.g. a reflex: recover first).
"""

from __future__ import annotations

import franky
import numpy as np

STREAM_HOLD_MS = 60
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


class FrankyLink:
    """One robot (and optionally its gripper) at ``host``."""

    def __init__(self, host: str, gripper: bool = True) -> None:
        self.host = host
        self.use_gripper = gripper
        self.robot = None
        self.gripper = None
        self.gripper_error = ""
        self._gripper_future = None

    @property
    def connected(self) -> bool:
        return self.robot is not None

    def connect(self) -> None:
        """Connect to the robot (raises :class:`LinkDown`) and, when wanted, its gripper."""
        try:
            robot = franky.Robot(self.host, realtime_config=franky.RealtimeConfig.Ignore)
            # The driver shapes velocity and acceleration itself (CommandLimits); franky only
            # smooths each step within the robot's own jerk limits.
            robot.relative_dynamics_factor = 1.0
        except Exception as exc:  # noqa: BLE001 - every failure to connect is "the robot is not there"
            raise LinkDown(f"cannot connect to the robot at '{self.host}': {type(exc).__name__}: {exc}") from None
        self.robot = robot
        self.gripper, self.gripper_error, self._gripper_future = None, "", None
        if self.use_gripper:
            try:
                self.gripper = franky.Gripper(self.host)
            except Exception as exc:  # noqa: BLE001 - the arm works without a hand
                self.gripper_error = f"no gripper at '{self.host}': {type(exc).__name__}: {exc}"

    def disconnect(self) -> None:
        self.robot = self.gripper = self._gripper_future = None

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
