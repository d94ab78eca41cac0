"""realsense_camera over real DDS, without a camera: the node runs as its own process and plays a
recording written from a software device (content encodes each frame's number; a repeated and a
stale frame are injected); this test process subscribes to everything it publishes.

Discovery stays on this machine: ``conftest`` sets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
and a private ``ROS_DOMAIN_ID`` before anything imports rclpy, and the node processes inherit
both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
rs = pytest.importorskip("pyrealsense2")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from node_process import spun_node  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from sdm_controller.sensors.synthetic_recording import (  # noqa: E402
    DEPTH_BASE_MM,
    color_number,
    faulty_frames,
    write_recording,
)

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
FRAMES = faulty_frames(count=90, repeat_after=45, stale_after=70)  # 3 s at 30 fps
DEVICE_MS = {f.number: f.timestamp_ms for f in FRAMES if f.marker == 0}
STATUS = "realsense_camera: camera"
# What a subscriber of camera images would use (the policy node's sensor QoS), but keeping a few
# so that none is lost between executor turns in this test.
SENSOR_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def run_node(log: Path, *ros_args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env.get("ROS_DOMAIN_ID")
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sdm_controller.ros.realsense_camera", "--ros-args", *ros_args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what}" + (f"\nnode log:\n{log.read_text()[-4000:]}" if log else "")
    )


class Recorder:
    """Every message of the camera topics and diagnostics, with this process's receive time."""

    def __init__(self, node: Node) -> None:
        self.lock = threading.Lock()
        self.messages: dict[str, list] = defaultdict(list)
        self.diagnostics: list = []
        for topic, kind in (
            ("color/image_raw", Image),
            ("color/camera_info", CameraInfo),
            ("depth/image_raw", Image),
            ("depth/camera_info", CameraInfo),
        ):
            node.create_subscription(kind, topic, lambda msg, t=topic: self._add(t, msg), SENSOR_QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _add(self, topic: str, msg) -> None:
        with self.lock:
            self.messages[topic].append((time.time_ns(), msg))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics += [status for status in msg.status if status.name == STATUS]

    def get(self, topic: str) -> list:
        with self.lock:
            return list(self.messages[topic])

    def statuses(self) -> list:
        with self.lock:
            return list(self.diagnostics)


@pytest.fixture(scope="module")
def ros():
    with spun_node("realsense_camera_tester") as node:
        yield node, Recorder(node)


@pytest.fixture(scope="module")
def played(ros, tmp_path_factory):
    """The node plays the recording to its end; returns (recorder, node start ns, exit code, log)."""
    _, recorder = ros
    root = tmp_path_factory.mktemp("realsense_camera")
    recording = write_recording(root / "faulty.db3", FRAMES)
    log = root / "node.log"
    started_ns = time.time_ns()
    proc = run_node(
        log,
        "--params-file",
        str(REPO / "config" / "realsense_camera.yaml"),
        "-p",
        f"playback_file:={recording}",
        "-p",
        "playback_wait_s:=30.0",
    )
    try:
        wait_for(lambda: any("ended" in s.message for s in recorder.statuses()), 60, "the end of the recording", log)
    finally:
        code = stop(proc)
    return recorder, started_ns, code, log


def test_images_carry_each_frame_once_in_order(played):
    recorder, _, code, log = played
    assert code == 0, log.read_text()[-3000:]
    color = recorder.get("color/image_raw")
    depth = recorder.get("depth/image_raw")
    # the node waits for this subscriber before playing; the pipeline may still skip a first frame or two
    assert len(color) >= 75 and len(depth) >= 75, (len(color), len(depth))
    numbers = []
    for _, msg in color:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("rgb8", 64, 48, 64 * 3)
        assert msg.header.frame_id == "camera_color_optical_frame" and len(msg.data) == 64 * 48 * 3
        numbers.append(color_number(np.frombuffer(msg.data, np.uint8))[0])
    # no number twice (the injected repeat, the SDK re-using a frame) and none going back (the injected
    # stale frame); the marker in the content says which copy came, which is not for us to judge
    assert np.all(np.diff(numbers) > 0), numbers
    assert 46 in numbers and 90 in numbers  # frames after the faults still flow
    depth_numbers = []
    for _, msg in depth:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ("16UC1", 32, 24, 32 * 2)
        assert msg.header.frame_id == "camera_depth_optical_frame"
        values = np.frombuffer(msg.data, np.uint16)
        assert (values == values[0]).all()
        depth_numbers.append(int(values[0]) - DEPTH_BASE_MM)
    assert np.all(np.diff(depth_numbers) > 0), depth_numbers


def test_stamps_are_capture_times_with_the_device_spacing(played):
    recorder, started_ns, _, _ = played
    for topic, number_of in (
        ("color/image_raw", lambda m: color_number(np.frombuffer(m.data, np.uint8))[0]),
        ("depth/image_raw", lambda m: int(np.frombuffer(m.data, np.uint16)[0]) - DEPTH_BASE_MM),
    ):
        received = recorder.get(topic)
        stamps = np.array([stamp_ns(msg.header.stamp) for _, msg in received])
        arrivals = np.array([t for t, _ in received])
        device = np.array([DEVICE_MS[number_of(msg)] for _, msg in received])
        assert np.all(np.diff(stamps) > 0)
        # host clock, after the node started, never later than this process received the image
        assert (stamps > started_ns).all() and (stamps <= arrivals).all()
        assert np.median(arrivals - stamps) < 0.5e9
        # The recording's spacing alternates 30 and 36.7 ms. Stamps follow it exactly, except where a
        # faster delivery lowered the anchor (then the gap is shorter, never longer): a stamp taken at
        # arrival or publication would match almost never.
        gap_ms = np.diff(stamps) / 1e6
        device_gap_ms = np.diff(device)
        exact = np.abs(gap_ms - device_gap_ms) < 0.01
        assert exact.mean() >= 0.7, list(zip(gap_ms.round(3), device_gap_ms.round(3), strict=True))
        assert (gap_ms <= device_gap_ms + 0.01).all()


def test_camera_info_matches_each_image(played):
    recorder, _, _, _ = played
    for stream, (width, height) in (("color", (64, 48)), ("depth", (32, 24))):
        images = {stamp_ns(m.header.stamp) for _, m in recorder.get(f"{stream}/image_raw")}
        infos = recorder.get(f"{stream}/camera_info")
        assert len(infos) >= 75
        for _, info in infos:
            assert stamp_ns(info.header.stamp) in images
            assert info.header.frame_id == f"camera_{stream}_optical_frame"
            assert (info.width, info.height, info.distortion_model) == (width, height, "plumb_bob")
            np.testing.assert_allclose(info.k, [width, 0, width / 2, 0, width, height / 2, 0, 0, 1])
            np.testing.assert_allclose(info.p, [width, 0, width / 2, 0, 0, width, height / 2, 0, 0, 0, 1, 0])
            np.testing.assert_allclose(info.d, [0.0] * 5)


def test_diagnostics_report_rate_drops_and_the_end(played):
    recorder, _, _, _ = played
    statuses = recorder.statuses()
    values = [{kv.key: kv.value for kv in s.values} for s in statuses]
    playing = [
        v for s, v in zip(statuses, values, strict=True) if "ended" not in s.message and v["color published"] != "0"
    ]
    assert playing, [s.message for s in statuses]
    assert any(10.0 <= float(v["color rate_hz"]) <= 45.0 for v in playing), [v["color rate_hz"] for v in playing]
    final, last = statuses[-1], values[-1]
    assert final.level == b"\x01" and "recording has ended" in final.message
    assert last["device"] == "Synthetic RealSense (software device)" and last["stamp_mode"] == "anchored"
    assert last["color nominal_fps"] == "30" and last["depth_scale_m"] == "0.001"
    assert int(last["color repeats_dropped"]) >= 1 and int(last["color stale_dropped"]) >= 1
    assert int(last["color published"]) >= len(recorder.get("color/image_raw"))
    assert int(last["color published"]) <= 90


def test_without_a_camera_the_node_says_so_and_exits_non_zero(ros, tmp_path):
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense camera is connected")
    log = tmp_path / "no_camera.log"
    t = time.monotonic()
    proc = run_node(log)
    try:
        code = proc.wait(30)
    finally:
        stop(proc)
    assert code == 1
    assert time.monotonic() - t < 30
    assert "no RealSense camera is connected" in log.read_text()
    log = tmp_path / "no_file.log"
    proc = run_node(log, "-p", f"playback_file:={tmp_path / 'missing.db3'}")
    try:
        code = proc.wait(30)
    finally:
        stop(proc)
    assert code == 1 and "playback_file" in log.read_text() and "does not exist" in log.read_text()
