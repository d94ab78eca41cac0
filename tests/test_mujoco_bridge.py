"""mujoco_bridge as a real process: a real ``franky.Robot`` drives the simulated arm over the
libfranka protocol while this process receives the camera images, the task topic and the
diagnostics over DDS and calls the reset service.

Loopback addresses 127.0.0.21-24 belong to this file (test_franka_scene uses 127.0.0.25, the
driver's tests 127.0.0.3x). Discovery stays on this machine and on a private domain
(``conftest``); the node processes inherit both settings.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
franky = pytest.importorskip("franky")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from node_process import REPO, NodeProcess, spun_node, stamp_ns, wait_for  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from sdm_controller.sim.franka_ik import TcpKinematics  # noqa: E402
from sdm_controller.sim.franka_scene import HOME_Q, work_cell_model  # noqa: E402

pytestmark = pytest.mark.ros

HOSTNAME = "127.0.0.21"
RESTART_HOSTNAME = "127.0.0.22"
CAMERA_HZ = 10.0
TOLERANCE_M = 0.03
STATUS = "mujoco_bridge: simulation"
OBJECT = re.compile(r"object at x=([-\d.]+) y=([-\d.]+) z=([-\d.]+)")


class BridgeProcess(NodeProcess):
    """``python -m sdm_controller.ros.mujoco_bridge`` on config/mujoco_bridge.yaml."""

    def __init__(self, log: Path, *ros_args: str) -> None:
        super().__init__("mujoco_bridge", log, "--params-file", str(REPO / "config" / "mujoco_bridge.yaml"), *ros_args)

    def wait_serving(self, hostname: str, timeout: float = 60.0) -> None:
        def serving():
            assert self.proc.poll() is None, f"the bridge exited ({self.proc.returncode}):\n{self.log()}"
            return f"franky-sim serving on {hostname}" in self.log_path.read_text()

        wait_for(serving, timeout, f"'franky-sim serving on {hostname}'", self.log)


class Recorder:
    """Images (receive time, message), camera infos, success values and diagnostics as they arrive."""

    def __init__(self, node: Node) -> None:
        self.lock = threading.Lock()
        self.images: list[tuple[int, Image]] = []
        self.infos: list[CameraInfo] = []
        self.success: list[bool] = []
        self.goals: list[np.ndarray] = []
        self.diagnostics: dict[str, tuple[float, object]] = {}
        self.clock = node.get_clock()
        node.create_subscription(Image, "front/image_raw", self._on_image, 20)
        node.create_subscription(CameraInfo, "front/camera_info", lambda m: self._add(self.infos, m), 20)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        node.create_subscription(Bool, "task/success", lambda m: self._add(self.success, m.data), latched)
        node.create_subscription(PointStamped, "task/goal", self._on_goal, latched)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _add(self, items: list, value) -> None:
        with self.lock:
            items.append(value)

    def _on_goal(self, msg: PointStamped) -> None:
        self._add(self.goals, np.array([msg.point.x, msg.point.y, msg.point.z]))

    def _on_image(self, msg: Image) -> None:
        self._add(self.images, (self.clock.now().nanoseconds, msg))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.name] = (time.monotonic(), status)

    def images_since(self, t_ns: int) -> list[tuple[int, Image]]:
        with self.lock:
            return [(received, msg) for received, msg in self.images if received >= t_ns]

    def latest_goal(self) -> np.ndarray | None:
        with self.lock:
            return self.goals[-1] if self.goals else None

    def latest_success(self) -> bool | None:
        with self.lock:
            return self.success[-1] if self.success else None

    def fresh_status(self, since: float):
        with self.lock:
            received, status = self.diagnostics.get(STATUS, (-1.0, None))
        return status if received > since else None


# -- IK for the test's own motion ------------------------------------------------------------------
@pytest.fixture(scope="module")
def kinematics() -> TcpKinematics:
    """TCP kinematics on a private copy of the scene's model."""
    return TcpKinematics(work_cell_model())


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ros():
    with spun_node("mujoco_bridge_tester") as node:
        yield node, Recorder(node)


@pytest.fixture(scope="module")
def bridge(ros, tmp_path_factory):
    process = BridgeProcess(
        tmp_path_factory.mktemp("logs") / "mujoco_bridge.log",
        "-p",
        f"hostname:={HOSTNAME}",
        "-p",
        f"camera_rate_hz:={CAMERA_HZ}",
        "-p",
        f"task_tolerance_m:={TOLERANCE_M}",
        "-p",
        "task_hold_s:=0.2",
        "-p",
        "task_seed:=7",
    )
    try:
        process.wait_serving(HOSTNAME)
        wait_for(lambda: len(ros[1].images) >= 3, 30, "the first images", process.log)
        yield process
    finally:
        process.stop()


def call(node: Node, client, request, timeout: float = 20.0):
    assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
    future = client.call_async(request)
    wait_for(future.done, timeout, f"a reply from {client.srv_name}")
    return future.result()


def reset(node: Node, log) -> tuple[np.ndarray, str]:
    client = node.create_client(Trigger, "mujoco_bridge/reset_task")
    try:
        reply = call(node, client, Trigger.Request())
    finally:
        node.destroy_client(client)
    assert reply.success, f"{reply.message}\n{log()}"
    match = OBJECT.search(reply.message)
    assert match, reply.message
    return np.array([float(v) for v in match.groups()]), reply.message


# -- tests ------------------------------------------------------------------------------------------
def test_serving_hostname_is_a_read_only_parameter(ros, bridge):
    node, _ = ros
    client = AsyncParameterClient(node, "mujoco_bridge")
    assert client.wait_for_services(timeout_sec=20)
    future = client.get_parameters(["serving_hostname", "hostname", "camera_name"])
    wait_for(future.done, 20, "get_parameters")
    assert [v.string_value for v in future.result().values] == [HOSTNAME, HOSTNAME, "front"]
    future = client.set_parameters(
        [Parameter("serving_hostname", value="127.0.0.9"), Parameter("camera_rate_hz", value=5.0)]
    )
    wait_for(future.done, 20, "set_parameters")
    assert [r.successful for r in future.result().results] == [False, False]


def test_images_arrive_at_the_camera_rate_with_snapshot_stamps(ros, bridge):
    node, recorder = ros
    start = node.get_clock().now().nanoseconds
    time.sleep(3.0)
    received = recorder.images_since(start)
    # 10 Hz configured; a loaded 2-core machine may drop a few ticks
    assert len(received) >= 0.6 * CAMERA_HZ * 3.0, f"{len(received)} images in 3 s\n{bridge.log()}"
    stamps = [stamp_ns(msg.header.stamp) for _, msg in received]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), "stamps must increase"
    gaps = np.diff(stamps) / 1e9
    assert 0.07 < np.median(gaps) < 0.2, gaps
    for receive_ns, msg in received:
        assert 0 <= receive_ns - stamp_ns(msg.header.stamp) < 0.5e9  # the node clock, at the copy, not later
        assert (msg.height, msg.width, msg.encoding, msg.step) == (96, 96, "rgb8", 288)
        assert len(msg.data) == 96 * 96 * 3
    image = np.frombuffer(received[-1][1].data, np.uint8).reshape(96, 96, 3)
    assert image.std() > 20
    with recorder.lock:
        info = recorder.infos[-1]
    assert (info.width, info.height) == (96, 96) and info.k[0] > 0 and info.k[2] == 48.0
    assert stamp_ns(info.header.stamp) in set(stamps) | {stamp_ns(m.header.stamp) for _, m in recorder.images}


def test_diagnostics_report_pace_render_time_and_task(ros, bridge):
    _, recorder = ros
    status = wait_for(lambda: recorder.fresh_status(time.monotonic() - 0.5), 5, "diagnostics", bridge.log)
    values = {kv.key: kv.value for kv in status.values}
    assert status.level in (b"\x00", b"\x01"), status.message  # OK, or WARN when the machine is overloaded
    assert status.hardware_id == HOSTNAME
    assert float(values["real_time_factor"]) > 0.1
    assert 0 < float(values["render latency_p50_ms"]) <= float(values["render latency_p99_ms"])
    assert float(values["camera rate_hz"]) > 0.5 * CAMERA_HZ
    assert values["task success"] in ("True", "False") and int(values["task episode"]) >= 1
    assert len(values["task object_position"].strip("[]").split(",")) == 3


def test_franky_touches_the_cube_and_success_flips(ros, bridge, kinematics):
    node, recorder = ros
    cube, message = reset(node, bridge.log)
    assert "episode" in message
    wait_for(lambda: recorder.latest_success() is False, 5, "task/success false after the reset", bridge.log)
    robot = franky.Robot(HOSTNAME, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = 0.3
    np.testing.assert_allclose(robot.current_joint_positions, HOME_Q, atol=5e-3)
    top = cube + (0.0, 0.0, 0.025)  # centre of the cube's top face
    above = kinematics.solve(top + (0.0, 0.0, 0.12), HOME_Q)
    touch = kinematics.solve(top + (0.0, 0.0, 0.012), above)  # fingertips just clear of the top
    robot.move(franky.JointWaypointMotion([franky.JointWaypoint(above.tolist()), franky.JointWaypoint(touch.tolist())]))
    wait_for(lambda: recorder.latest_success() is True, 10, "task/success true with the TCP on the cube", bridge.log)
    robot.move(franky.JointWaypointMotion([franky.JointWaypoint(above.tolist())]))
    wait_for(lambda: recorder.latest_success() is False, 10, "task/success false with the TCP away", bridge.log)
    status = wait_for(lambda: recorder.fresh_status(time.monotonic() - 0.2), 5, "diagnostics", bridge.log)
    values = {kv.key: kv.value for kv in status.values}
    assert values["task episode_success"] == "True" and values["client connected"] == "True"

    # a reset while a motion runs: the motion fails as preempted, the arm is home, the cube elsewhere
    robot.move(franky.JointWaypointMotion([franky.JointWaypoint(touch.tolist())]), asynchronous=True)
    time.sleep(0.3)
    moved, message = reset(node, bridge.log)
    assert "motion was stopped" in message
    with pytest.raises(franky.ControlException, match="preempted"):
        robot.join_motion()
    assert np.linalg.norm(moved[:2] - cube[:2]) > 1e-3
    # task/goal (for scripted experts) follows the cube: the centre of its top face
    top = moved + (0.0, 0.0, 0.025)
    wait_for(lambda: (goal := recorder.latest_goal()) is not None and np.allclose(goal, top, atol=1e-3), 5,
             "task/goal at the moved cube's top", bridge.log)
    time.sleep(0.3)
    np.testing.assert_allclose(robot.current_joint_positions, HOME_Q, atol=5e-3)
    robot.move(franky.JointWaypointMotion([franky.JointWaypoint(above.tolist())]))  # the next motion works
    np.testing.assert_allclose(robot.current_joint_positions, above, atol=0.06)
    status = wait_for(lambda: recorder.fresh_status(time.monotonic() - 0.2), 5, "diagnostics", bridge.log)
    values = {kv.key: kv.value for kv in status.values}
    assert values["task episode_success"] == "False"
    assert values["task object_position"].startswith(f"[{moved[0]:.4f}, {moved[1]:.4f}")


def test_a_taken_address_is_a_fatal_start_error(bridge, tmp_path):
    second = BridgeProcess(tmp_path / "second.log", "-p", f"hostname:={HOSTNAME}")
    try:
        assert second.proc.wait(60) != 0
        assert f"cannot serve the simulated robot on {HOSTNAME}" in second.log()
    finally:
        second.stop()


def test_sigterm_stops_the_bridge_and_frees_the_address(ros, tmp_path):
    first = BridgeProcess(tmp_path / "first.log", "-p", f"hostname:={RESTART_HOSTNAME}")
    try:
        first.wait_serving(RESTART_HOSTNAME)
        robot = franky.Robot(RESTART_HOSTNAME, realtime_config=franky.RealtimeConfig.Ignore)
        assert len(robot.current_joint_positions) == 7
        assert first.stop(signal.SIGTERM) == 0, first.log()
    finally:
        first.stop()
    second = BridgeProcess(tmp_path / "second.log", "-p", f"hostname:={RESTART_HOSTNAME}")
    try:
        second.wait_serving(RESTART_HOSTNAME)
        robot = franky.Robot(RESTART_HOSTNAME, realtime_config=franky.RealtimeConfig.Ignore)
        np.testing.assert_allclose(robot.current_joint_positions, HOME_Q, atol=5e-3)
    finally:
        assert second.stop() == 0, second.log()
