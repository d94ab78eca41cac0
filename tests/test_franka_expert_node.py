"""``franka_expert`` as a process over DDS: chunks only from a goal and a fresh, complete joint state."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from node_process import NodeProcess, ros_context, stamp_ns, wait_for  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from sdm_controller.common.fr3 import FR3_ARM_JOINTS, FR3_JOINTS  # noqa: E402
from sdm_controller.ros.spin_thread import SpinThread  # noqa: E402
from sdm_controller.ros.topics import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS  # noqa: E402
from sdm_controller.sim.franka_ik import TcpKinematics  # noqa: E402
from sdm_controller.sim.franka_scene import HOME_Q, work_cell_model  # noqa: E402

pytestmark = pytest.mark.ros


class Probe:
    def __init__(self, context) -> None:
        self.node = Node("expert_probe", context=context)
        self.lock = threading.Lock()
        self.chunks: list[tuple[float, JointTrajectory]] = []
        self.node.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, COMMAND_QOS)
        self.joints = self.node.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.goal = self.node.create_publisher(PointStamped, "task/goal", LATCHED_QOS)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.chunks.append((time.monotonic(), msg))

    def since(self, t: float) -> list[JointTrajectory]:
        with self.lock:
            return [msg for received, msg in self.chunks if received > t]

    def publish_joints(self, names, positions, age_s: float = 0.0) -> None:
        msg = JointState(name=list(names), position=[float(p) for p in positions])
        msg.header.stamp = rclpy.time.Time(
            nanoseconds=self.node.get_clock().now().nanoseconds - int(age_s * 1e9)
        ).to_msg()
        self.joints.publish(msg)

    def stream(self, seconds: float, names, positions, age_s: float = 0.0) -> float:
        """Joint states at 50 Hz for ``seconds``; returns when the stream started."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            self.publish_joints(names, positions, age_s)
            time.sleep(0.02)
        return start


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    with ros_context() as context:
        probe = Probe(context)
        spinner = SpinThread(probe.node)
        expert = NodeProcess("franka_expert", tmp_path_factory.mktemp("logs") / "franka_expert.log")

        def started() -> bool:
            return "waiting for 'task/goal'" in expert.log_path.read_text()

        try:
            wait_for(started, 60, "the expert's start", expert.log)
            probe.log = expert.log
            yield probe
        finally:
            assert expert.stop() == 0, expert.log()
            spinner.close()
            probe.node.destroy_node()


def test_refuses_without_a_goal_then_plans_toward_it(probe):
    home = [*HOME_Q, 0.04]
    start = probe.stream(1.0, FR3_JOINTS, home)
    assert probe.since(start) == [], "a chunk without a goal"
    goal = PointStamped(point=Point(x=0.5, y=0.1, z=0.05))
    goal.header.stamp = probe.node.get_clock().now().to_msg()
    probe.goal.publish(goal)
    start = probe.stream(1.5, FR3_JOINTS, home)
    chunks = probe.since(start)
    assert len(chunks) >= 5, probe.log()
    chunk = chunks[-1]
    assert list(chunk.joint_names) == list(FR3_JOINTS) and len(chunk.points) == 16
    assert [stamp_ns(p.time_from_start) for p in chunk.points[:2]] == [100_000_000, 200_000_000]
    assert np.all(np.asarray(chunk.points[-1].velocities) == 0.0)
    assert np.abs(np.asarray(chunk.points[-1].positions[:7]) - HOME_Q).max() > 0.05  # moving toward the goal


def test_no_chunk_from_missing_nan_or_stale_joints(probe):
    home = [*HOME_Q, 0.04]
    for names, positions, age_s, what in (
        (FR3_ARM_JOINTS[:6], HOME_Q[:6], 0.0, "a missing arm joint"),
        (FR3_JOINTS, [np.nan, *home[1:]], 0.0, "a NaN joint"),
        (FR3_JOINTS, home, 2.0, "a joint state 2 s old"),
    ):
        time.sleep(0.7)  # older than max_state_age_s: the last good joint state is stale now
        start = probe.stream(1.0, names, positions, age_s)
        assert probe.since(start) == [], f"a chunk from {what}"
    start = probe.stream(1.0, FR3_JOINTS, home)
    assert probe.since(start), "chunks again once the joint states are good"


def test_no_chunk_when_the_plan_leaves_the_reach(probe):
    """The arm near the edge of its reach and the goal beyond it: the next points have no IK solution."""
    edge = TcpKinematics(work_cell_model()).solve([0.78, 0.0, 0.3], HOME_Q)
    goal = PointStamped(point=Point(x=1.5, y=0.0, z=0.3))
    goal.header.stamp = probe.node.get_clock().now().to_msg()
    probe.goal.publish(goal)
    time.sleep(0.3)
    start = probe.stream(1.5, FR3_JOINTS, [*edge, 0.04])
    assert probe.since(start + 0.3) == [], "a chunk beyond the reach"
    assert "no joint solution" in probe.log()
