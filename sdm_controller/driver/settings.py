"""The driver's parameters: one table (default, range, meaning) and their validation.

``robot_ip``, ``control_rate_hz`` and ``gripper_enabled`` are read at start; every other
parameter applies live from the next control period (``ros2 param set``). Limit arrays are
empty for "the FR3 datasheet value" and may only tighten the datasheet limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sdm_controller.common.fr3 import ARM_ACCELERATION, ARM_LOWER, ARM_UPPER, ARM_VELOCITY
from sdm_controller.common.parameter_spec import ParameterSpec, SettingsError, coerce
from sdm_controller.driver.chunk_tracker import ChunkRules
from sdm_controller.driver.command_limits import CommandLimits

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "robot_ip", "", "Hostname or IP of the robot (or franky-sim) to connect to. Required; read at start."
    ),
    ParameterSpec(
        "control_rate_hz",
        200.0,
        "Rate at which velocity commands are streamed to franky (which "
        "interpolates them at 1 kHz) and joint_states are published. Read at start.",
        range=(50.0, 1000.0),
    ),
    ParameterSpec(
        "watchdog_ms",
        200.0,
        "Hold still (brake to rest) when no valid chunk arrived for this long.",
        range=(10.0, 10000.0),
    ),
    ParameterSpec(
        "dynamics_factor",
        0.5,
        "Fraction of the velocity and acceleration limits used while tracking "
        "(braking to hold uses the full acceleration limits).",
        range=(0.01, 1.0),
    ),
    ParameterSpec(
        "joint_position_lower", (), "Lower position limit per arm joint (rad, fr3_joint1..7); empty = FR3 datasheet."
    ),
    ParameterSpec("joint_position_upper", (), "Upper position limit per arm joint (rad); empty = FR3 datasheet."),
    ParameterSpec("joint_velocity_limit", (), "Velocity limit per arm joint (rad/s); empty = FR3 datasheet."),
    ParameterSpec("joint_acceleration_limit", (), "Acceleration limit per arm joint (rad/s^2); empty = FR3 datasheet."),
    ParameterSpec(
        "position_margin_rad",
        0.02,
        "Distance kept from each position limit (targets are clamped there and braking ends there).",
        range=(0.0, 0.3),
    ),
    ParameterSpec(
        "lookahead_ms",
        15.0,
        "Feed-forward velocity is taken this far ahead (compensates the lag of franky's velocity tracking).",
        range=(0.0, 200.0),
    ),
    ParameterSpec(
        "position_gain", 8.0, "Feedback gain (1/s) from position error to commanded velocity.", range=(0.0, 100.0)
    ),
    ParameterSpec("min_points", 2, "Chunks with fewer points are rejected.", range=(1, 1000)),
    ParameterSpec(
        "max_stamp_age_ms",
        1000.0,
        "Chunks whose header.stamp lies further in the past are rejected.",
        range=(1.0, 60000.0),
    ),
    ParameterSpec(
        "max_stamp_lead_ms",
        100.0,
        "Chunks whose header.stamp lies further in the future are rejected.",
        range=(0.0, 10000.0),
    ),
    ParameterSpec(
        "gripper_enabled", True, "Connect franky.Gripper and execute the chunk's fr3_finger_joint1. Read at start."
    ),
    ParameterSpec("gripper_speed", 0.1, "Gripper speed (m/s of the width).", range=(0.001, 0.2)),
    ParameterSpec(
        "gripper_deadband_m",
        0.002,
        "A new gripper move starts when the wanted width differs by more than this from the last commanded one.",
        range=(0.0, 0.08),
    ),
    ParameterSpec(
        "reconnect_period_s", 1.0, "Time between reconnection attempts after the connection is lost.", range=(0.1, 60.0)
    ),
)
SPECS: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}
START_ONLY = ("robot_ip", "control_rate_hz", "gripper_enabled")


@dataclass(frozen=True)
class DriverSettings:
    """Values of all parameters (field names = parameter names)."""

    robot_ip: str = ""
    control_rate_hz: float = 200.0
    watchdog_ms: float = 200.0
    dynamics_factor: float = 0.5
    joint_position_lower: tuple[float, ...] = ()
    joint_position_upper: tuple[float, ...] = ()
    joint_velocity_limit: tuple[float, ...] = ()
    joint_acceleration_limit: tuple[float, ...] = ()
    position_margin_rad: float = 0.02
    lookahead_ms: float = 15.0
    position_gain: float = 8.0
    min_points: int = 2
    max_stamp_age_ms: float = 1000.0
    max_stamp_lead_ms: float = 100.0
    gripper_enabled: bool = True
    gripper_speed: float = 0.1
    gripper_deadband_m: float = 0.002
    reconnect_period_s: float = 1.0

    def updated(self, changes: Mapping[str, Any]) -> DriverSettings:
        """A checked copy with ``changes`` applied (raises :class:`SettingsError`)."""
        values = {name: coerce(SPECS[name], value) for name, value in changes.items() if name in SPECS}
        proposal = replace(self, **values)
        proposal.limits()  # the arrays together
        return proposal

    def limits(self) -> CommandLimits:
        """The command limits these settings give (raises :class:`SettingsError`)."""
        arrays = {}
        for name, datasheet in (
            ("joint_position_lower", ARM_LOWER),
            ("joint_position_upper", ARM_UPPER),
            ("joint_velocity_limit", ARM_VELOCITY),
            ("joint_acceleration_limit", ARM_ACCELERATION),
        ):
            value = getattr(self, name)
            if value and len(value) != 7:
                raise SettingsError(
                    f"parameter '{name}' has {len(value)} values; give 7 (fr3_joint1..7) or none "
                    "for the FR3 datasheet limits"
                )
            array = np.asarray(value, dtype=np.float64) if value else datasheet
            arrays[name] = array
        lower, upper = arrays["joint_position_lower"], arrays["joint_position_upper"]
        if np.any(lower < ARM_LOWER - 1e-9) or np.any(upper > ARM_UPPER + 1e-9):
            raise SettingsError(
                f"parameters 'joint_position_lower/upper' must lie inside the FR3 limits "
                f"{ARM_LOWER.tolist()} .. {ARM_UPPER.tolist()}"
            )
        for name, datasheet in (("joint_velocity_limit", ARM_VELOCITY), ("joint_acceleration_limit", ARM_ACCELERATION)):
            if np.any(arrays[name] <= 0) or np.any(arrays[name] > datasheet + 1e-9):
                raise SettingsError(
                    f"parameter '{name}' must be positive and at most the FR3 limits "
                    f"{datasheet.tolist()}, got {arrays[name].tolist()}"
                )
        try:
            return CommandLimits(
                lower,
                upper,
                arrays["joint_velocity_limit"],
                arrays["joint_acceleration_limit"],
                self.position_margin_rad,
            )
        except ValueError as exc:
            raise SettingsError(f"parameters 'joint_position_lower/upper' and 'position_margin_rad': {exc}") from None

    def rules(self) -> ChunkRules:
        return ChunkRules(
            min_points=self.min_points,
            max_age_ns=round(self.max_stamp_age_ms * 1e6),
            max_lead_ns=round(self.max_stamp_lead_ms * 1e6),
        )
