"""Task episodes on a running simulated stack, driven from outside: reset, record, wait, score.

:class:`EpisodeClient` is what ``collect franka-sim`` (and an evaluation) runs beside the nodes of
the sim stack, talking to them only through their topics and services, as an operator would:

1. ``franka_driver/stop``: the driver brakes and refuses every chunk until a recovery, whatever
   the expert or policy keeps publishing;
2. ``mujoco_bridge/reset_task``: arm home, cube somewhere new. The reset also stops the driver's
   running motion if it has one (it may be braking), which franky reports as a robot fault;
3. with recording, ``recorder/start_episode`` while the stopped driver holds the arm at home;
4. ``franka_driver/recover``, and again whenever the driver's ``/diagnostics`` report a robot
   fault stamped after the last recovery: the driver then waits for a chunk stamped after the
   recovery, so nothing planned before the reset moves the arm;
5. the episode ends at ``task/success`` (the bridge's latched flag, true once the TCP held on the
   cube for its hold time) or after ``timeout_s``; with recording, a successful episode is saved
   (``recorder/stop_episode``), a failed one discarded, so a dataset holds successes only.

Per episode it also counts the chunks seen on ``action_chunk`` (the chunk rate of whatever
drives the arm: the expert or the policy node), times each chunk's arrival against its
``header.stamp`` (the newest observation it was built from: observation → chunk latency, with the
DDS hop), and follows the bridge's ``task distance_m`` and ``task min_distance_m`` diagnostics
(TCP to the cube now, and closest at any simulation step since the reset; once a second): where the
episode started and how close the hand got. After the episode it waits for one more report, so the
closest approach covers the whole episode, not all but its last second.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from sdm_controller.common.images import decode_image
from sdm_controller.common.rejected import RejectedInput
from sdm_controller.errors import SdmError
from sdm_controller.ros.conversions import image_fields, stamp_to_ns
from sdm_controller.ros.spin_thread import SpinThread
from sdm_controller.ros.topics import (
    ACTION_CHUNK,
    BRIDGE_RESET_TASK,
    COMMAND_QOS,
    DIAGNOSTICS,
    DRIVER_RECOVER,
    DRIVER_STOP,
    LATCHED_QOS,
    RECORDER_DISCARD,
    RECORDER_START,
    RECORDER_STOP,
    TASK_SUCCESS,
)

DRIVER_STATUS = "franka_driver: driver"
BRIDGE_STATUS = "mujoco_bridge: simulation"
FAULT_KEY = "robot fault"
DISTANCE_KEY = "task distance_m"
MIN_DISTANCE_KEY = "task min_distance_m"
BRIDGE_REPORT_S = 1.0  # the bridge's diagnostics period
SERVICE_TIMEOUT_S = 30.0
RESET_FAULT_S = 0.3  # the reset's fault reaches the driver within a few control periods
CAPTURE_PERIOD_S = 0.5  # camera frames kept for an episode's image strip
START_ATTEMPTS = 3  # recorder starts refused for want of a first frame before an episode gives up


@dataclass(frozen=True)
class EpisodeResult:
    index: int
    success: bool
    duration_s: float  # recovery after the reset → success, or the timeout
    chunks: int  # action chunks published during the episode
    recoveries: int
    message: str  # the bridge's reset reply (where the cube is), or the recorder's stop reply
    latencies_ms: tuple[float, ...] = ()  # per chunk: arrival here - header.stamp
    start_distance_m: float = float("nan")  # TCP to the cube's top, first report of the episode
    min_distance_m: float = float("nan")  # closest at any simulation step of the episode
    frames: tuple[np.ndarray, ...] = ()  # with capture: RGB camera frames CAPTURE_PERIOD_S apart

    @property
    def chunk_rate_hz(self) -> float:
        return self.chunks / self.duration_s if self.duration_s > 0 else 0.0


class EpisodeClient:
    """A node of its own (its own executor thread) that runs episodes on the sim stack."""

    def __init__(self, context: Context | None = None, namespace: str = "", camera_topic: str | None = None) -> None:
        """``camera_topic`` (e.g. ``camera/color/image_raw``) lets episodes capture frames."""
        self.node = Node("episode_client", namespace=namespace, context=context)
        self._lock = threading.Lock()
        self._success: tuple[float, bool] | None = None  # (receive time, value)
        self._fault_ns: int | None = None  # stamp of the newest driver report, if it reports a fault
        self._chunks = 0
        self._latencies_ms: list[float] = []
        self._distances: list[tuple[int, float, float]] = []  # (stamp ns, distance, closest since reset)
        self._capturing = False
        self._frames: list[tuple[int, np.ndarray]] = []  # (stamp ns, RGB)
        self.stopped = threading.Event()  # set from outside (the stack went down): every wait ends
        node = self.node
        node.create_subscription(Bool, TASK_SUCCESS, self._on_success, LATCHED_QOS)
        node.create_subscription(JointTrajectory, ACTION_CHUNK, self._on_chunk, COMMAND_QOS)
        node.create_subscription(DiagnosticArray, DIAGNOSTICS, self._on_diagnostics, 10)
        if camera_topic:
            node.create_subscription(Image, camera_topic, self._on_image, 1)
        self._reset_client = node.create_client(Trigger, BRIDGE_RESET_TASK)
        self._recover_client = node.create_client(Trigger, DRIVER_RECOVER)
        self._driver_stop_client = node.create_client(Trigger, DRIVER_STOP)
        self._start_client = node.create_client(Trigger, RECORDER_START)
        self._stop_client = node.create_client(Trigger, RECORDER_STOP)
        self._discard_client = node.create_client(Trigger, RECORDER_DISCARD)
        self._spinner = SpinThread(node, name="episode-client")

    # -- inputs -------------------------------------------------------------------------------
    def _on_success(self, msg: Bool) -> None:
        with self._lock:
            self._success = (time.monotonic(), bool(msg.data))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        latency_ms = (self.node.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) / 1e6
        with self._lock:
            self._chunks += 1
            self._latencies_ms.append(latency_ms)

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            if not self._capturing:
                return
            stamp = stamp_to_ns(msg.header.stamp)
            if self._frames and stamp - self._frames[-1][0] < CAPTURE_PERIOD_S * 1e9:
                return
        try:
            rgb = decode_image(image_fields(msg))
        except RejectedInput:
            return  # a bad frame leaves a gap in the strip; the policy node counts and reports it
        with self._lock:
            self._frames.append((stamp, rgb))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == DRIVER_STATUS:
                fault = next((kv.value for kv in status.values if kv.key == FAULT_KEY), "")
                with self._lock:
                    self._fault_ns = stamp_to_ns(msg.header.stamp) if fault else None
            elif status.name == BRIDGE_STATUS:
                values = {kv.key: kv.value for kv in status.values}
                try:
                    distance = float(values[DISTANCE_KEY])
                    entry = (stamp_to_ns(msg.header.stamp), distance, float(values.get(MIN_DISTANCE_KEY, distance)))
                except (KeyError, ValueError):
                    continue
                with self._lock:
                    self._distances.append(entry)

    # -- services -----------------------------------------------------------------------------
    def _call(self, client, what: str, timeout_s: float = SERVICE_TIMEOUT_S) -> Trigger.Response:
        self._wait_for_service(client, timeout_s, what)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done():
            self._check_stopped()
            if time.monotonic() > deadline:
                raise SdmError(f"{what}: no reply from '{client.srv_name}' within {timeout_s:g} s")
            time.sleep(0.01)
        return future.result()

    def wait_ready(self, record: bool, timeout_s: float = SERVICE_TIMEOUT_S) -> None:
        """Every service the episodes need is offered and chunks flow (the nodes are up)."""
        clients = [self._reset_client, self._recover_client, self._driver_stop_client]
        if record:
            clients += [self._start_client, self._stop_client, self._discard_client]
        for client in clients:
            self._wait_for_service(client, timeout_s, "start")
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._chunks:
                    break
            self._check_stopped()
            if time.monotonic() > deadline:
                raise SdmError(f"start: no chunk on '/action_chunk' within {timeout_s:g} s")
            time.sleep(0.05)

    def _wait_for_service(self, client, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not client.wait_for_service(timeout_sec=0.2):
            self._check_stopped()
            if time.monotonic() > deadline:
                raise SdmError(f"{what}: service '{client.srv_name}' is not available within {timeout_s:g} s")

    def _check_stopped(self) -> None:
        if self.stopped.is_set():
            raise SdmError("stopped: the stack went down")

    def _recover(self) -> int:
        """``franka_driver/recover``; returns when it was called (node clock)."""
        now_ns = self.node.get_clock().now().nanoseconds
        reply = self._call(self._recover_client, "driver recovery")
        if not reply.success:
            raise SdmError(f"driver recovery failed: {reply.message}")
        return now_ns

    def _faulted_since(self, recovered_ns: int) -> bool:
        with self._lock:
            return self._fault_ns is not None and self._fault_ns > recovered_ns

    # -- episodes -----------------------------------------------------------------------------
    def run_episode(self, index: int, timeout_s: float, record: bool = False, capture: bool = False) -> EpisodeResult:
        """One episode; raises :class:`SdmError` when a node does not answer or refuses.

        Recording starts before the recovery, while the stopped driver holds the arm at home, and the
        recorder answers ``start_episode`` once the episode's first frame is in: so that frame is the
        home pose (after the recovery the arm moves within a chunk period). A start refused for want
        of that frame is tried again; the arm stays held meanwhile."""
        with self._lock:
            self._distances.clear()
        stopped = self._call(self._driver_stop_client, "driver stop")
        if not stopped.success:
            raise SdmError(f"the driver did not stop: {stopped.message}")
        reply = self._call(self._reset_client, "task reset")
        if not reply.success:
            raise SdmError(f"task reset failed: {reply.message}")
        message = reply.message
        reset_ns = self.node.get_clock().now().nanoseconds  # bridge reports stamped later are of this episode
        time.sleep(RESET_FAULT_S)
        if record:
            self._start_recording()
        recovered_ns, recoveries = self._recover(), 1
        with self._lock:
            chunks_before = self._chunks
            self._latencies_ms.clear()
            self._frames.clear()
            self._capturing = capture
        start = time.monotonic()
        success = False
        while time.monotonic() - start < timeout_s:
            with self._lock:
                latest = self._success
            if latest is not None and latest[0] > start and latest[1]:
                success = True
                break
            if self._faulted_since(recovered_ns):
                recovered_ns, recoveries = self._recover(), recoveries + 1
            self._check_stopped()
            time.sleep(0.02)
        duration = time.monotonic() - start
        end_ns = self.node.get_clock().now().nanoseconds
        with self._lock:
            chunks = self._chunks - chunks_before
            latencies = tuple(self._latencies_ms)
            self._capturing = False
            frames = tuple(rgb for _, rgb in self._frames)
        reports = self._bridge_reports(reset_ns, end_ns)
        if record:
            stop = self._call(self._stop_client if success else self._discard_client, "save" if success else "discard")
            if not stop.success:
                raise SdmError(f"the recorder could not {'save' if success else 'discard'} the episode: {stop.message}")
            message = stop.message
        start_distance = reports[0][1] if reports else float("nan")
        closest = min((min(distance, closest) for _, distance, closest in reports), default=float("nan"))
        return EpisodeResult(index, success, duration, chunks, recoveries, message, latencies,
                             start_distance, closest, frames)

    def _start_recording(self) -> None:
        """``recorder/start_episode`` until its first frame is in (the arm must not move before).

        The recorder refuses a start whose first frame did not come within its wait (on a loaded
        machine the streams or its polls can be late); the arm is still held, so try again."""
        messages = []
        for _ in range(START_ATTEMPTS):
            started = self._call(self._start_client, "start recording")
            if started.success:
                return
            messages.append(started.message)
            self.node.get_logger().warning(f"recorder start refused, trying again: {started.message}")
        raise SdmError(f"the recorder did not start an episode in {START_ATTEMPTS} attempts: {messages}")

    def _bridge_reports(self, reset_ns: int, end_ns: int) -> list[tuple[int, float, float]]:
        """The bridge's task reports stamped after ``reset_ns``, once one stamped after ``end_ns`` is
        in (or after a report period and a half without one: the distances then miss the end)."""
        deadline = time.monotonic() + 1.5 * BRIDGE_REPORT_S
        while True:
            with self._lock:
                reports = [entry for entry in self._distances if entry[0] >= reset_ns]
            if (reports and reports[-1][0] >= end_ns) or time.monotonic() > deadline:
                return reports
            self._check_stopped()
            time.sleep(0.02)

    def close(self) -> None:
        self._spinner.close()
        self.node.destroy_node()
