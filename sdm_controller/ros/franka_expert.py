"""``franka_expert``: the scripted reach expert as a node, in the policy node's place.

    python -m sdm_controller.ros.franka_expert            # beside mujoco_bridge + franka_driver
    ros2 run sdm_controller franka_expert

It publishes what ``policy_node`` publishes: ``action_chunk`` (``trajectory_msgs/JointTrajectory``,
fr3_joint1..7 and fr3_finger_joint1, ``horizon`` points ``period_s`` apart, with velocities;
``header.stamp`` is the stamp of the joint state it planned from), ``rate_hz`` times a second. It
plans from the measured ``joint_states`` and the bridge's ``task/goal``, the centre of the cube's
top face: the expert is told where the cube is, a policy has to see it. Demonstrations recorded
from it (``collect franka-sim``) therefore go through the same driver, timing and topics as the
policy trained on them. Planning is :class:`~sdm_controller.sim.franka_expert.ReachExpert` on the
work cell's model.

No chunk goes out before a goal has arrived, from a joint state older than ``max_state_age_s`` or
missing an arm joint, or when planning fails (the target out of reach); each is a throttled
warning, and the driver holds the arm once chunks stop. Parameters apply at start.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from sdm_controller.common.fr3 import FR3_ARM_JOINTS, FR3_JOINTS
from sdm_controller.common.joints import JointMapper
from sdm_controller.common.parameter_spec import ParameterSpec
from sdm_controller.common.rejected import RejectedInput
from sdm_controller.control.chunk import ActionChunk
from sdm_controller.ros.conversions import chunk_to_trajectory, stamp_to_ns
from sdm_controller.ros.node_main import run_node
from sdm_controller.ros.parameters import declare_parameters
from sdm_controller.ros.throttled_log import ThrottledLog
from sdm_controller.ros.topics import ACTION_CHUNK, COMMAND_QOS, JOINT_STATES, LATCHED_QOS, SENSOR_QOS, TASK_GOAL
from sdm_controller.sim.franka_expert import ExpertConfig, ReachExpert
from sdm_controller.sim.franka_ik import IKError, TcpKinematics
from sdm_controller.sim.franka_scene import work_cell_model

NODE_NAME = "franka_expert"
ARM = "arm"
NS = 1_000_000_000
_EXPERT = ExpertConfig()

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("rate_hz", 10.0, "Chunks per second.", (0.5, 100.0)),
    ParameterSpec("horizon", 16, "Points per chunk.", (2, 200)),
    ParameterSpec("period_s", 0.1, "Time between two points of a chunk (s): the dataset's control period.",
                  (0.01, 1.0)),
    ParameterSpec("speed", _EXPERT.speed, "Largest TCP speed (m/s).", (0.01, 1.0)),
    ParameterSpec("max_state_age_s", 0.5, "Joint states older than this (node clock) are not planned from.",
                  (0.01, 10.0)),
)


class FrankaExpertNode(Node):
    """Joint states + the task's goal in, the expert's action chunks out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = declare_parameters(self, PARAMETERS)
        self.horizon = int(values["horizon"])
        self.period_s = float(values["period_s"])
        self.max_state_age_ns = int(values["max_state_age_s"] * NS)
        self.expert = ReachExpert(TcpKinematics(work_cell_model()), ExpertConfig(speed=float(values["speed"])))
        self._joints = JointMapper({ARM: FR3_ARM_JOINTS})
        self._lock = threading.Lock()
        self._goal: np.ndarray | None = None
        self._state: tuple[int, np.ndarray] | None = None  # (stamp ns, arm joints)
        self.chunks = 0
        self._log = ThrottledLog(self.get_logger(), period_s=2.0)
        self._chunk_pub = self.create_publisher(JointTrajectory, ACTION_CHUNK, COMMAND_QOS)
        self.create_subscription(JointState, JOINT_STATES, self._on_joint_state, SENSOR_QOS)
        self.create_subscription(PointStamped, TASK_GOAL, self._on_goal, LATCHED_QOS)
        self.create_timer(1.0 / float(values["rate_hz"]), self._cycle)
        self.get_logger().info(
            f"expert: {self.horizon} points {self.period_s:g} s apart at {values['rate_hz']:g} Hz on "
            f"'{self._chunk_pub.topic_name}'; waiting for 'task/goal' and 'joint_states'"
        )

    def _on_goal(self, msg: PointStamped) -> None:
        goal = np.array([msg.point.x, msg.point.y, msg.point.z])
        if np.all(np.isfinite(goal)):
            with self._lock:
                self._goal = goal

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            arm = self._joints.map(msg.name, msg.position)[ARM]
        except RejectedInput as exc:
            self._log.warning("joint_state", f"joint state ignored: {exc}")
            return
        with self._lock:
            self._state = (stamp_to_ns(msg.header.stamp), arm.astype(np.float64))

    def _cycle(self) -> None:
        with self._lock:
            goal, state = self._goal, self._state
        if goal is None or state is None:
            missing = "'task/goal'" if goal is None else "'joint_states'"
            self._log.warning("waiting", f"no chunk: waiting for {missing}")
            return
        stamp_ns, q = state
        age_ns = self.get_clock().now().nanoseconds - stamp_ns
        if age_ns > self.max_state_age_ns:
            self._log.warning("stale", f"no chunk: the newest joint state is {age_ns / 1e6:.0f} ms old")
            return
        try:
            targets = self.expert.chunk(q, goal, self.horizon, self.period_s)
        except IKError as exc:
            self._log.warning("ik", f"no chunk: {exc}")
            return
        chunk = ActionChunk.from_actions(targets, stamp_ns, int(self.period_s * NS), FR3_JOINTS).with_velocities()
        self._chunk_pub.publish(chunk_to_trajectory(chunk))
        self.chunks += 1

    def close(self) -> None:
        """Nothing runs outside the executor."""


def main(args: list[str] | None = None) -> None:
    run_node(FrankaExpertNode, NODE_NAME, args)


if __name__ == "__main__":
    main()
