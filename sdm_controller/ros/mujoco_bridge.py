"""``mujoco_bridge``: a simulated FR3 that a driver connects to exactly as to a real one.

    ros2 run sdm_controller mujoco_bridge --ros-args --params-file config/mujoco_bridge.yaml
    python -m sdm_controller.ros.mujoco_bridge --ros-args -p hostname:=127.0.0.2     # pip-only

It runs franky-sim in this process (:class:`~sdm_controller.sim.franka_sim.FrankaSim`: an FR3 on
a table with a cube, a fixed camera) and serves the libfranka protocol on the loopback address
``hostname``; ``franka_driver`` (``robot_ip:=<hostname>``) or ``franky.Robot(hostname)`` connect to
it. The address is logged as ``franky-sim serving on <hostname>`` and kept in the read-only
parameter ``serving_hostname``.

Topics (relative, remappable):

* ``<camera_name>/image_raw`` (``sensor_msgs/Image``, rgb8) and ``<camera_name>/camera_info`` at
  ``camera_rate_hz``, reliable depth 1. The stamp is this node's clock read when the simulated
  state was copied for rendering (the instant the picture shows), not when rendering ended;
* ``task/success`` (``std_msgs/Bool``, reliable, transient local, depth 1): the TCP within
  ``task_tolerance_m`` of the cube's top for ``task_hold_s``; published on every change and at
  10 Hz;
* ``task/goal`` (``geometry_msgs/PointStamped``, reliable, transient local, depth 1): the centre
  of the cube's top face in the robot base frame, published at start and after every reset. It
  is privileged information for scripted experts (``franka_expert``) and evaluation; the policy
  node never reads it, a policy has to find the cube in the image;
* ``/diagnostics`` (1 Hz): real-time factor, render time p50/p99, camera rate, client and task
  state.

Service ``~/reset_task`` (``std_srvs/Trigger``): a new episode: a running motion of the client is
stopped (its move fails as "preempted"), the arm is put home, the cube is placed at random; the
reply's message gives the cube's position.

Parameters apply at start (a change is refused; restart the node). The simulation thread
steps the physics at 1 kHz; a camera thread renders; the executor thread serves ROS.
"""

from __future__ import annotations

import os
import time
from typing import Any

# Headless machines (no X display) render through EGL; MuJoCo reads this when it is first imported.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from geometry_msgs.msg import Point, PointStamped  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from sdm_controller.errors import SdmError  # noqa: E402
from sdm_controller.ros.conversions import ns_to_stamp  # noqa: E402
from sdm_controller.ros.node_main import TIMELY_SWITCH_INTERVAL_S, run_node  # noqa: E402
from sdm_controller.ros.topics import DIAGNOSTICS, IMAGE_QOS, LATCHED_QOS, TASK_GOAL, TASK_SUCCESS, image_topic  # noqa: E402
from sdm_controller.sim.camera import CameraLoop, Frame, SceneCamera  # noqa: E402
from sdm_controller.sim.franka_scene import CAMERA, HOME_HAND_WIDTH, HOME_Q  # noqa: E402
from sdm_controller.sim.franka_sim import FrankaSim, SimConfig  # noqa: E402
from sdm_controller.sim.franka_task import TaskConfig  # noqa: E402

NODE_NAME = "mujoco_bridge"
BASE_FRAME = "fr3_link0"  # the robot's base frame, the world frame of the scene
SUCCESS_POLL_S = 0.02
SUCCESS_REPEAT_S = 0.1
# On shutdown the robot server outlives its client for up to this long: a driver stopping at the
# same time (Ctrl-C of a launch) must not lose its robot mid-motion (franky crashed on that).
CLIENT_LEAVE_TIMEOUT_S = 3.0
NS = 1_000_000_000
OK, WARN, ERROR = 0, 1, 2
_TASK = TaskConfig()

# name, default, description, (low, high) or None
PARAMETERS: tuple[tuple[str, Any, str, tuple[float, float] | None], ...] = (
    ("hostname", "127.0.0.2", "Loopback address the simulated robot serves libfranka on (TCP 1337).", None),
    ("camera_name", CAMERA, "Scene camera to render; also the topic prefix <camera_name>/image_raw.", None),
    ("image_width", 96, "Camera image width (pixels).", (8, 1920)),
    ("image_height", 96, "Camera image height (pixels).", (8, 1080)),
    ("camera_rate_hz", 10.0, "Images per second (wall clock).", (0.1, 120.0)),
    ("realtime", True, "Step the physics at 1 kHz of wall time; false = as fast as the CPU allows.", None),
    ("home_q", list(HOME_Q), "Arm joint positions fr3_joint1..7 (rad) at start and after each reset.", None),
    ("hand_width", HOME_HAND_WIDTH, "Gripper opening (m) at start and after each reset.", (0.0, 0.08)),
    ("task_region_x", list(_TASK.region_x), "[low, high] x of the cube's centre (m, robot base frame).", None),
    ("task_region_y", list(_TASK.region_y), "[low, high] y of the cube's centre (m, robot base frame).", None),
    (
        "task_tolerance_m",
        _TASK.tolerance_m,
        "Success: TCP within this distance of the cube's top centre.",
        (0.001, 0.5),
    ),
    ("task_hold_s", _TASK.hold_s, "Success: ... held for this long (simulated seconds).", (0.0, 10.0)),
    ("task_seed", _TASK.seed, "Seed of the cube placements (same seed, same sequence of episodes).", (0, 2**31 - 1)),
)


def _descriptor(
    default: Any, description: str, bounds: tuple[float, float] | None, read_only: bool = False
) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if bounds is not None and isinstance(default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(bounds[0]), to_value=float(bounds[1]))]
    elif bounds is not None and isinstance(default, int) and not isinstance(default, bool):
        desc.integer_range = [IntegerRange(from_value=int(bounds[0]), to_value=int(bounds[1]), step=1)]
    return desc


def _pair(values: dict[str, Any], name: str) -> tuple[float, float]:
    value = tuple(float(v) for v in values[name])
    if len(value) != 2:
        raise SdmError(f"parameter '{name}' must be [low, high], got {list(value)}")
    return value


def sim_config(values: dict[str, Any]) -> SimConfig:
    """The parameters → :class:`SimConfig` (raises ``SdmError`` naming the parameter)."""
    home = tuple(float(v) for v in values["home_q"])
    if len(home) != 7:
        raise SdmError(f"parameter 'home_q' needs 7 joint positions (fr3_joint1..7), got {len(home)}")
    task = TaskConfig(
        region_x=_pair(values, "task_region_x"),
        region_y=_pair(values, "task_region_y"),
        tolerance_m=float(values["task_tolerance_m"]),
        hold_s=float(values["task_hold_s"]),
        seed=int(values["task_seed"]),
    )
    if not values["hostname"]:
        raise SdmError("parameter 'hostname' is empty; give a loopback address such as 127.0.0.2")
    return SimConfig(
        hostname=str(values["hostname"]),
        home_q=home,
        hand_width=float(values["hand_width"]),
        realtime=bool(values["realtime"]),
        task=task,
    )


def _fmt(values, digits: int = 4) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


class MujocoBridge(Node):
    """ROS face of :class:`FrankaSim`: images, task topic and service, diagnostics."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = {
            name: self.declare_parameter(name, default, _descriptor(default, text, bounds)).value
            for name, default, text, bounds in PARAMETERS
        }
        self.camera_name = str(values["camera_name"])
        self.camera_rate_hz = float(values["camera_rate_hz"])
        width, height = int(values["image_width"]), int(values["image_height"])
        self._image_pub = self.create_publisher(Image, image_topic(self.camera_name), IMAGE_QOS)
        self._info_pub = self.create_publisher(CameraInfo, f"{self.camera_name}/camera_info", IMAGE_QOS)
        self._success_pub = self.create_publisher(Bool, TASK_SUCCESS, LATCHED_QOS)
        self._goal_pub = self.create_publisher(PointStamped, TASK_GOAL, LATCHED_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.sim = FrankaSim(sim_config(values), clock_ns=self._now_ns)
        self.camera: CameraLoop | None = None
        self._image_size = (width, height)

    def start(self) -> None:
        """Serve the simulated robot (``OSError`` if the address is taken) and start the camera.

        Apart from the constructor so that ``close`` (which the runner always calls once the node
        exists) stops whatever of the two already started."""
        self.sim.start()
        width, height = self._image_size
        self.camera = CameraLoop(
            lambda: SceneCamera(self.sim.model, self.camera_name, width, height),
            self.sim.snapshot,
            self._publish_frame,
            self.camera_rate_hz,
            self._now_ns,
        )
        self.camera.start()
        self.declare_parameter(
            "serving_hostname",
            self.sim.hostname,
            _descriptor("", "Address the simulated robot serves on (read only).", None, read_only=True),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._reset_srv = self.create_service(Trigger, "~/reset_task", self._on_reset)
        self._success_published: bool | None = None
        self._success_last_ns = 0
        self._success_timer = self.create_timer(SUCCESS_POLL_S, self._publish_success)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._publish_goal()
        self.get_logger().info(f"franky-sim serving on {self.sim.hostname}")
        self.get_logger().info(
            f"camera '{self.camera_name}' {width}x{height} at {self.camera_rate_hz:g} Hz on "
            f"'{self._image_pub.topic_name}'; task: cube in x {list(self.sim.config.task.region_x)}, "
            f"y {list(self.sim.config.task.region_y)}, tolerance {self.sim.config.task.tolerance_m} m"
        )

    # -- callbacks ------------------------------------------------------------------------------
    def _publish_frame(self, frame: Frame) -> None:
        """Camera thread: one rendered frame → Image + CameraInfo with the snapshot's stamp."""
        if not self.context.ok():
            return
        height, width = frame.image.shape[:2]
        msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
        msg.header.stamp = ns_to_stamp(frame.stamp_ns)
        msg.header.frame_id = f"{self.camera_name}_optical_frame"
        msg.data = frame.image.tobytes()
        info = self._camera_info(msg.header)
        self._image_pub.publish(msg)
        self._info_pub.publish(info)

    def _camera_info(self, header) -> CameraInfo:
        k = self.camera.intrinsics
        info = CameraInfo(header=header, width=k.width, height=k.height, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _publish_success(self) -> None:
        if not self.context.ok():
            return
        now = self._now_ns()
        for success, _ in self.sim.success_changes():
            self._success_pub.publish(Bool(data=success))
            self._success_published, self._success_last_ns = success, now
        current = self.sim.task.success
        if current != self._success_published or now - self._success_last_ns >= SUCCESS_REPEAT_S * NS:
            self._success_pub.publish(Bool(data=current))
            self._success_published, self._success_last_ns = current, now

    def _publish_goal(self) -> None:
        x, y, z = self.sim.task_state.goal_position
        msg = PointStamped(point=Point(x=x, y=y, z=z))
        msg.header.stamp = ns_to_stamp(self._now_ns())
        msg.header.frame_id = BASE_FRAME
        self._goal_pub.publish(msg)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            result = self.sim.reset_task()
        except (TimeoutError, SdmError) as exc:
            response.success = False
            response.message = f"reset failed: {exc}"
            self.get_logger().error(response.message)
            return response
        self._publish_goal()
        x, y, z = result.object_position
        response.success = True
        response.message = f"episode {result.episode}: object at x={x:.4f} y={y:.4f} z={z:.4f}" + (
            "; the client's running motion was stopped" if result.preempted_motion else ""
        )
        self.get_logger().info(f"reset: {response.message}")
        return response

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        names = ", ".join(p.name for p in parameters)
        return SetParametersResult(
            successful=False,
            reason=f"{names}: mujoco_bridge parameters apply at start only; restart the node with the new value",
        )

    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        level, message, values = self.status()
        status = DiagnosticStatus(
            level=bytes([level]), name=f"{self.get_name()}: simulation", message=message, hardware_id=self.sim.hostname
        )
        status.values = [KeyValue(key=key, value=value) for key, value in values]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = ns_to_stamp(self._now_ns())
        self._diagnostics_pub.publish(msg)

    def status(self) -> tuple[int, str, list[tuple[str, str]]]:
        """Diagnostic level, message and key/value pairs (called once a second)."""
        sim, camera, now = self.sim, self.camera, self._now_ns()
        pace = sim.pace()
        p50, p99 = camera.render_ms.percentiles(50, 99)
        rate = camera.rate.rate(now)
        task = sim.task_state
        values = [
            ("hostname", sim.hostname),
            ("client connected", str(sim.client_connected)),
            ("motion running", str(sim.motion_running)),
            ("real_time_factor", f"{pace.real_time_factor:.3f}"),
            ("steps_per_s", f"{pace.steps_per_s:.1f}"),
            ("sim_time_s", f"{task.sim_time:.3f}"),
            ("render latency_p50_ms", f"{p50:.2f}"),
            ("render latency_p99_ms", f"{p99:.2f}"),
            ("camera rate_hz", f"{rate:.2f}"),
            ("camera target_rate_hz", f"{self.camera_rate_hz:g}"),
            ("camera frames", str(camera.frames)),
            ("camera missed", str(camera.missed)),
            ("task episode", str(task.episode)),
            ("task success", str(task.success)),
            ("task episode_success", str(task.episode_success)),
            ("task distance_m", f"{task.distance:.4f}"),
            ("task min_distance_m", f"{task.min_distance:.4f}"),
            ("task object_position", _fmt(task.object_position)),
            ("task tcp_position", _fmt(task.tcp_position)),
        ]
        if sim.error is not None or not sim.running:
            return ERROR, f"simulation stopped: {sim.error}", values
        if camera.error is not None or not camera.alive:
            return ERROR, f"camera stopped: {camera.error}", values
        problems = []
        if pace.real_time_factor < 0.5:
            problems.append(f"simulation runs at {pace.real_time_factor:.2f}x real time")
        if camera.frames > 3 and rate < 0.5 * self.camera_rate_hz:
            problems.append(f"camera at {rate:.1f} Hz of {self.camera_rate_hz:g}")
        if problems:
            return WARN, "; ".join(problems), values
        return OK, f"serving on {sim.hostname}, {'client connected' if sim.client_connected else 'no client'}", values

    # -- helpers ----------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def close(self) -> None:
        """Stop the camera and the simulation (frees the address); before ``destroy_node``."""
        if self.camera is not None:
            self.camera.stop()
        deadline = time.monotonic() + CLIENT_LEAVE_TIMEOUT_S
        while self.sim.client_connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self.sim.stop()


def main(args: list[str] | None = None) -> None:
    # The simulation thread needs the GIL every millisecond; Python's default 5 ms switch interval
    # lets the camera or executor thread keep it for a whole step.
    run_node(
        MujocoBridge,
        NODE_NAME,
        args,
        start=MujocoBridge.start,
        start_errors=(Exception,),  # any start failure (a taken address, a renderer): say why, exit 1
        switch_interval_s=TIMELY_SWITCH_INTERVAL_S,
    )


if __name__ == "__main__":
    main()
