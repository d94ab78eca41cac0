"""Franka Research 3: joint names (franka_ros2 convention) and the datasheet's joint limits.

The gripper appears as one joint, ``fr3_finger_joint1``: the opening of one finger in metres
(gripper width / 2, 0..0.04). ``fr3_finger_joint2`` mirrors it where a message carries both.
"""

from __future__ import annotations

import numpy as np

FR3_ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
FR3_GRIPPER_JOINT = "fr3_finger_joint1"
FR3_MIRROR_GRIPPER_JOINT = "fr3_finger_joint2"
FR3_JOINTS = (*FR3_ARM_JOINTS, FR3_GRIPPER_JOINT)

#: name -> (lower, upper, velocity) from the FR3 datasheet; the finger in metres and m/s
JOINT_LIMITS: dict[str, tuple[float, float, float]] = {
    "fr3_joint1": (-2.7437, 2.7437, 2.62),
    "fr3_joint2": (-1.7837, 1.7837, 2.62),
    "fr3_joint3": (-2.9007, 2.9007, 2.62),
    "fr3_joint4": (-3.0421, -0.1518, 2.62),
    "fr3_joint5": (-2.8065, 2.8065, 5.26),
    "fr3_joint6": (0.5445, 4.5169, 4.18),
    "fr3_joint7": (-3.0159, 3.0159, 5.26),
    "fr3_finger_joint1": (0.0, 0.04, 0.1),
}

#: arm joint limits as arrays in FR3_ARM_JOINTS order (rad, rad/s, rad/s^2)
ARM_LOWER = np.array([JOINT_LIMITS[n][0] for n in FR3_ARM_JOINTS])
ARM_UPPER = np.array([JOINT_LIMITS[n][1] for n in FR3_ARM_JOINTS])
ARM_VELOCITY = np.array([JOINT_LIMITS[n][2] for n in FR3_ARM_JOINTS])
ARM_ACCELERATION = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])

#: widest the FR3 hand opens (m); one finger moves half of it
GRIPPER_MAX_WIDTH = 0.08


def action_limits(names: list[str] | tuple[str, ...] | None) -> dict[str, list[float]] | None:
    """``action.limits`` of an artifact whose actions are FR3 joint positions, else None.

    Training writes them into ``policy.json`` so a policy trained on FR3 data carries the
    datasheet's bounds, and the policy node clamps to them without per-robot parameters.
    """
    if not names or any(name not in JOINT_LIMITS for name in names):
        return None
    return {key: [JOINT_LIMITS[name][i] for name in names] for i, key in enumerate(("lower", "upper", "velocity"))}

