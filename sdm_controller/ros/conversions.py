"""Messages ↔ the plain values of ``sdm_controller.control`` (the only module that touches fields).

* ``sensor_msgs/Image`` → :class:`~sdm_controller.common.images.RawImage` (decoding, checks and
  resizing happen in the core, where tests reach them without ROS);
* ``sensor_msgs/JointState`` → (names, positions);
* header stamps ↔ integer nanoseconds (exact: the chunk echoes the observation's stamp);
* :class:`~sdm_controller.control.chunk.ActionChunk` → ``trajectory_msgs/JointTrajectory``;
* :class:`~sdm_controller.control.controller.Report` → ``diagnostic_msgs/DiagnosticArray``.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from sdm_controller.common.images import RawImage
from sdm_controller.common.report import Report
from sdm_controller.control.chunk import ActionChunk

NS = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), NS)
    return Time(sec=sec, nanosec=nanosec)


def ns_to_duration(ns: int) -> Duration:
    sec, nanosec = divmod(int(ns), NS)
    return Duration(sec=sec, nanosec=nanosec)


def image_fields(msg: Image) -> RawImage:
    return RawImage(height=msg.height, width=msg.width, encoding=msg.encoding, step=msg.step, data=msg.data,
                    is_bigendian=bool(msg.is_bigendian))


def joint_state_fields(msg: JointState) -> tuple[list[str], np.ndarray]:
    return list(msg.name), np.asarray(msg.position, dtype=np.float64)


def chunk_to_trajectory(chunk: ActionChunk, frame_id: str = "") -> JointTrajectory:
    """header.stamp = the newest observation's stamp; point k at its ``time_from_start``."""
    msg = JointTrajectory()
    msg.header.stamp = ns_to_stamp(chunk.stamp_ns)
    msg.header.frame_id = frame_id
    msg.joint_names = list(chunk.names)
    velocities = chunk.velocities if chunk.velocities is not None else np.zeros_like(chunk.positions)
    for positions, speeds, offset in zip(chunk.positions, velocities, chunk.time_from_start_ns, strict=True):
        point = JointTrajectoryPoint()
        point.positions = positions.tolist()
        point.velocities = speeds.tolist()
        point.time_from_start = ns_to_duration(int(offset))
        msg.points.append(point)
    return msg


def report_to_diagnostics(report: Report, name: str, hardware_id: str, stamp_ns: int) -> DiagnosticArray:
    status = DiagnosticStatus()
    status.level = bytes([report.level])  # a `byte` field: rclpy takes a length-1 bytes value
    status.name = name
    status.message = report.message
    status.hardware_id = hardware_id
    status.values = [KeyValue(key=key, value=value) for key, value in report.values]
    msg = DiagnosticArray()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.status = [status]
    return msg
