"""``recorder``: camera frames, joint states and an action source in, dataset episodes out.

    ros2 run sdm_controller recorder --ros-args --params-file config/recorder.yaml \
        -p output:=/data/teleop.zarr
    python -m sdm_controller.ros.recorder --ros-args -p output:=...       # pip-only installs

    ros2 service call /recorder/start_episode std_srvs/srv/Trigger
    ros2 service call /recorder/stop_episode std_srvs/srv/Trigger      # saves; says frames and path
    ros2 service call /recorder/discard_episode std_srvs/srv/Trigger

Topics (relative, remappable): ``<camera>/image_raw`` (``sensor_msgs/Image``) per name in
``cameras``, ``joint_states`` (``sensor_msgs/JointState``), and with ``action_source: topic`` the
``command_topic`` (``sensor_msgs/JointState`` or ``trajectory_msgs/JointTrajectory`` per
``command_type``); all best effort, so reliable and best-effort publishers both match. Out:
``/diagnostics`` at 1 Hz (state, frames, rates, stream ages, refused samples by reason).

Every decision (which frame, which joint state, which action, when a sample is refused, how an
episode joins a dataset) is in :mod:`sdm_controller.data.recording`, and what the services do and
answer in :mod:`sdm_controller.data.episode_session`; this node converts messages, polls the core
four times per ``control_period_s`` (frames are taken by stamp, one per period) and passes the
service calls on. ``start_episode`` answers once the episode's first frame is in (else it fails
with the streams' ages and records nothing); ``stop_episode`` appends the episode to ``output``
before it answers, and keeps it when the save fails (set ``output`` and call it again, or
``discard_episode``).

Callbacks run on worker threads (``sdm_controller.ros.executors.WorkerThreadsExecutor``, one
callback group per input, the poll timer and the services), so ``stop_episode`` can wait for
the polls while the intake goes on.

Parameters: ``output`` and ``task`` can be changed live; the rest fix what the dataset holds and
are read at start (a change is refused; restart the node).
"""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from sdm_controller.common.fr3 import FR3_JOINTS
from sdm_controller.common.parameter_spec import ParameterSpec
from sdm_controller.common.rejected import RejectedInput
from sdm_controller.data.episode_session import IDLE, EpisodeSession, Reply
from sdm_controller.data.recording import (
    ACTION_SOURCES,
    COMMAND_TYPES,
    JOINT_TRAJECTORY,
    TOPIC,
    EpisodeRecorder,
    RecorderSettings,
)
from sdm_controller.errors import SdmError
from sdm_controller.ros.conversions import image_fields, joint_state_fields, report_to_diagnostics, stamp_to_ns
from sdm_controller.ros.executors import WorkerThreadsExecutor
from sdm_controller.ros.node_main import run_node
from sdm_controller.ros.parameters import descriptor
from sdm_controller.ros.throttled_log import ThrottledLog
from sdm_controller.ros.topics import DIAGNOSTICS, JOINT_STATES, RECORDER_IMAGE_QOS, RECORDER_SENSOR_QOS, image_topic

NODE_NAME = "recorder"
THROTTLE_S = 5.0
POLLS_PER_PERIOD = 4  # sample times are taken by stamp; polling often only shortens the wait

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "output",
        "",
        "Dataset folder (zarr) the episodes are appended to; created at the first save. "
        "An existing dataset must have the same spec. Live.",
    ),
    ParameterSpec("cameras", ("front",), "Camera names; each is read from <camera>/image_raw."),
    ParameterSpec(
        "image_height", 96, "Height of the stored images (centre crop to the aspect, then resize).", range=(8, 2048)
    ),
    ParameterSpec("image_width", 96, "Width of the stored images.", range=(8, 2048)),
    ParameterSpec("state_key", "state", "Low-dim observation key of the joint positions."),
    ParameterSpec("state_joints", FR3_JOINTS, "Joints (joint_states names) whose positions form the state, in order."),
    ParameterSpec("action_joints", (), "Joints of the action vector, in order; empty = state_joints."),
    ParameterSpec(
        "action_source",
        "next_state",
        "next_state: the joint positions measured one control period "
        "after the sample; topic: the commands on command_topic.",
        choices=ACTION_SOURCES,
    ),
    ParameterSpec(
        "command_topic", "commanded_joint_states", "Topic of the commanded joint targets (action_source topic)."
    ),
    ParameterSpec(
        "command_type",
        "joint_state",
        "joint_state: sensor_msgs/JointState position by name (held); "
        "joint_trajectory: trajectory_msgs/JointTrajectory, the point due one control period after the "
        "sample.",
        choices=COMMAND_TYPES,
    ),
    ParameterSpec("control_period_s", 0.1, "Time between recorded frames.", range=(0.001, 10.0)),
    ParameterSpec(
        "max_age_s",
        0.3,
        "A sample time with no reference sample this long after it (node clock) is refused as stale; "
        "also how long a frame waits for its joint state or command.",
        range=(0.001, 10.0),
    ),
    ParameterSpec(
        "max_skew_s",
        0.04,
        "Largest stamp difference between a camera frame or joint state and the sample stamp.",
        range=(0.0, 1.0),
    ),
    ParameterSpec("source", "ros:recorder", "Provenance label stored in the dataset attributes."),
    ParameterSpec("task", "", "Task label stored in the dataset attributes. Live."),
)


def _declare(node: Node, spec: ParameterSpec) -> Any:
    """Like ``sdm_controller.ros.parameters.declare_parameters``, with string arrays for tuple defaults."""
    if isinstance(spec.default, tuple):
        param = node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY, descriptor(spec))
        if param.value is None:
            node.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, list(spec.default))])
        return tuple(node.get_parameter(spec.name).value)
    return node.declare_parameter(spec.name, spec.default, descriptor(spec)).value


class RecorderNode(Node):
    """Thin adapter around :class:`~sdm_controller.data.recording.EpisodeRecorder` (intake, sampling)
    and :class:`~sdm_controller.data.episode_session.EpisodeSession` (episodes, services, diagnostics)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = {spec.name: _declare(self, spec) for spec in PARAMETERS}
        output: str = values.pop("output")
        command_topic = values.pop("command_topic")
        settings = RecorderSettings(**values)  # ConfigError: main exits non-zero
        self.core = EpisodeRecorder(settings)
        self.session = EpisodeSession(self.core, output, self._now_ns, self.get_logger())
        self._log = ThrottledLog(self.get_logger(), THROTTLE_S)

        for camera in settings.cameras:
            self.create_subscription(
                Image,
                image_topic(camera),
                lambda msg, c=camera: self._on_image(c, msg),
                RECORDER_IMAGE_QOS,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        self._joint_sub = self.create_subscription(
            JointState,
            JOINT_STATES,
            self._on_joint_state,
            RECORDER_SENSOR_QOS,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self._command_sub = None
        if settings.action_source == TOPIC:
            kind = JointTrajectory if settings.command_type == JOINT_TRAJECTORY else JointState
            self._command_sub = self.create_subscription(
                kind, command_topic, self._on_command, RECORDER_SENSOR_QOS,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._poll_timer = self.create_timer(
            settings.control_period_s / POLLS_PER_PERIOD,
            self._on_poll,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/start_episode", self._on_start, callback_group=services)
        self.create_service(Trigger, "~/stop_episode", self._on_stop, callback_group=services)
        self.create_service(Trigger, "~/discard_episode", self._on_discard, callback_group=services)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.session.check_output()
        source = (
            f"commands on '{self._command_sub.topic_name}' ({settings.command_type})"
            if self._command_sub
            else "the joint positions one control period later"
        )
        s = settings
        self.get_logger().info(
            f"ready: cameras {list(s.cameras)} at {s.image_width}x{s.image_height}, state {s.state_key} "
            f"({len(s.state_joints)} joints), action from {source}, every {s.control_period_s} s, "
            f"into '{output or '(output unset)'}'"
        )

    # -- parameters --------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            self.session.update({param.name: param.value for param in parameters})
        except SdmError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # -- intake ------------------------------------------------------------------------------------
    def _on_image(self, camera: str, msg: Image) -> None:
        self.session.rates[f"camera {camera}"].add(self._now_ns())
        self.core.add_image(camera, stamp_to_ns(msg.header.stamp), image_fields(msg))

    def _on_joint_state(self, msg: JointState) -> None:
        self.session.rates["joint_states"].add(self._now_ns())
        names, positions = joint_state_fields(msg)
        try:
            self.core.add_joint_state(stamp_to_ns(msg.header.stamp), names, positions)
        except RejectedInput as exc:
            topic = self._joint_sub.topic_name
            self._log.warning(f"joint_states {exc.reason}", f"refused a message on '{topic}': {exc}")

    def _on_command(self, msg: JointState | JointTrajectory) -> None:
        self.session.rates["command"].add(self._now_ns())
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            if isinstance(msg, JointTrajectory):
                points = [(stamp_to_ns(p.time_from_start), list(p.positions)) for p in msg.points]
                command = self.core.trajectory_command(stamp, list(msg.joint_names), points)
            else:
                names, positions = joint_state_fields(msg)
                command = self.core.joint_state_command(stamp, names, positions)
        except RejectedInput as exc:
            self._log.warning(f"command {exc.reason}", f"refused a message on '{self._command_sub.topic_name}': {exc}")
            return
        self.core.add_command(command)

    def _on_poll(self) -> None:
        for result in self.session.poll(self._now_ns()):
            self._log.warning(f"sample {result.status}", f"sample refused ({result.status}): {result.message}")

    # -- services ----------------------------------------------------------------------------------
    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return _reply(response, self.session.start())

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return _reply(response, self.session.stop())

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return _reply(response, self.session.discard())

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        now = self._now_ns()
        name = f"{self.get_name()}: recording"
        self._diagnostics_pub.publish(
            report_to_diagnostics(self.session.report(now), name, self.get_fully_qualified_name(), now)
        )

    # -- helpers -----------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def close(self) -> None:
        state = self.session.state
        if state != IDLE:
            self.get_logger().warning(
                f"shutting down with an episode {state} ({self.session.episode_frames} frames): it is not saved"
            )


def _reply(response: Trigger.Response, reply: Reply) -> Trigger.Response:
    response.success = reply.success
    response.message = reply.message
    return response


def main(args: list[str] | None = None) -> None:
    # stop_episode waits for intake to drain, so callbacks must run in parallel
    run_node(
        RecorderNode,
        NODE_NAME,
        args,
        start_errors=(SdmError,),  # a parameter that cannot work: say which, exit 2
        start_error_code=2,
        make_executor=lambda: WorkerThreadsExecutor(num_threads=4),
    )


if __name__ == "__main__":
    main()
