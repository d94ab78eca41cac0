"""A small RealSense recording made without a camera: a software device written by ``rs.recorder``.

    python -m sdm_controller.sensors.synthetic_recording /tmp/synthetic.db3     # 3 s of 64x48 color + depth

The node's tests play such a file (``playback_file``); it is also a quick smoke test of a
RealSense setup. Each frame's content encodes its number: color pixels are
``(number % 256, number // 256, marker)`` and depth pixels ``DEPTH_BASE_MM + number``, so a reader
can tell which frame it got (:func:`color_number`). A frame may repeat an earlier number; its
``marker`` shows whether such a frame was ever passed on.

Playback follows the host times at which frames reached the recorder, so frames are injected at
their timestamps' pace (a 3 s recording takes 3 s to write). A live ``rs.pipeline`` cannot open a
software device (librealsense finds no device), hence the file.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DEPTH_BASE_MM = 1000
SERIAL = "000000000042"


@dataclass(frozen=True)
class SyntheticFrame:
    number: int
    timestamp_ms: float
    marker: int = 0  # third color channel; tests mark repeated frames with it


def regular_frames(count: int, fps: float = 30.0, start_ms: float = 1000.0) -> list[SyntheticFrame]:
    """Frames 1..count at ``fps`` on a hardware-clock-like timeline starting at ``start_ms``."""
    return [SyntheticFrame(n, start_ms + (n - 1) * 1000.0 / fps) for n in range(1, count + 1)]


REPEAT_MARKER = 1
STALE_MARKER = 2


def faulty_frames(
    count: int = 90, fps: float = 30.0, repeat_after: int = 45, stale_after: int = 70, start_ms: float = 1000.0
) -> list[SyntheticFrame]:
    """Frames 1..count at ``fps`` on average, with uneven spacing (alternately 10% short and long,
    so stamps that follow the device clock are recognisable) and two faults the SDK is known for:
    after frame ``repeat_after`` the same number again (same timestamp, ``REPEAT_MARKER``), and after
    frame ``stale_after`` frame ``stale_after - 10`` again, with its old timestamp (``STALE_MARKER``).
    """
    period = 1000.0 / fps
    frames, t = [], start_ms
    for n in range(1, count + 1):
        frames.append(SyntheticFrame(n, t))
        if n == repeat_after:
            frames.append(SyntheticFrame(n, t, REPEAT_MARKER))
        if n == stale_after:
            frames.append(replace(frames[n - 11], marker=STALE_MARKER))  # frame n - 10 again
        t += period * (0.9 if n % 2 else 1.1)
    return frames


def color_pixels(frame: SyntheticFrame, width: int, height: int) -> np.ndarray:
    pixel = np.array([frame.number % 256, frame.number // 256, frame.marker], np.uint8)
    return np.ascontiguousarray(np.broadcast_to(pixel, (height, width, 3)))


def depth_pixels(frame: SyntheticFrame, width: int, height: int) -> np.ndarray:
    return np.full((height, width), DEPTH_BASE_MM + frame.number, np.uint16)


def color_number(rgb: np.ndarray) -> tuple[int, int]:
    """(frame number, marker) encoded in an rgb8 image by :func:`color_pixels`."""
    r, g, b = (int(v) for v in rgb.reshape(-1, 3)[0])
    return r + 256 * g, b


def write_recording(
    path: str | Path,
    frames: Sequence[SyntheticFrame],
    color_size: tuple[int, int] = (64, 48),
    depth_size: tuple[int, int] = (32, 24),
    fps: int = 30,
    domain: str = "hardware_clock",
) -> Path:
    """Record ``frames`` (color rgb8 and depth z16, same number and timestamp) to ``path`` (.db3)."""
    import pyrealsense2 as rs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = rs.software_device()
    device.register_info(rs.camera_info.name, "Synthetic RealSense (software device)")
    device.register_info(rs.camera_info.serial_number, SERIAL)
    depth_sensor, color_sensor = device.add_sensor("Depth"), device.add_sensor("Color")
    depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
    depth_profile = depth_sensor.add_video_stream(
        _video_stream(rs, rs.stream.depth, rs.format.z16, 2, 0, depth_size, fps)
    )
    color_profile = color_sensor.add_video_stream(
        _video_stream(rs, rs.stream.color, rs.format.rgb8, 3, 1, color_size, fps)
    )
    device.create_matcher(rs.matchers.default)
    recorder = rs.recorder(str(path), device)
    streams = (
        (depth_sensor, depth_profile, depth_pixels, depth_size, 2),
        (color_sensor, color_profile, color_pixels, color_size, 3),
    )
    for sensor, profile, _, _, _ in streams:
        sensor.open(profile)
        sensor.start(lambda frame: None)
    keep = []  # the SDK reads the pixels after on_video_frame returns
    start = time.monotonic()
    for frame in frames:
        delay = start + (frame.timestamp_ms - frames[0].timestamp_ms) / 1000.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for sensor, profile, pixels, (width, height), bpp in streams:
            video = rs.software_video_frame()
            keep.append(pixels(frame, width, height))
            video.pixels, video.bpp, video.stride = keep[-1], bpp, width * bpp
            video.timestamp, video.frame_number = frame.timestamp_ms, frame.number
            video.domain = getattr(rs.timestamp_domain, domain)
            video.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(video)
    for sensor, *_ in streams:
        sensor.stop()
        sensor.close()
    del recorder  # closes the file
    return path


def _video_stream(rs, kind, fmt, bpp: int, uid: int, size: tuple[int, int], fps: int):
    width, height = size
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.ppx, intrinsics.ppy = width / 2.0, height / 2.0
    intrinsics.fx = intrinsics.fy = float(width)  # about 53 degrees horizontal field of view
    intrinsics.model, intrinsics.coeffs = rs.distortion.brown_conrady, [0.0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid, stream.fmt, stream.bpp = kind, 0, uid, fmt, bpp
    stream.width, stream.height, stream.fps, stream.intrinsics = width, height, fps, intrinsics
    return stream


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="output file (.db3)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args(argv)
    frames = regular_frames(max(1, round(args.seconds * args.fps)), args.fps)
    print(write_recording(args.path, frames, fps=args.fps))


if __name__ == "__main__":
    main()
