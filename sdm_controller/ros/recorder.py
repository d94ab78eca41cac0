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
episode joins a dataset) is in :mod:`sdm_controller.data.recording`; this node converts messages,
polls the core four times per ``control_period_s`` (frames are taken by stamp, one per period)
and answers the services. ``start_episode`` answers once the episode's first frame is in, so a
caller may start the motion on its reply and the episode holds the pose before it; when no frame
is in within ``START_WAIT_S`` (plus the time a frame may wait for its state and action) the start
fails with the streams' ages and the refusals, and nothing is recorded. ``stop_episode`` stops
sampling, lets the polls complete the frames still waiting for their action (at most
``control_period_s + max_age_s``), and appends the episode to ``output`` before it answers. If
the save fails (e.g. ``output`` holds a dataset with another spec), the episode is kept: set
``output`` and call ``stop_episode`` again, or ``discard_episode``.

Callbacks run on worker threads (``sdm_controller.ros.executors.WorkerThreadsExecutor``, one
callback group per input, the poll timer and the services), so ``stop_episode`` can wait for
the polls while the intake goes on.

Parameters: ``output`` and ``task`` can be changed live; the rest fix what the dataset holds and
are read at start (a change is refused; restart the node).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
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
from sdm_controller.common.report import ERROR, OK, WARN, Report
from sdm_controller.common.stats import RateMeter
from sdm_controller.data.recording import (
    ACTION_SOURCES,
    COMMAND_TYPES,
    JOINT_TRAJECTORY,
    RECORDED,
    TOPIC,
    Episode,
    EpisodeRecorder,
    RecorderSettings,
    append_episode,
    check_dataset,
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
LIVE = ("output", "task")
START_WAIT_S = 2.0  # beyond a frame's own wait: a loaded machine delays the streams and polls

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
    """Thin adapter around :class:`~sdm_controller.data.recording.EpisodeRecorder`."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = {spec.name: _declare(self, spec) for spec in PARAMETERS}
        self.output: str = values.pop("output")
        command_topic = values.pop("command_topic")
        self.settings = RecorderSettings(**values)  # ConfigError: main exits non-zero
        self.core = EpisodeRecorder(self.settings)
        self._log = ThrottledLog(self.get_logger(), THROTTLE_S)
        self._service_lock = threading.Lock()
        self._unsaved: Episode | None = None
        self._episode_index = 0
        self._saved = 0
        self._last_save = ""
        self._dataset = ""  # episodes and frames in output, after the last save
        self._output_error = ""
        self._rates = {
            name: RateMeter()
            for name in ("recorded", "joint_states", "command", *(f"camera {c}" for c in self.settings.cameras))
        }

        for camera in self.settings.cameras:
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
        if self.settings.action_source == TOPIC:
            kind = JointTrajectory if self.settings.command_type == JOINT_TRAJECTORY else JointState
            self._command_sub = self.create_subscription(
                kind, command_topic, self._on_command, RECORDER_SENSOR_QOS,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._poll_timer = self.create_timer(
            self.settings.control_period_s / POLLS_PER_PERIOD,
            self._on_poll,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/start_episode", self._on_start, callback_group=services)
        self.create_service(Trigger, "~/stop_episode", self._on_stop, callback_group=services)
        self.create_service(Trigger, "~/discard_episode", self._on_discard, callback_group=services)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._check_output()
        source = (
            f"commands on '{self._command_sub.topic_name}' ({self.settings.command_type})"
            if self._command_sub
            else "the joint positions one control period later"
        )
        s = self.settings
        self.get_logger().info(
            f"ready: cameras {list(s.cameras)} at {s.image_width}x{s.image_height}, state {s.state_key} "
            f"({len(s.state_joints)} joints), action from {source}, every {s.control_period_s} s, "
            f"into '{self.output or '(output unset)'}'"
        )

    # -- parameters --------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        fixed = [p.name for p in parameters if p.name not in LIVE]
        if fixed:
            return SetParametersResult(
                successful=False,
                reason=f"{fixed} fix what the dataset holds and are read at "
                f"start; restart the node to change them (live: {list(LIVE)})",
            )
        for param in parameters:
            if param.type_ != Parameter.Type.STRING:
                return SetParametersResult(successful=False, reason=f"'{param.name}' must be a string")
        for param in parameters:
            if param.name == "output":
                self.output = param.value
            elif param.name == "task":
                self.settings = replace(self.settings, task=param.value)
        self._check_output()
        return SetParametersResult(successful=True)

    def _check_output(self) -> str:
        """'' when episodes can be appended to ``output``; else the reason (also logged and diagnosed)."""
        if not self.output:
            error = "parameter 'output' is empty; set it to a dataset folder (e.g. /data/teleop.zarr)"
        else:
            try:
                existing = check_dataset(self.output, self.settings.dataset_attrs())
                error = ""
                self._dataset = f"{existing} episodes" if existing else "new"
            except SdmError as exc:
                error = str(exc)
        if error and error != self._output_error:
            self.get_logger().error(error)
        self._output_error = error
        return error

    # -- intake ------------------------------------------------------------------------------------
    def _on_image(self, camera: str, msg: Image) -> None:
        self._rates[f"camera {camera}"].add(self._now_ns())
        self.core.add_image(camera, stamp_to_ns(msg.header.stamp), image_fields(msg))

    def _on_joint_state(self, msg: JointState) -> None:
        self._rates["joint_states"].add(self._now_ns())
        names, positions = joint_state_fields(msg)
        try:
            self.core.add_joint_state(stamp_to_ns(msg.header.stamp), names, positions)
        except RejectedInput as exc:
            topic = self._joint_sub.topic_name
            self._log.warning(f"joint_states {exc.reason}", f"refused a message on '{topic}': {exc}")

    def _on_command(self, msg: JointState | JointTrajectory) -> None:
        self._rates["command"].add(self._now_ns())
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
        now = self._now_ns()
        for result in self.core.poll(now):
            if result.status == RECORDED:
                self._rates["recorded"].add(now)
            else:
                self._log.warning(f"sample {result.status}", f"sample refused ({result.status}): {result.message}")

    # -- services ----------------------------------------------------------------------------------
    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._service_lock:
            if self._unsaved is not None:
                return _reply(
                    response,
                    False,
                    f"an unsaved episode ({self._unsaved.frames} frames) is waiting: "
                    "call stop_episode to save it or discard_episode",
                )
            error = self._check_output()
            if error:
                return _reply(response, False, error)
            try:
                self.core.start(self._now_ns())
            except SdmError as exc:
                return _reply(response, False, str(exc))
            # Answer once the first frame is in, so that a caller who starts the motion on this reply
            # (an episode client recovering the robot, an operator) finds the pose before it in the
            # episode. Without a frame the start fails: an episode whose beginning is missing is wrong data.
            waited = self._wait_for_polls(lambda: self.core.frames > 0, START_WAIT_S)
            if not self.core.frames:
                refused = dict(self.core.refused)
                self.core.discard()
                ages = {name: "never" if age is None else f"{age:.0f} ms"
                        for name, age in self.core.stream_ages_ms(self._now_ns()).items()}
                message = (
                    f"no frame recorded within {waited:.1f} s of the start, so no episode was started "
                    f"(stream ages {ages}; refused samples {refused or 'none'}"
                    f"{'; last: ' + self.core.last_refusal if refused else ''}); call start_episode again "
                    "once the streams flow"
                )
                self.get_logger().warning(message)
                return _reply(response, False, message)
            self._episode_index += 1
            message = (
                f"recording episode {self._episode_index} every {self.settings.control_period_s} s "
                f"into '{self.output}' ({self._dataset}); its first frame is in"
            )
            self.get_logger().info(message)
            return _reply(response, True, message)

    def _wait_for_polls(self, done: Callable[[], bool], extra_s: float = 0.2) -> float:
        """Let the poll timer complete frames until ``done()`` (a frame waits at most
        ``control_period_s + max_age_s`` for its state and action; ``extra_s`` more for the polls
        themselves). Returns the seconds waited."""
        start = time.monotonic()
        deadline = start + self.settings.control_period_s + self.settings.max_age_s + extra_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return time.monotonic() - start

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._service_lock:
            if self._unsaved is None:
                if not self.core.recording:
                    return _reply(response, False, "not recording: call start_episode first")
                self.core.stop()
                self._wait_for_polls(lambda: not self.core.pending)
                episode = self.core.finish(self._now_ns())
                if episode.frames == 0:
                    return _reply(
                        response,
                        False,
                        f"the episode has no frames (refused samples {episode.refused}; "
                        f"last reason: {self.core.last_refusal}); nothing saved",
                    )
                self._unsaved = episode
            episode = self._unsaved
            refused = sum(episode.refused.values())
            try:
                result = append_episode(self.output, episode, self.settings) if self.output else None
            except SdmError as exc:
                return _reply(response, False, self._kept(episode, str(exc)))
            if result is None:
                return _reply(response, False, self._kept(episode, "parameter 'output' is empty"))
            self._unsaved = None
            self._saved += 1
            self._dataset = f"{result.episodes} episodes, {result.total_frames} frames"
            self._last_save = f"{result.seconds:.2f} s"
            detail = f"{refused} samples refused {dict(episode.refused)}" if refused else "no sample refused"
            message = (
                f"saved {episode.frames} frames ({detail}) as episode {result.episodes} to '{result.path}' "
                f"({result.total_frames} frames in all, {result.seconds:.2f} s to save)"
            )
            self.get_logger().info(message)
            return _reply(response, True, message)

    def _kept(self, episode: Episode, error: str) -> str:
        message = (
            f"could not save the episode: {error}. The episode ({episode.frames} frames) is kept: fix this "
            "(e.g. set 'output') and call stop_episode again, or call discard_episode"
        )
        self.get_logger().error(message)
        return message

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._service_lock:
            if self._unsaved is not None:
                frames, self._unsaved = self._unsaved.frames, None
            elif self.core.recording or self.core.stopping:
                frames = self.core.discard()
            else:
                return _reply(response, False, "no episode to discard")
            return _reply(response, True, f"discarded the episode ({frames} frames)")

    # -- diagnostics -------------------------------------------------------------------------------
    def state(self) -> str:
        if self._unsaved is not None:
            return "unsaved"
        return "recording" if self.core.recording else "stopping" if self.core.stopping else "idle"

    def report(self, now_ns: int) -> Report:
        core = self.core
        state = self.state()
        values = [
            ("state", state),
            ("output", self.output),
            ("dataset", self._dataset),
            ("episode_frames", str(core.frames if self._unsaved is None else self._unsaved.frames)),
            ("episodes_saved", str(self._saved)),
            ("recorded_rate_hz", f"{self._rates['recorded'].rate(now_ns):.2f}"),
            ("target_rate_hz", f"{1.0 / self.settings.control_period_s:.2f}"),
            ("refused_samples", str(sum(core.refused.values()))),
            ("refused_samples_total", str(sum(core.refused_total.values()))),
            ("last_refusal", core.last_refusal),
            ("last_save", self._last_save),
        ]
        values += [(f"refused {reason}", str(n)) for reason, n in sorted(core.refused_total.items())]
        values += [(f"rejected {key}", str(n)) for key, n in sorted(core.rejected_inputs.items())]
        for stream, age in core.stream_ages_ms(now_ns).items():
            values.append((f"{stream} rate_hz", f"{self._rates[stream].rate(now_ns):.1f}"))
            values.append((f"{stream} age_ms", "none" if age is None else f"{age:.0f}"))
        if self._output_error and state != "recording":
            return Report(ERROR, self._output_error, values)
        if state == "unsaved":
            return Report(ERROR, "an episode could not be saved", values)
        recent_refused = (
            core.recording
            and core.last_refusal
            and self._rates["recorded"].rate(now_ns) < 0.5 / (self.settings.control_period_s)
        )
        if recent_refused:
            return Report(WARN, f"samples refused: {core.last_refusal}", values)
        message = f"recording episode {self._episode_index}: {core.frames} frames" if state == "recording" else state
        return Report(OK, message, values)

    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        now = self._now_ns()
        name = f"{self.get_name()}: recording"
        self._diagnostics_pub.publish(
            report_to_diagnostics(self.report(now), name, self.get_fully_qualified_name(), now)
        )

    # -- helpers -----------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def close(self) -> None:
        state = self.state()
        if state != "idle":
            frames = self.core.frames if self._unsaved is None else self._unsaved.frames
            self.get_logger().warning(f"shutting down with an episode {state} ({frames} frames): it is not saved")


def _reply(response: Trigger.Response, success: bool, message: str) -> Trigger.Response:
    response.success = success
    response.message = message
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
