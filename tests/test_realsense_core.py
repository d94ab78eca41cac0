"""The camera node's ROS-free core: frame gate, capture clock, diagnostics report, and the RealSense
source playing a recording made with a software device (no camera needed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sdm_controller.sensors.camera_report import ERROR, OK, WARN, camera_report
from sdm_controller.sensors.capture_clock import ANCHORED, HOST, CaptureClock
from sdm_controller.sensors.frame_gate import NEW, PUBLISHED, REPEAT, RESTART, STALE, FrameGate
from sdm_controller.sensors.realsense_source import CameraError, SourceConfig, convert_color

MS = 1_000_000
S = 1_000_000_000


# -- frame gate -----------------------------------------------------------------------------------
def test_gate_drops_repeated_and_stale_frames_and_counts_lost_ones():
    gate = FrameGate()
    offers = [(1, 100.0), (2, 133.0), (2, 133.0), (5, 233.0), (3, 166.0), (5, 233.0), (6, 266.0)]
    verdicts = [gate.offer(n, ts, i * 33 * MS) for i, (n, ts) in enumerate(offers)]
    assert verdicts == [NEW, NEW, REPEAT, NEW, STALE, REPEAT, NEW]
    counts = gate.counts
    assert (counts.published, counts.repeats, counts.stale, counts.lost, counts.last_number) == (4, 2, 1, 2, 6)


def test_gate_accepts_a_restarted_numbering_with_a_newer_timestamp():
    gate = FrameGate()
    for i, n in enumerate((100, 101, 102)):
        gate.offer(n, 1000.0 + 33 * i, i * 33 * MS)
    assert gate.offer(1, 5000.0, S) == RESTART  # device restarted: lower number, newer timestamp
    assert gate.offer(2, 5033.0, S + 33 * MS) == NEW
    assert gate.offer(1, 5000.0, S + 66 * MS) == STALE
    assert gate.counts.restarts == 1 and gate.counts.last_number == 2


def test_gate_restarts_after_a_run_of_stale_frames():
    gate = FrameGate(restart_after=3)
    for i, n in enumerate((500, 501)):
        gate.offer(n, 9000.0 + 33 * i, i * 33 * MS)
    # numbering and device clock both started again (e.g. a camera reset)
    verdicts = [gate.offer(n, 10.0 + 33 * n, S + n * 33 * MS) for n in (1, 2, 3, 4)]
    assert verdicts == [STALE, STALE, RESTART, NEW]
    assert gate.counts.stale == 2 and gate.counts.restarts == 1


def test_gate_rate_and_age():
    gate = FrameGate(rate_window_s=5.0)
    for n in range(31):  # 30 intervals over 1 s
        gate.offer(n, n * 33.3, n * S // 30)
        gate.offer(n, n * 33.3, n * S // 30 + 1)  # repeats do not count towards the rate
    assert gate.rate.rate(S) == pytest.approx(30.0)
    assert gate.age_s(S + S // 2) == pytest.approx(0.5)
    assert FrameGate().age_s(S) is None


# -- capture clock ----------------------------------------------------------------------------------
def test_host_domains_of_a_camera_are_used_as_they_are():
    clock = CaptureClock(playback=False)
    t_ms = 1_795_000_000_000.0  # wall-clock milliseconds
    assert clock.capture_ns(t_ms, "global_time", round(t_ms * MS) + 20 * MS) == round(t_ms * MS)
    assert clock.last_mode == HOST
    assert clock.capture_ns(t_ms, "system_time", round(t_ms * MS) + 5 * MS) == round(t_ms * MS)
    # never later than the arrival (a global-time estimate may run a little ahead)
    assert clock.capture_ns(t_ms, "global_time", round(t_ms * MS) - MS) == round(t_ms * MS) - MS


def test_hardware_clock_keeps_device_spacing_and_is_anchored_on_the_fastest_arrival():
    clock = CaptureClock(playback=False)
    arrival0 = 1_795_000_000 * S
    device_ms = [0.0, 30.0, 66.7, 96.7, 133.3]
    latency_ms = [12.0, 8.0, 25.0, 8.5, 9.0]  # frame 2 was delayed in transport
    stamps = [
        clock.capture_ns(d, "hardware_clock", arrival0 + round((d + lat) * MS))
        for d, lat in zip(device_ms, latency_ms, strict=True)
    ]
    assert clock.last_mode == ANCHORED
    # from frame 1 on, the offset is the smallest latency seen (8 ms): stamps = arrival0 + device + 8 ms
    expected = [arrival0 + round((d + 8.0) * MS) for d in device_ms]
    assert stamps[0] == arrival0 + 12 * MS  # the first frame anchors on its own arrival
    assert stamps[1:] == expected[1:]  # the delayed frame is stamped at capture, not at arrival
    assert all(s <= arrival0 + round((d + lat) * MS) for s, d, lat in zip(stamps, device_ms, latency_ms, strict=True))
    assert np.all(np.diff(stamps) > 0)


def test_clock_anchors_afresh_when_the_device_clock_jumps_back():
    clock = CaptureClock()
    base = 1_795_000_000 * S
    for n in range(10):
        clock.capture_ns(5000.0 + 33 * n, "hardware_clock", base + (n * 33 + 5) * MS)
    # the camera restarted its clock at 0: without re-anchoring this frame would be stamped 5 s early
    arrival = base + 400 * MS
    assert clock.capture_ns(0.0, "hardware_clock", arrival) == arrival
    assert clock.capture_ns(33.0, "hardware_clock", arrival + 34 * MS) == arrival + 33 * MS


def test_recordings_are_always_anchored_even_with_host_domains():
    clock = CaptureClock(playback=True)
    now = 1_795_000_000 * S
    recorded_ms = 1_600_000_000_000.0  # system_time of the day it was recorded
    first = clock.capture_ns(recorded_ms, "system_time", now)
    second = clock.capture_ns(recorded_ms + 33.0, "system_time", now + 34 * MS)
    assert clock.last_mode == ANCHORED
    assert first == now and second - first == 33 * MS


def test_anchor_follows_a_drifting_camera_clock_within_its_window():
    clock = CaptureClock(window_s=2.0)
    # the camera clock runs 1% slow: arrival - device grows by 0.33 ms per 33 ms frame
    stamps, arrivals = [], []
    for n in range(300):  # 10 s
        arrival = 10 * S + n * 33_333_333
        device_ms = n * 33.0
        stamps.append(clock.capture_ns(device_ms, "hardware_clock", arrival))
        arrivals.append(arrival)
    lag_ms = (np.array(arrivals) - np.array(stamps)) / MS
    assert lag_ms.max() < 0.01 * 2000 + 1  # bounded by the drift over one window, not growing
    assert (lag_ms >= 0).all()


# -- diagnostics report -----------------------------------------------------------------------------
def _gate_at(rate_hz: float, seconds: float = 2.0) -> FrameGate:
    gate = FrameGate()
    n = int(rate_hz * seconds)
    for i in range(n + 1):
        gate.offer(i, i * 1000 / rate_hz, round(i * S / rate_hz))
    return gate


def test_report_levels():
    now = 2 * S
    ok = camera_report({"color": _gate_at(30), "depth": _gate_at(30)}, {"color": 30, "depth": 30}, now, 0, 2.0)
    assert ok.level == OK and "color 30.0 Hz" in ok.message
    values = dict(ok.values)
    assert values["color published"] == "61" and values["depth repeats_dropped"] == "0"
    slow = camera_report({"color": _gate_at(10)}, {"color": 30}, now, 0, 2.0)
    assert slow.level == WARN and "color at 10.0 Hz" in slow.message
    silent = camera_report({"color": _gate_at(30)}, {"color": 30}, now + 3 * S, 0, 2.0)
    assert silent.level == ERROR and "no color frame for 3.0 s" in silent.message
    never = camera_report({"depth": FrameGate()}, {"depth": 30}, 5 * S, 0, 2.0)
    assert never.level == ERROR and "no depth frame" in never.message
    ended = camera_report({"color": _gate_at(30)}, {"color": 30}, now + 9 * S, 0, 2.0, ended=True)
    assert ended.level == WARN and "ended" in ended.message


# -- source helpers -------------------------------------------------------------------------------
def test_color_conversion_and_config_checks():
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(convert_color(rgb, "rgb8", "rgb8"), rgb)
    np.testing.assert_array_equal(convert_color(rgb, "rgb8", "bgr8"), rgb[..., ::-1])
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 255, np.uint8)], axis=2)
    out = convert_color(rgba, "rgba8", "bgr8")
    assert out.flags.c_contiguous and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, rgb[..., ::-1])
    with pytest.raises(CameraError, match="yuyv"):
        convert_color(rgb, "yuyv", "rgb8")
    with pytest.raises(CameraError, match="enable at least one"):
        SourceConfig(enable_color=False, enable_depth=False)
    with pytest.raises(CameraError, match="color_format 'mono8'"):
        SourceConfig(color_format="mono8")
    with pytest.raises(CameraError, match="align_depth needs"):
        SourceConfig(enable_depth=False, align_depth=True)


# -- the source on a recording --------------------------------------------------------------------
rs = pytest.importorskip("pyrealsense2")

from sdm_controller.sensors.realsense_source import COLOR, DEPTH, RealSenseSource  # noqa: E402
from sdm_controller.sensors.synthetic_recording import (  # noqa: E402
    DEPTH_BASE_MM,
    REPEAT_MARKER,
    STALE_MARKER,
    color_number,
    faulty_frames,
    write_recording,
)

FRAMES = faulty_frames(count=45, repeat_after=15, stale_after=30)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return write_recording(tmp_path_factory.mktemp("rs") / "faulty.db3", FRAMES)  # 1.5 s


def play(path, **config):
    # as fast as read: no frame is skipped because this process was slow (the node test plays in real time)
    source = RealSenseSource(SourceConfig(playback_file=str(path), playback_real_time=False, **config))
    frames = []
    try:
        deadline = time.monotonic() + 30
        while not source.ended and time.monotonic() < deadline:
            frames += source.read(timeout_s=0.3)
    finally:
        source.close()
    return source, frames


def test_source_plays_a_recording_and_the_gate_removes_what_the_sdk_repeats(recording):
    source, frames = play(recording)
    assert source.playback and source.serial == "000000000042" and source.depth_scale == pytest.approx(0.001)
    assert source.stream_fps == {COLOR: 30, DEPTH: 30}
    color = [f for f in frames if f.stream == COLOR]
    depth = [f for f in frames if f.stream == DEPTH]
    assert len(color) >= 30 and len(depth) >= 30
    for f in color:
        number, marker = color_number(f.array)
        assert f.array.shape == (48, 64, 3) and f.array.dtype == np.uint8 and f.encoding == "rgb8"
        assert number == f.number and f.domain == "hardware_clock"
        assert (f.intrinsics.width, f.intrinsics.fx, f.intrinsics.ppy) == (64, 64.0, 24.0)
    for f in depth:
        assert f.array.shape == (24, 32) and f.array.dtype == np.uint16 and f.encoding == "16UC1"
        assert (f.array == DEPTH_BASE_MM + f.number).all()
    # the SDK hands out the same frame number more than once (the injected faults and its own
    # re-use of a frame when the other stream moved on) ...
    assert len({f.number for f in color}) < len(color)
    # ... and the gate lets each number through once, in order. A marked fault passes only where the
    # SDK never delivered the original of its number (a loaded machine can make playback skip it).
    gate = FrameGate()
    passed = [f for f in color if gate.offer(f.number, f.timestamp_ms, f.receive_ns) in PUBLISHED]
    numbers = [color_number(f.array) for f in passed]
    originals = {color_number(f.array)[0] for f in color if color_number(f.array)[1] == 0}
    assert all(marker == 0 or number not in originals for number, marker in numbers), numbers
    assert np.all(np.diff([n for n, _ in numbers]) > 0)
    assert gate.counts.repeats >= 1 and gate.counts.stale >= 1
    markers = {color_number(f.array)[1] for f in color}
    assert {REPEAT_MARKER, STALE_MARKER} <= markers  # both faults did reach the gate


def test_source_aligns_depth_to_color_and_converts_to_bgr(recording):
    _, frames = play(recording, align_depth=True, color_format="bgr8")
    depth = [f for f in frames if f.stream == DEPTH]
    color = [f for f in frames if f.stream == COLOR]
    assert depth and color
    assert all(f.array.shape == (48, 64) and f.intrinsics == color[0].intrinsics for f in depth)
    assert all(f.encoding == "bgr8" for f in color)
    number, _ = color_number(color[-1].array[..., ::-1])
    assert number == color[-1].number


def test_source_errors_say_what_to_change(tmp_path, recording):
    with pytest.raises(CameraError, match="playback_file '.*missing.db3' does not exist"):
        RealSenseSource(SourceConfig(playback_file=str(tmp_path / "missing.db3")))
    if len(rs.context().query_devices()) == 0:
        t = time.monotonic()
        with pytest.raises(CameraError, match="no RealSense camera is connected"):
            RealSenseSource(SourceConfig(serial_no="123"))
        assert time.monotonic() - t < 5.0  # not pipeline.start's 15 s wait
