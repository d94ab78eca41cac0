"""``policy_node``: camera frames + joint states in, timed action chunks out.

    ros2 run sdm_controller policy_node --ros-args -p artifact:=/path/to/artifact \
        --params-file config/policy_node.yaml
    python -m sdm_controller.ros.policy_node --ros-args -p artifact:=...      # pip-only installs

Topics (relative, remappable):

* in: ``<camera>/image_raw`` (``sensor_msgs/Image``) for each camera the artifact names, and
  ``joint_states`` (``sensor_msgs/JointState``); sensor QoS, latest only (best effort, depth 1);
* out: ``action_chunk`` (``trajectory_msgs/JointTrajectory``, reliable): ``header.stamp`` is the
  newest observation's stamp, point k is due ``(k + 1) * control_period`` after it (see
  ``sdm_controller.control.chunk``), with knot velocities and the last one zero;
  ``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``, 1 Hz); and ``~/cycle_timing``
  (``std_msgs/Float64MultiArray``, one per chunk: the chunk's stamp as sec and nanosec, the
  engine's time and the whole cycle's time in ms, labelled in the layout) for latency profiling.

Cycles run on a thread of their own (``inference``). With ``trigger: timer`` one starts every
``1/inference_rate_hz`` (a late cycle moves the schedule instead of bunching the next ones). With
``trigger: observation`` the sensor callbacks wake the thread, and a cycle starts as soon as every
input has a sample newer than the last chunk's, at most ``inference_rate_hz`` times a second, so
a chunk leaves one engine call after its newest frame arrived.

Threads: ROS I/O (sensor intake, parameter services, diagnostics) runs in a
``SingleThreadedExecutor``; every callback there is short. The engine runs in the inference
thread, so a slow engine never delays sensor intake, and an engine load runs in a plain thread
at a lower OS priority, so the running engine keeps its CPU. (Cycles used to be timer callbacks
in rclpy's ``MultiThreadedExecutor``: on a loaded 2-core machine its spin thread, re-dispatching
callbacks that no worker had started yet, took most of a core away from the engine.)

Parameters (``sdm_controller.control.settings.PARAMETERS``) are validated in one
``add_on_set_parameters_callback``: a refused change returns ``successful=False`` with the reason
and changes nothing. ``artifact``, ``backend``, ``device`` and (teacher) ``sampler``/``sampler_steps``
start a background load of a new engine beside the running one (``sdm_controller.control.engine_swap``);
the running engine keeps publishing and is swapped out at the start of the first cycle after the
new one is warm. Only one load runs at a time (a second engine change is refused until it
finishes). If the load fails after the change was accepted (a failure the quick checks cannot
foresee), the node logs it, reports it in the diagnostics and sets the changed parameters back to
the values in effect. Coupled changes (a new artifact with a different number of joints and new
limit arrays) must be set atomically (``set_parameters_atomically``): ``set_parameters`` applies
them one at a time.

Without a usable artifact at start (none, missing, or one that does not load) the node stays up,
logs the error, reports it on ``/diagnostics`` and publishes nothing until a valid one is set.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory

from sdm_controller.control.controller import (
    ENGINE_ERROR,
    JOINT_STATES,
    LATE,
    NO_POLICY,
    STALE,
    PolicyController,
)
from sdm_controller.control.engine_swap import EngineSwap
from sdm_controller.control.policy_interface import PolicyInterface
from sdm_controller.control.runner import PolicyRunner, load_runner
from sdm_controller.control.settings import PARAMETERS, NodeSettings, SettingsError
from sdm_controller.errors import SdmError
from sdm_controller.policy.observation_spec import ObservationStream
from sdm_controller.ros.conversions import (
    chunk_to_trajectory,
    joint_state_fields,
    report_to_diagnostics,
    stamp_to_ns,
)
from sdm_controller.ros.node_main import TIMELY_SWITCH_INTERVAL_S, run_node
from sdm_controller.ros.observation_sources import OBSERVATION_SOURCES
from sdm_controller.ros.parameters import declare_parameters, parameter_changes
from sdm_controller.ros.throttled_log import ThrottledLog
from sdm_controller.ros.topics import ACTION_CHUNK, COMMAND_QOS, DIAGNOSTICS, SENSOR_QOS
from sdm_controller.ros.topics import JOINT_STATES as JOINT_STATES_TOPIC

NODE_NAME = "policy_node"
THROTTLE_S = 5.0
TIMING_FIELDS = "stamp_sec,stamp_nanosec,engine_ms,cycle_ms"
IDLE_WAKE_S = 0.25  # trigger=observation with no input: how often the thread looks at its settings



class PolicyNode(Node):
    """Thin adapter around :class:`~sdm_controller.control.controller.PolicyController` and
    :class:`~sdm_controller.control.engine_swap.EngineSwap`."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._log = ThrottledLog(self.get_logger(), THROTTLE_S)
        self._closing = threading.Event()
        self._wake = threading.Event()  # set by the sensor callbacks and a finished load
        self._retime = threading.Event()  # set by a settings change and by close
        self._subs_lock = threading.Lock()  # the inference thread (re)subscribes, diagnostics read
        self._frame_subs: dict[str, Any] = {}  # per-stream inputs (cameras, ...) by stream name
        self._frame_kinds: dict[str, str] = {}
        self._joint_sub = None

        values = declare_parameters(self, PARAMETERS)
        try:
            settings = NodeSettings().updated(values)
        except SettingsError as exc:  # e.g. a wrong type in the YAML: run with defaults, say so
            self.get_logger().error(f"invalid parameter file or override: {exc}; using defaults")
            settings = NodeSettings(artifact=str(values.get("artifact", "")))
        self.controller = PolicyController(settings)
        self._engine_swap = EngineSwap(self.controller, settings, load=self._load_engine, on_ready=self._wake.set,
                                       revert=self._set_back, log=self.get_logger())

        self._chunk_pub = self.create_publisher(JointTrajectory, ACTION_CHUNK, COMMAND_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._timing_pub = self.create_publisher(Float64MultiArray, "~/cycle_timing", 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._engine_swap.start()
        self._inference = threading.Thread(target=self._run_cycles, name="inference", daemon=True)
        self._inference.start()

    # -- engine loading and parameters -------------------------------------------------------
    def _load_engine(self, settings: NodeSettings) -> PolicyRunner:
        """Loader thread: say what loads, then build and warm up the engine."""
        self.get_logger().info(f"loading '{settings.artifact}' (backend {settings.backend}, device {settings.device})")
        return load_runner(settings)

    def _set_back(self, values: dict[str, Any]) -> None:
        """After a failed load: the parameters as they were (the callback applies them too)."""
        self.set_parameters([_parameter(name, value) for name, value in values.items()])

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            self._engine_swap.accept(parameter_changes(parameters))
        except SdmError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._retime.set()
        return SetParametersResult(successful=True)

    # -- callbacks --------------------------------------------------------------------------
    def _on_frame(self, stream: ObservationStream, msg: Any) -> None:
        source = OBSERVATION_SOURCES[stream.kind]
        rejected = self.controller.add_frame(stream.name, stamp_to_ns(msg.header.stamp), source.fields(msg),
                                             self._now_ns())
        if rejected is None:
            self._wake.set()
        else:
            sub = self._frame_subs.get(stream.name)
            topic = sub.topic_name if sub is not None else source.topic(stream.name)  # as remapped
            self._log.warning(f"{stream.name} {rejected.reason}", f"refused a frame on '{topic}': {rejected}")

    def _on_joint_state(self, msg: JointState) -> None:
        names, positions = joint_state_fields(msg)
        rejected = self.controller.add_joint_state(stamp_to_ns(msg.header.stamp), names, positions, self._now_ns())
        if rejected is None:
            self._wake.set()
        else:
            self._log.warning(f"joint_states {rejected.reason}", f"refused a message on 'joint_states': {rejected}")

    # -- inference thread -------------------------------------------------------------------
    def _run_cycles(self) -> None:
        """Start cycles per ``trigger`` until the node closes; a failing cycle is logged, never fatal.

        Waits end early when the settings change (``_retime``): a new rate or trigger applies at
        once, not after the period of the old one (10 s at 0.1 Hz)."""
        last_start = -math.inf
        while not self._closing.is_set():
            settings = self._engine_swap.settings
            period = 1.0 / settings.inference_rate_hz
            if settings.trigger == "observation":
                self._wake.clear()  # before the check: a sample arriving after it sets it again
                if not self._observation_ready():
                    self._wake.wait(IDLE_WAKE_S)
                    continue
            wait = last_start + period - time.monotonic()  # the schedule (timer) or the rate cap (observation)
            if wait > 0 and self._retime.wait(wait):
                self._retime.clear()
                continue  # with the new settings
            if self._closing.is_set():
                break
            now = time.monotonic()
            # on schedule, or from now when a cycle ran long (no burst of catch-up cycles)
            last_start = last_start + period if now - (last_start + period) < period else now
            try:
                self._on_cycle()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one cycle
                self._log.error("cycle exception", f"a cycle failed: {exc!r}")

    def _observation_ready(self) -> bool:
        controller = self.controller
        return controller.pending_interface is not None or controller.has_new_observation()

    def _on_cycle(self) -> None:
        if not self.context.ok():  # shutting down: publishing would fail
            return
        start_ns = self._now_ns()
        result = self.controller.step(start_ns)
        if result.swapped is not None:
            self._subscribe(result.swapped)
            self.get_logger().info(f"running '{result.swapped.artifact}' ({self.controller.policy.runner!r})")
        if result.chunk is not None:
            self._chunk_pub.publish(chunk_to_trajectory(result.chunk))
            self._publish_timing(result.chunk.stamp_ns, result.engine_ms, (self._now_ns() - start_ns) / 1e6)
            if result.clamps and result.clamps.total:
                self._log.warning("clamps", f"limits clamped {result.clamps} in the latest chunk (see diagnostics)")
        elif result.status in (STALE, ENGINE_ERROR, LATE):
            self._log.warning(f"cycle {result.status}", f"no chunk ({result.status}): {result.message}")
        elif result.status == NO_POLICY and self.controller.error:
            self._log.error("cycle no_policy", f"no chunk: {self.controller.error}")

    def _publish_timing(self, stamp_ns: int, engine_ms: float | None, cycle_ms: float) -> None:
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        msg = Float64MultiArray(data=[float(sec), float(nanosec), float(engine_ms or 0.0), cycle_ms])
        msg.layout.dim = [MultiArrayDimension(label=TIMING_FIELDS, size=4, stride=4)]
        self._timing_pub.publish(msg)

    def _subscribe(self, interface: PolicyInterface) -> None:
        """Subscriptions for the streams and joints the running artifact needs (kept when unchanged)."""
        with self._subs_lock:
            wanted = {s.name: s for s in interface.frame_streams}
            for name in list(self._frame_subs):
                if name not in wanted or self._frame_kinds[name] != wanted[name].kind:
                    self.destroy_subscription(self._frame_subs.pop(name))
                    del self._frame_kinds[name]
            for name, stream in wanted.items():
                if name not in self._frame_subs:
                    source = OBSERVATION_SOURCES[stream.kind]
                    self._frame_subs[name] = self.create_subscription(
                        source.message, source.topic(name), lambda msg, s=stream: self._on_frame(s, msg), SENSOR_QOS
                    )
                    self._frame_kinds[name] = stream.kind
            if interface.state_names and self._joint_sub is None:
                self._joint_sub = self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state,
                                                          SENSOR_QOS)
            elif not interface.state_names and self._joint_sub is not None:
                self.destroy_subscription(self._joint_sub)
                self._joint_sub = None

    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        now = self._now_ns()
        with self._subs_lock:
            topics = {name: sub.topic_name for name, sub in self._frame_subs.items()}
            if self._joint_sub is not None:
                topics[JOINT_STATES] = self._joint_sub.topic_name
        report = self.controller.report(now, topics)
        name = f"{self.get_name()}: policy"
        self._diagnostics_pub.publish(report_to_diagnostics(report, name, self.get_fully_qualified_name(), now))

    # -- helpers ----------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def close(self) -> None:
        """Stop the cycles and the loading, release the engines (before ``destroy_node``)."""
        self._closing.set()
        self._wake.set()
        self._retime.set()
        self._inference.join(timeout=10.0)
        self._engine_swap.close()
        self.controller.close()


def _parameter(name: str, value: Any) -> Parameter:
    if isinstance(value, tuple):
        return Parameter(name, Parameter.Type.DOUBLE_ARRAY, list(value))
    return Parameter(name, value=value)


def main(args: list[str] | None = None) -> None:
    # The inference thread, woken by a sensor callback, waits for the GIL that the executor thread
    # holds: Python's default switch interval would add up to 5 ms to every chunk's latency.
    run_node(PolicyNode, NODE_NAME, args, switch_interval_s=TIMELY_SWITCH_INTERVAL_S)


if __name__ == "__main__":
    main()
