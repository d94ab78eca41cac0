"""A node that does no work: the floor under ``policy_node``'s overhead in ``node_latency.py``.

It subscribes to the same topics with the same QoS as ``policy_node`` and, as soon as both
cameras and the joint state of one stamp have arrived, publishes a chunk of the same shape
(8 joints x 16 points) with that stamp, plus a ``cycle_timing`` record with an engine time of 0.
No decoding, no engine, no limits: what ``node_latency.py`` measures through it is rclpy and DDS
between two Python processes on this machine, the part of the overhead the node cannot remove.
"""

from __future__ import annotations

import sys

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sdm_controller.common.fr3 import FR3_JOINTS
from sdm_controller.ros.conversions import ns_to_duration, stamp_to_ns
from sdm_controller.ros.node_main import TIMELY_SWITCH_INTERVAL_S, run_node
from sdm_controller.ros.topics import ACTION_CHUNK, COMMAND_QOS, JOINT_STATES, SENSOR_QOS, image_topic

CAMERAS = ("wrist", "scene")
POINTS = 16
PERIOD_NS = 100_000_000


class TransportFloorNode(Node):
    """Echoes each complete observation (2 frames + joints of one stamp) as a chunk."""

    def __init__(self) -> None:
        super().__init__("policy_node")  # the name node_latency.py reads cycle_timing under
        self._seen: dict[int, int] = {}  # stamp -> samples of it received
        self._chunks = self.create_publisher(JointTrajectory, ACTION_CHUNK, COMMAND_QOS)
        self._timing = self.create_publisher(Float64MultiArray, "~/cycle_timing", 10)
        for camera in CAMERAS:
            self.create_subscription(Image, image_topic(camera), self._on_sample, SENSOR_QOS)
        self.create_subscription(JointState, JOINT_STATES, self._on_sample, SENSOR_QOS)

    def _on_sample(self, msg: Image | JointState) -> None:
        stamp = stamp_to_ns(msg.header.stamp)
        self._seen[stamp] = self._seen.get(stamp, 0) + 1
        if self._seen[stamp] < len(CAMERAS) + 1:
            return
        del self._seen[stamp]
        for old in [s for s in self._seen if s < stamp]:  # samples lost on the way: forget them
            del self._seen[old]
        chunk = JointTrajectory(joint_names=list(FR3_JOINTS))
        chunk.header.stamp = msg.header.stamp
        for k in range(POINTS):
            chunk.points.append(JointTrajectoryPoint(
                positions=[0.0] * len(FR3_JOINTS), velocities=[0.0] * len(FR3_JOINTS),
                time_from_start=ns_to_duration((k + 1) * PERIOD_NS),
            ))  # fmt: skip
        self._chunks.publish(chunk)
        sec, nanosec = divmod(stamp, 1_000_000_000)
        self._timing.publish(Float64MultiArray(data=[float(sec), float(nanosec), 0.0, 0.0]))

    def close(self) -> None:
        """Nothing to release."""


def main(args: list[str] | None = None) -> None:
    run_node(TransportFloorNode, "transport_floor", args, switch_interval_s=TIMELY_SWITCH_INTERVAL_S)


if __name__ == "__main__":
    main(sys.argv)
