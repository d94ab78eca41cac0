"""recorder over real DDS: the node runs as its own process; this test process publishes a camera,
joint states moving along a known straight line and a command stream, calls the episode services,
and reads the dataset back.

The joints move as ``q(t) = Q0 + VELOCITY * (t - T_ORIGIN)``, so a recorded state tells the stamp
it was sampled at; each camera frame is one grey value, so a recorded image tells which published
frame (and stamp) it was. Alignment is then checked exactly, whatever the arrival delays were.
Discovery stays on this machine (``conftest``: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a
private ``ROS_DOMAIN_ID``, inherited by the node process).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from node_process import REPO, NodeProcess, spun_node, wait_for  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from sdm_controller.common.fr3 import FR3_JOINTS  # noqa: E402
from sdm_controller.data.episodes import EpisodeSet, load_episodes, save_episodes  # noqa: E402
from sdm_controller.data.recording import RecorderSettings  # noqa: E402

pytestmark = pytest.mark.ros

PERIOD_S = 0.1
CAMERA_HZ = 20.0
JOINT_HZ = 100.0
COMMAND_HZ = 50.0
SIZE = 32  # stored image size (published 64x48, centre-cropped and resized)
Q0 = np.array([0.0, -0.3, 0.1, -2.0, 0.0, 1.8, 0.5, 0.01])
VELOCITY = np.array([0.05, 0.04, -0.05, 0.03, 0.05, -0.04, 0.06, 0.0002])
T_ORIGIN = time.time_ns()
TIME_TOL_S = 0.002  # stamp recovered from a float32 position: ~10 us; 2 ms is still far below a period


def q(t_ns: float) -> np.ndarray:
    return Q0 + VELOCITY * (t_ns - T_ORIGIN) / 1e9


def implied_stamp(positions: np.ndarray) -> np.ndarray:
    """The stamp (ns) at which the straight line passes ``positions`` (arm joints, averaged)."""
    return T_ORIGIN + 1e9 * ((positions[..., :7] - Q0[:7]) / VELOCITY[:7]).mean(axis=-1)


def frame_value(index: int) -> int:
    return (7 * index) % 251


class RecorderProcess(NodeProcess):
    """``python -m sdm_controller.ros.recorder`` named ``name``, on config/recorder.yaml."""

    def __init__(self, log: Path, name: str, *ros_args: str) -> None:
        self.name = name
        super().__init__("recorder", log, "-r", f"__node:={name}", "--params-file",
                         str(REPO / "config" / "recorder.yaml"), *ros_args)


class Robot:
    """Publishes the camera, joint states and commands, and remembers every stamp it sent."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.image_pub = node.create_publisher(Image, "front/image_raw", 10)
        self.joint_pub = node.create_publisher(JointState, "joint_states", 10)
        self.command_pub = node.create_publisher(JointState, "commanded_joint_states", 10)
        self.frames: dict[int, list[int]] = {}  # grey value -> stamps sent with it
        self.commands: list[tuple[int, np.ndarray]] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(CAMERA_HZ, self._image), daemon=True),
            threading.Thread(target=self._loop, args=(JOINT_HZ, self._joints), daemon=True),
            threading.Thread(target=self._loop, args=(COMMAND_HZ, self._command), daemon=True),
        ]
        self._index = 0
        for thread in self.threads:
            thread.start()

    def _loop(self, hz: float, publish) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            publish(self.node.get_clock().now())
            next_t += 1.0 / hz
            time.sleep(max(0.0, next_t - time.monotonic()))

    def _image(self, now) -> None:
        value = frame_value(self._index)
        self._index += 1
        msg = Image(height=48, width=64, encoding="bgr8", step=64 * 3)
        msg.header.stamp = now.to_msg()
        msg.data = bytes([value]) * (48 * 64 * 3)
        with self.lock:
            self.frames.setdefault(value, []).append(now.nanoseconds)
        self.image_pub.publish(msg)

    def _joints(self, now) -> None:
        names = [*reversed(FR3_JOINTS), "fr3_finger_joint2"]  # any order; extra joints ignored
        values = q(now.nanoseconds)
        msg = JointState(name=names, position=[*reversed(values.tolist()), float(values[-1])])
        msg.header.stamp = now.to_msg()
        self.joint_pub.publish(msg)

    def _command(self, now) -> None:
        target = q(now.nanoseconds + PERIOD_S * 1e9) + 0.25  # a leader arm ahead (+0.25: not a state)
        msg = JointState(name=list(FR3_JOINTS), position=target.tolist())
        msg.header.stamp = now.to_msg()
        with self.lock:
            self.commands.append((now.nanoseconds, target))
        self.command_pub.publish(msg)

    def frame_stamp(self, value: int, near_ns: float) -> int:
        with self.lock:
            return min(self.frames[value], key=lambda s: abs(s - near_ns))

    def command_at(self, stamp_ns: float) -> tuple[int, np.ndarray]:
        with self.lock:
            return max((c for c in self.commands if c[0] <= stamp_ns), key=lambda c: c[0])

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(5)


class Diagnostics:
    def __init__(self, node: Node) -> None:
        self.status: dict[str, object] = {}
        self.lock = threading.Lock()
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 10)

    def _on(self, msg: DiagnosticArray) -> None:
        with self.lock:
            for status in msg.status:
                self.status[status.name] = status

    def values(self, name: str) -> dict[str, str]:
        with self.lock:
            status = self.status.get(name)
        return {kv.key: kv.value for kv in status.values} if status is not None else {}


@pytest.fixture(scope="module")
def ros():
    with spun_node("recorder_tester") as node:
        diagnostics = Diagnostics(node)
        robot = Robot(node)
        try:
            yield node, robot, diagnostics
        finally:
            robot.stop()


class Services:
    def __init__(self, node: Node, process: RecorderProcess) -> None:
        self.process = process
        self.clients = {
            name: node.create_client(Trigger, f"/{process.name}/{name}")
            for name in ("start_episode", "stop_episode", "discard_episode")
        }
        for name, client in self.clients.items():
            assert client.wait_for_service(timeout_sec=30), f"{name} service missing\n{process.log()}"

    def __call__(self, name: str, timeout: float = 30.0) -> Trigger.Response:
        future = self.clients[name].call_async(Trigger.Request())
        wait_for(future.done, timeout, f"the {name} response", self.process.log)
        return future.result()


@pytest.fixture
def start_recorder(ros, tmp_path):
    started: list[RecorderProcess] = []

    def start(name: str, *ros_args: str) -> tuple[RecorderProcess, Services]:
        process = RecorderProcess(tmp_path / f"{name}.log", name, *ros_args, "-p", f"image_height:={SIZE}",
                                  "-p", f"image_width:={SIZE}")  # fmt: skip
        started.append(process)
        return process, Services(ros[0], process)

    yield start
    for process in started:
        assert process.stop() == 0, process.log()


def check_frames(robot: Robot, data: EpisodeSet, start: int, end: int) -> np.ndarray:
    """Images and states of frames [start, end) are aligned by stamp; returns the images' stamps (ns)."""
    implied = implied_stamp(data.obs["state"][start:end].astype(np.float64))
    stamps = []
    for k, stamp in enumerate(implied):
        image = data.obs["front"][start + k]
        assert (image == image[0, 0, 0]).all()
        frame_stamp = robot.frame_stamp(int(image[0, 0, 0]), stamp)
        assert abs(frame_stamp - stamp) < TIME_TOL_S * 1e9, (k, (frame_stamp - stamp) / 1e6)
        np.testing.assert_allclose(data.obs["state"][start + k], q(frame_stamp), atol=1e-5)
        stamps.append(frame_stamp)
    stamps = np.array(stamps)
    steps = np.diff(stamps) / 1e9
    # never a frame twice; one per period give or take a camera period (the test's publishers jitter)
    assert np.all(steps > 0.2 * PERIOD_S), steps
    assert abs(np.median(steps) - PERIOD_S) < 0.2 * PERIOD_S and abs(steps.mean() - PERIOD_S) < 0.3 * PERIOD_S, steps
    return stamps


def recording_status(diagnostics: Diagnostics, key: str, value: str) -> dict[str, str] | None:
    values = diagnostics.values("rec_next: recording")
    return values if values.get(key) == value else None


def test_next_state_episodes_boundaries_discard_and_diagnostics(ros, start_recorder, tmp_path):
    node, robot, diagnostics = ros
    out = tmp_path / "teleop.zarr"
    process, call = start_recorder("rec_next", "-p", f"output:={out}", "-p", "task:=reach")

    assert not call("stop_episode").success  # nothing recorded yet
    spans = [time.monotonic()]  # from before each start call to after its stop call
    reply = call("start_episode")
    assert reply.success, reply.message
    assert "its first frame is in" in reply.message  # the reply waits for it
    assert not call("start_episode").success  # already recording
    time.sleep(1.5)
    first = call("stop_episode")
    spans[0] = time.monotonic() - spans[0]
    assert first.success, first.message + process.log()
    assert "frames" in first.message and str(out) in first.message and "episode 1" in first.message

    assert call("start_episode").success
    time.sleep(0.8)
    discarded = call("discard_episode")
    assert discarded.success and "discarded" in discarded.message
    discard_end = node.get_clock().now().nanoseconds

    spans.append(time.monotonic())
    assert call("start_episode").success
    time.sleep(1.0)
    values = wait_for(lambda: recording_status(diagnostics, "state", "recording"), 5, "diagnostics", process.log)
    assert float(values["camera front rate_hz"]) > 10 and float(values["joint_states rate_hz"]) > 50
    assert float(values["joint_states age_ms"]) < 500 and int(values["episode_frames"]) > 0
    second = call("stop_episode")
    spans[1] = time.monotonic() - spans[1]
    assert second.success and "episode 2" in second.message, second.message

    data = load_episodes(out)
    assert data.num_episodes == 2
    n1, n2 = int(data.episode_ends[0]), int(data.episode_ends[1] - data.episode_ends[0])
    # 1.5 s and 1.0 s at 10 Hz, plus the start reply's wait for the first frame: at most one frame per
    # period of each start-to-stop span; fewer where a loaded machine delays the publishers (refused)
    assert 5 <= n1 <= int(spans[0] * 10) + 1 and 4 <= n2 <= int(spans[1] * 10) + 1, (
        n1, n2, spans, first.message, second.message)
    assert f"saved {n1} frames" in first.message and f"saved {n2} frames" in second.message
    assert data.obs["front"].shape == (n1 + n2, SIZE, SIZE, 3) and data.obs["front"].dtype == np.uint8
    assert data.obs["state"].shape == (n1 + n2, 8) and data.action.shape == (n1 + n2, 8)
    assert data.attrs["action_source"] == "next_state" and data.attrs["task"] == "reach"
    assert data.attrs["obs_spec"]["cameras"] == {"front": [3, SIZE, SIZE]}
    assert data.attrs["state_names"] == {"state": list(FR3_JOINTS)} and data.attrs["action_names"] == list(FR3_JOINTS)

    ep1 = check_frames(robot, data, 0, n1)
    ep2 = check_frames(robot, data, n1, n1 + n2)
    assert ep2[0] > discard_end  # the discarded frames are gone; episode 2 starts after its start call
    # action k = the joints measured one control period after frame k
    expected = np.stack([q(stamp + PERIOD_S * 1e9) for stamp in np.concatenate([ep1, ep2])])
    np.testing.assert_allclose(data.action, expected, atol=1e-5)

    values = wait_for(lambda: recording_status(diagnostics, "episodes_saved", "2"), 5, "diagnostics", process.log)
    assert values["state"] == "idle" and values["dataset"].startswith("2 episodes")


def test_topic_commands_append_to_an_existing_dataset_and_a_mismatch_is_refused(ros, start_recorder, tmp_path):
    node, robot, _ = ros
    # an existing dataset with the same spec, written by someone else (e.g. a sim collector)
    settings = RecorderSettings(image_height=SIZE, image_width=SIZE, action_source="topic")
    out = tmp_path / "commands.zarr"
    n0 = 5
    existing = {
        "action": np.zeros((n0, 8), np.float32),
        "obs/state": np.zeros((n0, 8), np.float32),
        "obs/front": np.zeros((n0, SIZE, SIZE, 3), np.uint8),
    }
    save_episodes(EpisodeSet.from_episodes([existing], {**settings.dataset_attrs(), "source": "franka-sim"}), out)
    other = tmp_path / "next_state.zarr"
    save_episodes(EpisodeSet.from_episodes([existing], RecorderSettings(image_height=SIZE, image_width=SIZE)
                                           .dataset_attrs()), other)  # fmt: skip

    process, call = start_recorder("rec_topic", "-p", f"output:={out}", "-p", "action_source:=topic")
    assert call("start_episode").success
    time.sleep(1.2)
    reply = call("stop_episode")
    assert reply.success and "episode 2" in reply.message, reply.message

    data = load_episodes(out)
    assert data.num_episodes == 2 and data.episode_ends[0] == n0
    assert data.attrs["sources"] == ["franka-sim", "ros:recorder"]
    n = len(data.action) - n0
    stamps = check_frames(robot, data, n0, n0 + n)
    for k, stamp in enumerate(stamps):
        command_stamp, target = robot.command_at(stamp)  # the newest command stamped at or before the frame
        assert stamp - command_stamp < 3e9 / COMMAND_HZ
        np.testing.assert_allclose(data.action[n0 + k], target, atol=1e-5)

    # live change of the output to a dataset recorded with another action source: refused clearly
    params = AsyncParameterClient(node, "rec_topic")
    assert params.wait_for_services(timeout_sec=20)
    future = params.set_parameters([Parameter("output", value=str(other))])
    wait_for(future.done, 20, "set_parameters")
    assert future.result().results[0].successful
    refused = call("start_episode")
    assert not refused.success
    assert f"cannot append to dataset '{other}'" in refused.message and "action_source" in refused.message
    future = params.set_parameters([Parameter("control_period_s", value=0.05)])
    wait_for(future.done, 20, "set_parameters")
    assert not future.result().results[0].successful and "restart" in future.result().results[0].reason
    assert load_episodes(other).num_episodes == 1


def test_a_start_without_a_first_frame_is_refused_with_the_stream_ages(ros, start_recorder, tmp_path):
    # camera 'side' is silent: no episode may start whose first frame is missing
    process, call = start_recorder("rec_silent", "-p", f"output:={tmp_path / 'silent.zarr'}", "-p", "cameras:=[side]")
    began = time.monotonic()
    reply = call("start_episode")
    assert not reply.success
    assert time.monotonic() - began > 2.0  # it waited for the frame (START_WAIT_S) before refusing
    assert "no frame recorded" in reply.message and "'camera side': 'never'" in reply.message, reply.message
    assert "joint_states" in reply.message  # the streams that do flow are listed with their ages
    assert not call("stop_episode").success  # nothing is being recorded
    assert not (tmp_path / "silent.zarr").exists()


def test_a_bad_parameter_is_a_fatal_start_error(tmp_path):
    log = tmp_path / "bad.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "sdm_controller.ros.recorder", "--ros-args", "-r", "__node:=rec_bad",
             "-p", "action_source:=next_state", "-p", "action_joints:=[elbow]"],
            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=out, stderr=subprocess.STDOUT, timeout=60,
        )  # fmt: skip
    assert proc.returncode != 0
    assert "action_joints" in log.read_text()
