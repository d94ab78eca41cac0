"""``franka_driver``: executes action chunks on a Franka arm through franky; publishes joint states.

    ros2 run sdm_controller franka_driver --ros-args --params-file config/franka_driver.yaml \
        -p robot_ip:=172.16.0.2
    python -m sdm_controller.ros.franka_driver --ros-args -p robot_ip:=127.0.0.2   # franky-sim

Topics (relative, remappable):

* in: ``action_chunk`` (``trajectory_msgs/JointTrajectory``, reliable): point k is due at
  ``header.stamp + time_from_start``; points already past are skipped; a newer chunk replaces
  the running one from the commanded state (no jump in commanded velocity). Joints in any
  order: ``fr3_joint1..7`` required, ``fr3_finger_joint1`` (one finger's opening, m) optional.
* out: ``joint_states`` (``sensor_msgs/JointState``, reliable depth 1) at ``control_rate_hz``,
  stamped with the node clock when franky's state was read: the arm, ``fr3_finger_joint1`` and
  ``fr3_finger_joint2`` (gripper width / 2; left out when there is no gripper);
  ``~/commanded`` (``sensor_msgs/JointState``): the tracked position and the velocity sent to
  franky, for monitoring; ``/diagnostics`` (1 Hz).
* service ``~/recover`` (``std_srvs/Trigger``): franky's error recovery; afterwards the arm
  waits for a chunk stamped after the recovery. The call blocks the node's ROS callbacks (at most
  10 s); chunks that arrive meanwhile are older than the recovery and are refused anyway.
* service ``~/stop`` (``std_srvs/Trigger``): brake to rest and refuse every chunk (as rejected
  ``stopped``) until ``~/recover``, whatever the policy keeps publishing: a soft stop for an
  operator, and how an evaluation holds the arm between episodes. A reconnect keeps it.

ROS callbacks run in a ``SingleThreadedExecutor`` (each is short); the control thread streams to
franky and publishes the joint states on its own.

Everything that decides lives in ``sdm_controller.driver`` (see ``core`` for the modes, limits
and watchdog, ``control_loop`` for the thread that streams at ``control_rate_hz`` and
reconnects, ``franky_link`` for franky). Parameters: ``sdm_controller.driver.settings``;
all but ``robot_ip``, ``control_rate_hz`` and ``gripper_enabled`` apply live. The node exits
with status 1 when ``robot_ip`` is empty or the robot cannot be reached at start.

``joint_states`` keep flowing while the robot is faulted or recovering; while the connection is
down nothing is published (``/diagnostics`` says so). Ctrl-C shuts down in order: the executor,
then the control thread (braked, ended and joined), then franky's objects (motion stopped,
released), then the node and rclpy; further SIGINTs during that are ignored.
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from sdm_controller.common.fr3 import FR3_ARM_JOINTS, FR3_GRIPPER_JOINT, FR3_MIRROR_GRIPPER_JOINT
from sdm_controller.common.parameter_spec import SettingsError
from sdm_controller.driver.control_loop import ControlLoop, RobotSample
from sdm_controller.driver.core import ERROR, Command, DriverCore, array_text
from sdm_controller.driver.franky_link import FrankyLink, LinkDown
from sdm_controller.driver.settings import PARAMETERS, START_ONLY, DriverSettings
from sdm_controller.ros.conversions import ns_to_stamp, report_to_diagnostics, stamp_to_ns
from sdm_controller.ros.node_main import TIMELY_SWITCH_INTERVAL_S, run_node
from sdm_controller.ros.parameters import declare_parameters, descriptor, parameter_changes
from sdm_controller.ros.throttled_log import ThrottledLog
from sdm_controller.ros.topics import ACTION_CHUNK, COMMAND_QOS, DIAGNOSTICS, JOINT_STATES, STATE_QOS

NODE_NAME = "franka_driver"
JOINT_STATE_NAMES = [*FR3_ARM_JOINTS, FR3_GRIPPER_JOINT, FR3_MIRROR_GRIPPER_JOINT]
THROTTLE_S = 2.0


class StartError(Exception):
    """The node cannot run (no robot_ip, robot unreachable); the message says why."""


class FrankaDriver(Node):
    """Thin adapter around :class:`~sdm_controller.driver.core.DriverCore` and its control loop."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._declare(PARAMETERS)
        values = {spec.name: self._values[spec.name] for spec in PARAMETERS}
        try:
            self._settings = DriverSettings().updated(values)
        except SettingsError as exc:
            raise StartError(f"invalid parameter file or override: {exc}") from None
        if not self._settings.robot_ip:
            raise StartError(
                "parameter 'robot_ip' is empty: give the robot's (or franky-sim's) address, e.g. "
                "--ros-args -p robot_ip:=172.16.0.2"
            )
        self.core = DriverCore(self._settings)
        self.link = FrankyLink(self._settings.robot_ip, gripper=self._settings.gripper_enabled)
        self.loop = ControlLoop(self.link, self.core, self._now_ns, on_sample=self._on_sample, log=self._log)
        self._log_throttled = ThrottledLog(self.get_logger(), THROTTLE_S)

        self._joint_pub = self.create_publisher(JointState, JOINT_STATES, STATE_QOS)
        self._commanded_pub = self.create_publisher(JointState, "~/commanded", STATE_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.create_subscription(JointTrajectory, ACTION_CHUNK, self._on_chunk, COMMAND_QOS)
        self.create_service(Trigger, "~/recover", self._on_recover)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_timer(1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _declare(self, specs) -> None:
        read_only = [spec for spec in specs if spec.name in START_ONLY]
        self._values = declare_parameters(self, [spec for spec in specs if spec.name not in START_ONLY])
        for spec in read_only:  # start-only: ``ros2 param set`` is refused by rclpy itself
            desc: ParameterDescriptor = descriptor(spec)
            desc.read_only = True
            self._values[spec.name] = self.declare_parameter(spec.name, spec.default, desc).value

    def start(self) -> None:
        """Connect (raises StartError) and start streaming."""
        try:
            self.loop.connect_once()
        except LinkDown as exc:
            raise StartError(str(exc)) from None
        self.get_logger().info(
            f"connected to the robot at '{self._settings.robot_ip}'; streaming at "
            f"{self._settings.control_rate_hz:g} Hz; waiting for action chunks"
        )
        if self.link.gripper_error:
            self.get_logger().warning(self.link.gripper_error)
        self.loop.start()

    # -- callbacks ----------------------------------------------------------------------------
    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = self._now_ns()
        points = msg.points
        rejected = self.core.offer_chunk(
            stamp_to_ns(msg.header.stamp),
            list(msg.joint_names),
            [stamp_to_ns(p.time_from_start) for p in points],
            [list(p.positions) for p in points],
            [list(p.velocities) for p in points],
            now,
        )
        if rejected is not None:
            self._log_throttled.warning(
                f"rejected {rejected.reason}", f"rejected a chunk on '{msg_topic(self)}': {rejected}; the arm holds"
            )

    def _on_sample(self, sample: RobotSample, command: Command) -> None:
        """Control thread: publish what was read and what was commanded."""
        if not self.context.ok():
            return
        stamp = ns_to_stamp(sample.stamp_ns)
        if sample.gripper_width is None:  # no gripper: the fingers are left out, not made up
            state = JointState(name=list(FR3_ARM_JOINTS), position=sample.q.tolist(), velocity=sample.dq.tolist())
        else:
            finger = sample.gripper_width / 2.0
            state = JointState(
                name=JOINT_STATE_NAMES,
                position=[*sample.q.tolist(), finger, finger],
                velocity=[*sample.dq.tolist(), 0.0, 0.0],
            )
        state.header.stamp = stamp
        commanded = JointState(name=list(FR3_ARM_JOINTS))
        commanded.header.stamp = stamp
        commanded.position = command.q_desired.tolist()
        commanded.velocity = command.velocity.tolist()
        try:
            self._joint_pub.publish(state)
            self._commanded_pub.publish(commanded)
        except Exception:  # noqa: BLE001 - shutting down: the publishers are gone
            pass

    def _on_recover(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.loop.recover()
        self.get_logger().info(f"~/recover: {response.message}")
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.core.stop("~/stop called")
        response.success = True
        response.message = "stopped: the arm brakes to rest and every chunk is refused until ~/recover"
        self.get_logger().info(f"~/stop: {response.message}")
        return response

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            proposal = self._settings.updated(parameter_changes(parameters))
        except SettingsError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._settings = proposal
        self.core.update_settings(proposal)
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        now = self._now_ns()
        report = self.core.report(now)
        p50, worst = self.loop.period_stats()
        clock_rate = self.loop.robot_clock_rate
        report.values = [
            ("robot_ip", self._settings.robot_ip),
            ("connected", str(self.loop.connected).lower()),
            ("connection", self.loop.connection_message),
            ("reconnects", str(self.loop.reconnects)),
            ("robot fault", self.loop.fault),
            ("gripper", self.link.gripper_error or ("connected" if self.link.gripper is not None else "off")),
            ("control period p50_ms", f"{p50 * 1e3:.2f}"),
            ("control period max_ms", f"{worst * 1e3:.2f}"),
            ("robot clock rate", "unknown" if clock_rate is None else f"{clock_rate:.3f}"),
            ("joint_states", "publishing" if self.loop.publishing else "stopped: robot disconnected"),
            *report.values,
            ("velocity limit franky", _franky_limit(self.link, "velocity")),
            ("acceleration limit franky", _franky_limit(self.link, "acceleration")),
            ("jerk limit franky", _franky_limit(self.link, "jerk")),
        ]
        if not self.loop.connected:
            report.level, report.message = ERROR, f"robot disconnected: {self.loop.connection_message}"
        elif self.loop.fault:
            report.level, report.message = ERROR, f"robot fault: {self.loop.fault}; call ~/recover"
        name = f"{self.get_name()}: driver"
        self._diagnostics_pub.publish(report_to_diagnostics(report, name, self._settings.robot_ip, now))

    # -- helpers ------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _log(self, level: str, message: str) -> None:
        # one call site per severity: rclpy refuses a call site whose severity changes
        logger = self.get_logger()
        if level == "info":
            logger.info(message)
        elif level == "warn":
            logger.warning(message)
        else:
            logger.error(message)

    def close(self) -> bool:
        """Brake to rest, end and join the control thread, release franky (before ``destroy_node``).

        False when the control thread did not end (blocked in franky); franky is then left alone."""
        return self.loop.stop()


def _franky_limit(link: FrankyLink, kind: str) -> str:
    limits = link.franky_limits
    if limits is None:
        return "unknown (not connected yet)"
    return array_text(getattr(limits, kind))


def msg_topic(node: Node) -> str:
    return node.resolve_topic_name(ACTION_CHUNK)


def main(args: list[str] | None = None) -> None:
    # The control thread wakes every control period and must not wait out Python's default 5 ms GIL
    # switch interval while the executor thread converts a chunk.
    run_node(
        FrankaDriver,
        NODE_NAME,
        args,
        start=FrankaDriver.start,
        start_errors=(StartError,),
        switch_interval_s=TIMELY_SWITCH_INTERVAL_S,
    )


if __name__ == "__main__":
    main()
