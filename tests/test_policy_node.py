"""policy_node over real DDS: the node runs as its own process, this test process publishes camera
frames and joint states, receives the chunks and diagnostics, and sets parameters through the
node's parameter services (what ``ros2 param set`` calls).

Discovery stays on this machine: ``conftest`` sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
and a private ``ROS_DOMAIN_ID`` before anything imports rclpy, and the node processes inherit
both.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from node_process import REPO, NodeProcess, ros_context, spun_node, stamp_ns, wait_for  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from sdm_controller.bench.untrained_artifact import joint_limits, write_untrained_artifact  # noqa: E402
from sdm_controller.common.fr3 import FR3_JOINTS  # noqa: E402
from sdm_controller.ros.spin_thread import SpinThread  # noqa: E402

pytestmark = pytest.mark.ros

# A domain of this module's own (still in conftest's 2..101): in the full suite the node processes
# otherwise share a domain with what earlier modules' killed processes left behind, and were seen
# busy-looping there at full CPU.
DOMAIN_ID = 2 + (int(os.environ["ROS_DOMAIN_ID"]) - 2 + 50) % 100
CAMERAS = ("wrist", "scene")
RATE_HZ = 5.0  # inference rate of the node under test (2 CPU cores, loaded)
PERIOD_S = 0.1  # control period of the test artifacts
FEED_HZ = 20.0
HOME = {name: q for name, q in zip(FR3_JOINTS, [0.0, 0.0, 0.0, -1.5, 0.0, 1.8, 0.0, 0.02], strict=True)}
LOWER, UPPER, VELOCITY = (np.array(v) for v in joint_limits(FR3_JOINTS))
MAX_STEP = 0.1


# -- processes --------------------------------------------------------------------------------------
def policy_node_process(log: Path, *ros_args: str) -> NodeProcess:
    """``python -m sdm_controller.ros.policy_node`` on this module's own domain."""
    return NodeProcess("policy_node", log, *ros_args, env={"ROS_DOMAIN_ID": str(DOMAIN_ID)})


class Feeder:
    """Publishes two cameras and joint states at FEED_HZ with one stamp per tick; faults on demand."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.image_pubs = {c: node.create_publisher(Image, f"{c}/image_raw", 10) for c in CAMERAS}
        self.joint_pub = node.create_publisher(JointState, "joint_states", 10)
        self.encoding = dict.fromkeys(CAMERAS, "bgr8")
        self.silent: set[str] = set()
        self.nan_joints = False
        self.first_nan_stamp: int | None = None  # stamp of the first joint state sent with NaN
        self.stamps: list[int] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        rng = np.random.default_rng(0)
        self.pixels = rng.integers(0, 256, 48 * 64 * 3, dtype=np.uint8).tobytes()  # 64x48, resized by the node
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # reordered joint names plus one the policy does not use: mapping is by name
        names = [*reversed(FR3_JOINTS), "fr3_finger_joint2"]
        while not self._stop.is_set():
            now = self.node.get_clock().now()
            stamp = now.to_msg()
            with self.lock:
                self.stamps.append(now.nanoseconds)
            for camera, pub in self.image_pubs.items():
                if camera in self.silent:
                    continue
                msg = Image(height=48, width=64, encoding=self.encoding[camera], step=64 * 3)
                msg.header.stamp = stamp
                msg.data = self.pixels
                pub.publish(msg)
            joints = JointState(name=names)
            joints.header.stamp = stamp
            nan = self.nan_joints
            joints.position = [math.nan if nan else HOME.get(n, 0.02) for n in names]
            if nan and self.first_nan_stamp is None:
                self.first_nan_stamp = now.nanoseconds
            self.joint_pub.publish(joints)
            time.sleep(1.0 / FEED_HZ)

    def newest_stamp(self) -> int:
        with self.lock:
            return self.stamps[-1]

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


class Recorder:
    """Chunks and diagnostics as they arrive (receive time, message)."""

    def __init__(self, node: Node, chunk_topic: str = "action_chunk") -> None:
        self.chunks: list[tuple[float, JointTrajectory]] = []
        self.diagnostics: dict[str, object] = {}
        self.diagnostics_at: dict[str, float] = {}
        self.lock = threading.Lock()
        node.create_subscription(JointTrajectory, chunk_topic, self._on_chunk,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.chunks.append((time.monotonic(), msg))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.name] = status
                self.diagnostics_at[status.name] = time.monotonic()

    def since(self, t: float) -> list[JointTrajectory]:
        with self.lock:
            return [msg for received, msg in self.chunks if received >= t]

    def status(self, name: str = "policy_node: policy"):
        with self.lock:
            return self.diagnostics.get(name)

    def fresh_status(self, since: float, name: str = "policy_node: policy"):
        """The newest status if it arrived after ``since`` (monotonic), else None."""
        with self.lock:
            return self.diagnostics.get(name) if self.diagnostics_at.get(name, -1.0) > since else None


def diag_values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values} if status is not None else {}


def wait_future(future, timeout: float = 20.0):
    wait_for(future.done, timeout, "a parameter service response")
    return future.result()


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy_node")
    a = write_untrained_artifact(root / "a", cameras=CAMERAS, image_size=(16, 16), seed=0)
    b = write_untrained_artifact(root / "b", cameras=CAMERAS, image_size=(16, 16), seed=1)
    return a, b


@pytest.fixture(scope="module")
def ros(artifacts):
    """Test-side node (own context, executor thread), a feeder and a recorder."""
    with spun_node("policy_node_tester", DOMAIN_ID) as node:
        feeder = Feeder(node)
        try:
            yield node, feeder, Recorder(node), Recorder(node, "bad/action_chunk")
        finally:
            feeder.stop()


@pytest.fixture(scope="module")
def policy_node(artifacts, ros, tmp_path_factory):
    """The node under test, running artifact A, publishing chunks before the first test starts."""
    a, _ = artifacts
    _, _, recorder, _ = ros
    process = policy_node_process(
        tmp_path_factory.mktemp("logs") / "policy_node.log",
        "--params-file", str(REPO / "config" / "policy_node.yaml"),
        "-p", f"artifact:={a}", "-p", f"inference_rate_hz:={RATE_HZ}", "-p", f"max_step_rad:={MAX_STEP}",
    )
    try:
        wait_for(lambda: len(recorder.since(0)) >= 3, 90, "the first chunks", process.log)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def params(ros, policy_node):
    node = ros[0]
    client = AsyncParameterClient(node, "policy_node")
    assert client.wait_for_services(timeout_sec=20)
    return client


def wait_for_no_chunks(recorder: Recorder, quiet_s: float, timeout: float, log) -> float:
    """Wait until no chunk has arrived for ``quiet_s``; returns when the quiet period started."""

    def quiet():
        with recorder.lock:
            last = recorder.chunks[-1][0] if recorder.chunks else 0.0
        return time.monotonic() - last >= quiet_s and last + 1e-9

    return wait_for(quiet, timeout, f"{quiet_s} s without chunks", log)


def check_recovers(recorder: Recorder, log) -> None:
    t = time.monotonic()
    wait_for(lambda: len(recorder.since(t)) >= 2, 15, "chunks again after the fault is gone", log)


# -- tests ------------------------------------------------------------------------------------------
def test_chunks_are_timed_by_the_newest_observation(ros, policy_node):
    _, feeder, recorder, _ = ros
    t = time.monotonic()
    wait_for(lambda: len(recorder.since(t)) >= 5, 20, "5 chunks", policy_node.log)
    with feeder.lock:
        published = set(feeder.stamps)
    previous_last = None
    for msg in recorder.since(t):
        stamp = stamp_ns(msg.header.stamp)
        assert stamp in published  # exactly the stamp of an observation we sent
        assert msg.joint_names == list(FR3_JOINTS)
        assert len(msg.points) == 8
        offsets = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        np.testing.assert_allclose(offsets, PERIOD_S * (np.arange(8) + 1), atol=1e-9)
        positions = np.array([p.positions for p in msg.points])
        velocities = np.array([p.velocities for p in msg.points])
        assert (velocities[-1] == 0).all()
        assert ((positions >= LOWER) & (positions <= UPPER)).all()
        bound = np.minimum(MAX_STEP, VELOCITY * PERIOD_S) + 1e-9
        assert (np.abs(np.diff(positions, axis=0)) <= bound).all()
        assert (np.abs(velocities) <= bound / PERIOD_S + 1e-6).all()
        if previous_last is not None:  # stamps increase chunk to chunk
            assert stamp > previous_last
        previous_last = stamp
    # the newest observation: at most a few feed ticks older than what we had sent when it arrived
    with recorder.lock:
        received, msg = recorder.chunks[-1]
    assert feeder.newest_stamp() - stamp_ns(msg.header.stamp) < 0.6e9


def test_diagnostics_report_inputs_latency_and_backend(ros, artifacts, policy_node):
    _, _, recorder, _ = ros
    status = wait_for(lambda: recorder.status(), 10, "diagnostics", policy_node.log)
    values = diag_values(status)
    assert status.level == b"\x00", status.message
    assert values["artifact"] == str(artifacts[0]) and values["backend"] == "torch"
    for topic in ("/wrist/image_raw", "/scene/image_raw", "/joint_states"):
        assert float(values[f"input {topic} rate_hz"]) > 5
        assert float(values[f"input {topic} age_s"]) < 0.5
    assert 0 < float(values["inference latency_p50_ms"]) <= float(values["inference latency_p99_ms"])
    assert float(values["chunk rate_hz"]) > 0
    assert int(values["clamps step"]) >= 0 and "rejected total" in values


def _rejected(recorder: Recorder, key: str) -> int:
    status = recorder.status()
    return int(diag_values(status).get(f"rejected {key}", 0)) if status else 0


def test_nan_joints_build_no_chunk_and_are_counted(ros, policy_node):
    _, feeder, recorder, _ = ros
    before = _rejected(recorder, "joint_states non_finite")
    feeder.first_nan_stamp = None
    feeder.nan_joints = True
    try:
        quiet_since = wait_for_no_chunks(recorder, 1.2, 10, policy_node.log)
        wait_for(lambda: _rejected(recorder, "joint_states non_finite") > before + 5, 5, "the NaN counter",
                 policy_node.log)
        first_bad = feeder.first_nan_stamp
        assert all(stamp_ns(m.header.stamp) < first_bad for m in recorder.since(quiet_since - 2.0))
        wait_for(lambda: "stale" in recorder.status().message, 5, "a stale diagnostic", policy_node.log)
    finally:
        feeder.nan_joints = False
    check_recovers(recorder, policy_node.log)


def test_unknown_encoding_builds_no_chunk_and_is_counted(ros, policy_node):
    _, feeder, recorder, _ = ros
    feeder.encoding["scene"] = "yuv422"
    try:
        wait_for_no_chunks(recorder, 1.2, 10, policy_node.log)
        wait_for(lambda: _rejected(recorder, "scene bad_encoding") > 0, 5, "the encoding counter", policy_node.log)
    finally:
        feeder.encoding["scene"] = "bgr8"
    check_recovers(recorder, policy_node.log)


def test_silent_camera_makes_observations_stale(ros, policy_node):
    _, feeder, recorder, _ = ros
    feeder.silent.add("wrist")
    try:
        wait_for_no_chunks(recorder, 1.2, 10, policy_node.log)
        wait_for(lambda: "'wrist' is stale" in recorder.status().message, 5, "a stale diagnostic", policy_node.log)
        assert recorder.status().level == b"\x01"
    finally:
        feeder.silent.clear()
    check_recovers(recorder, policy_node.log)


def test_parameters_from_another_process(ros, params, policy_node):
    _, _, recorder, _ = ros

    def set_one(name, value):
        return wait_future(params.set_parameters([Parameter(name, value=value)])).results[0]

    result = set_one("executed_steps", 4)
    assert result.successful, result.reason
    t = time.monotonic()
    wait_for(lambda: any(len(m.points) == 4 for m in recorder.since(t)), 10, "4-point chunks", policy_node.log)
    t4 = time.monotonic()
    time.sleep(0.8)
    assert {len(m.points) for m in recorder.since(t4)} == {4}

    for name, value, words in [
        ("inference_rate_hz", 1000.0, ""),  # out of its FloatingPointRange: rclpy refuses it
        ("executed_steps", 9, "predicts 8 actions"),
        ("blending", "average", "expected one of"),
        ("artifact", "/nonexistent/policy", "does not exist"),
        ("joint_position_lower", [0.0, 0.0], "has 2 values"),
        ("backend", "tensorrt", "tensorrt"),  # no GPU / torch_tensorrt here
    ]:
        result = set_one(name, value)
        assert not result.successful, name
        assert words in result.reason, result.reason
    got = wait_future(params.get_parameters(["executed_steps", "artifact", "inference_rate_hz", "backend"]))
    assert got.values[0].integer_value == 4
    assert got.values[1].string_value.endswith("/a")
    assert got.values[2].double_value == RATE_HZ and got.values[3].string_value == "auto"

    for name, value in [("blending", "exponential"), ("blend_coefficient", 0.5), ("blending", "latest-only"),
                        ("inference_rate_hz", 8.0), ("executed_steps", 0), ("blending", "off"),
                        ("inference_rate_hz", RATE_HZ)]:
        result = set_one(name, value)
        assert result.successful, result.reason
    t = time.monotonic()
    wait_for(lambda: any(len(m.points) == 8 for m in recorder.since(t)), 10, "8-point chunks", policy_node.log)
    assert policy_node.proc.poll() is None


def test_a_new_rate_applies_at_once_not_after_the_old_period(ros, params, policy_node):
    """At 0.1 Hz the inference thread waits 10 s between cycles; setting the rate back must not
    wait that out."""
    _, _, recorder, _ = ros
    assert wait_future(params.set_parameters([Parameter("inference_rate_hz", value=0.1)])).results[0].successful
    time.sleep(1.0)  # the thread is now in its 10 s wait
    t = time.monotonic()
    assert wait_future(params.set_parameters([Parameter("inference_rate_hz", value=RATE_HZ)])).results[0].successful
    wait_for(lambda: len(recorder.since(t)) >= 3, 5, "chunks at the restored rate within 5 s", policy_node.log)


def test_disable_and_enable(ros, params, policy_node):
    _, _, recorder, _ = ros
    result = wait_future(params.set_parameters([Parameter("enabled", value=False)])).results[0]
    assert result.successful
    wait_for_no_chunks(recorder, 1.0, 10, policy_node.log)
    assert wait_future(params.set_parameters([Parameter("enabled", value=True)])).results[0].successful
    check_recovers(recorder, policy_node.log)


def test_observation_trigger_runs_a_cycle_per_new_frame(ros, params, policy_node):
    """trigger=observation: one chunk per fed frame set (timer mode at RATE_HZ gives a quarter of
    that), each stamped with a distinct fed stamp, and one cycle_timing record per chunk."""
    node, feeder, recorder, _ = ros
    timings: list[tuple[int, float]] = []
    sub = node.create_subscription(
        Float64MultiArray, "policy_node/cycle_timing",
        lambda m: timings.append((int(m.data[0]) * 1_000_000_000 + int(m.data[1]), m.data[2])), 50)
    changes = [Parameter("trigger", value="observation"), Parameter("inference_rate_hz", value=100.0)]
    try:
        assert all(r.successful for r in wait_future(params.set_parameters(changes)).results)
        time.sleep(1.0)
        t = time.monotonic()
        with feeder.lock:
            fed_before = len(feeder.stamps)
        time.sleep(4.0)
        with feeder.lock:
            fed = len(feeder.stamps) - fed_before
            published = set(feeder.stamps)
        chunks = recorder.since(t)
        stamps = [stamp_ns(m.header.stamp) for m in chunks]
        assert len(set(stamps)) == len(stamps) and set(stamps) <= published
        assert len(chunks) >= 0.6 * fed > 2 * RATE_HZ * 4.0, (len(chunks), fed)
        timed = dict(timings)
        assert sum(s in timed for s in stamps) >= len(stamps) - 2  # the newest may still be in flight
        assert all(engine_ms > 0 for engine_ms in timed.values())
    finally:
        node.destroy_subscription(sub)
        restore = [Parameter("trigger", value="timer"), Parameter("inference_rate_hz", value=RATE_HZ)]
        assert all(r.successful for r in wait_future(params.set_parameters(restore)).results)
    check_recovers(recorder, policy_node.log)


def _cycles(recorder: Recorder) -> dict[str, int]:
    return {k[len("cycles "):]: int(v) for k, v in diag_values(recorder.status()).items() if k.startswith("cycles ")}


def test_artifact_hot_swap_under_load_leaves_no_gap(ros, params, artifacts, policy_node):
    _, _, recorder, _ = ros
    _, b = artifacts
    start = time.monotonic()

    def publishing():
        status = recorder.fresh_status(start)
        return status is not None and diag_values(status)["state"] == "published"

    wait_for(publishing, 10, "a node publishing chunks", policy_node.log)
    before = _cycles(recorder)
    t = time.monotonic()
    result = wait_future(params.set_parameters([Parameter("artifact", value=str(b))])).results[0]
    assert result.successful, result.reason
    wait_for(lambda: diag_values(recorder.status())["artifact"] == str(b), 30, "the swap to artifact b",
             policy_node.log)
    time.sleep(1.0)  # a few cycles with b
    swapped = time.monotonic()
    wait_for(lambda: recorder.fresh_status(swapped), 5, "diagnostics after the swap", policy_node.log)
    after = _cycles(recorder)
    with recorder.lock:
        times = [received for received, _ in recorder.chunks if received >= t - 1.0]
    # every cycle across the swap built a chunk (none waiting for history, none without an engine) ...
    assert after["published"] > before.get("published", 0) + 3
    assert {k: v - before.get(k, 0) for k, v in after.items() if k != "published"} == dict.fromkeys(
        (k for k in after if k != "published"), 0), f"{before} -> {after}"
    # ... and no chunk came later than one cycle after the previous one, plus 0.25 s for the scheduling
    # jitter of a loaded 2-core machine (the counts above already rule out a skipped cycle exactly)
    gaps = np.diff(times)
    assert len(times) > 5
    assert gaps.max() < 1.0 / RATE_HZ + 0.25, f"largest gap {gaps.max():.3f} s\n{policy_node.log()}"
    assert "engine ready" in policy_node.log()


def test_startup_without_valid_artifact_then_set_one(ros, artifacts, tmp_path):
    node, _, _, bad_recorder = ros
    a, _ = artifacts
    process = policy_node_process(
        tmp_path / "bad.log", "-r", "__node:=policy_node_bad", "-r", "action_chunk:=bad/action_chunk",
        "-p", "artifact:=/nonexistent/policy", "-p", f"inference_rate_hz:={RATE_HZ}",
    )
    try:
        status = wait_for(lambda: bad_recorder.status("policy_node_bad: policy"), 60, "diagnostics of the bad node",
                          process.log)
        assert status.level == b"\x02" and "/nonexistent/policy" in status.message
        assert process.proc.poll() is None and not bad_recorder.since(0)
        client = AsyncParameterClient(node, "policy_node_bad")
        assert client.wait_for_services(timeout_sec=20)
        result = wait_future(client.set_parameters([Parameter("artifact", value=str(a))])).results[0]
        assert result.successful, result.reason
        wait_for(lambda: len(bad_recorder.since(0)) >= 2, 60, "chunks after setting a valid artifact",
                 lambda: f"{process.log()}\ndiagnostics: {diag_values(bad_recorder.status('policy_node_bad: policy'))}")
    finally:
        code = process.stop()
    assert code == 0, process.log()  # Ctrl-C: clean shutdown, no traceback
    assert "Traceback" not in process.log_path.read_text()


def test_failed_background_load_keeps_the_running_engine_and_reverts(artifacts, monkeypatch):
    """A load that fails after its checks passed (here: a patched loader) must not stop the node."""
    from sdm_controller.ros import policy_node as module

    a, b = artifacts
    with ros_context(DOMAIN_ID) as context:
        node = module.PolicyNode("policy_node_revert", context=context,
                                 cli_args=["--ros-args", "-r", "action_chunk:=revert/action_chunk"],
                                 parameter_overrides=[Parameter("artifact", value=str(a))])
        spinner = SpinThread(node)
        try:
            wait_for(lambda: node.controller.policy is not None, 60, "the first engine")
            first = node.controller.policy.runner

            def broken_loader(settings):
                raise RuntimeError("CUDA out of memory (simulated)")

            monkeypatch.setattr(module, "load_runner", broken_loader)
            result = node.set_parameters([Parameter("artifact", value=str(b)), Parameter("executed_steps", value=3)])
            assert [r.successful for r in result] == [True, True]
            wait_for(lambda: node.get_parameter("artifact").value == str(a), 10, "the artifact parameter set back")
            assert "CUDA out of memory (simulated)" in node.controller.error
            assert node.controller.policy.runner is first
            assert node.get_parameter("executed_steps").value == 3  # its own change was fine and stays
            monkeypatch.undo()
            assert node.set_parameters([Parameter("artifact", value=str(b))])[0].successful
            wait_for(lambda: node.controller.policy is not None and node.controller.policy.interface.artifact == str(b),
                     60, "the swap to artifact b")
        finally:
            spinner.close()
            node.close()
            node.destroy_node()
