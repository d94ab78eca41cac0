"""A RealSense camera or recording as a source of plain frames (numpy arrays plus what they are).

    source = RealSenseSource(SourceConfig(serial_no="123622270136"))   # or playback_file="x.db3"
    frames = source.read(timeout_s=1.0)   # [] when nothing came; else color and/or depth Frames
    source.close()

Both kinds go through ``rs.pipeline``: a camera is chosen by serial (any connected one when the
serial is empty) and its streams are requested at ``width`` x ``height`` and ``fps``; a recording
(``.db3`` rosbag2 or ``.bag``, e.g. from ``rs.recorder`` or the RealSense Viewer) plays the streams
it holds, whatever their size, in real time unless ``playback_real_time`` is false. With
``align_depth`` the depth image is reprojected onto the color camera (``rs.align``): same size and
intrinsics as the color image. On a camera, ``global_time`` turns on the SDK's mapping of the
hardware clock onto the host clock, so timestamps arrive in the host's domain (see
``capture_clock``). Opening fails fast with a :class:`CameraError` that says what to change: no
camera connected (checked before ``pipeline.start``, which would otherwise wait about 15 s), no
camera with that serial, a missing file, a stream the camera or file does not have.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdm_controller.errors import SdmError

COLOR = "color"
DEPTH = "depth"
COLOR_ENCODINGS = ("rgb8", "bgr8")
DEPTH_ENCODING = "16UC1"  # z16: depth in units of depth_scale metres (1 mm on D400 cameras)


class CameraError(SdmError):
    """A camera or recording that cannot be opened as configured; the message says what to change."""


@dataclass(frozen=True)
class SourceConfig:
    """What to open and how (field names = the node's parameter names)."""

    serial_no: str = ""  # empty: the only (or first) connected camera
    playback_file: str = ""  # a recording instead of a camera
    width: int = 640
    height: int = 480
    fps: int = 30
    enable_color: bool = True
    enable_depth: bool = True
    color_format: str = "rgb8"  # encoding of the published color image
    align_depth: bool = False
    global_time: bool = True
    playback_real_time: bool = True

    def __post_init__(self) -> None:
        if not (self.enable_color or self.enable_depth):
            raise CameraError("enable_color and enable_depth are both false: enable at least one stream")
        if self.color_format not in COLOR_ENCODINGS:
            raise CameraError(f"color_format '{self.color_format}' is not supported; use one of {COLOR_ENCODINGS}")
        if self.align_depth and not (self.enable_color and self.enable_depth):
            raise CameraError("align_depth needs both enable_color and enable_depth")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one stream (pixels) and its distortion as the SDK names it."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str  # e.g. brown_conrady, inverse_brown_conrady, kannala_brandt4, none
    coeffs: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class Frame:
    """One image of one stream, copied out of the SDK's buffer."""

    stream: str  # COLOR or DEPTH
    number: int  # the device's frame counter
    timestamp_ms: float  # device timestamp in its domain
    domain: str  # global_time, system_time or hardware_clock
    receive_ns: int  # host clock when the frameset was handed to us
    array: np.ndarray  # (H, W, 3) uint8 for color, (H, W) uint16 for depth
    encoding: str
    intrinsics: Intrinsics


class RealSenseSource:
    """An open pipeline; ``read`` returns the next frameset's frames. Not thread-safe: one reader."""

    def __init__(self, config: SourceConfig, now_ns: Callable[[], int] = time.time_ns) -> None:
        import pyrealsense2 as rs  # here, so that importing this module never needs the driver

        self._rs = rs
        self.config = config
        self._now_ns = now_ns
        self.playback = bool(config.playback_file)
        self._pipeline = rs.pipeline()
        rs_config = rs.config()
        if self.playback:
            self._configure_playback(rs_config)
        else:
            self._configure_camera(rs_config)
        try:
            profile = self._pipeline.start(rs_config)
        except RuntimeError as exc:
            raise CameraError(self._start_failure(exc)) from exc
        device = profile.get_device()
        self.name = _info(device, rs.camera_info.name) or "RealSense"
        self.serial = _info(device, rs.camera_info.serial_number)
        self.depth_scale = device.first_depth_sensor().get_depth_scale() if config.enable_depth else None
        self._playback = device.as_playback() if self.playback else None
        if self._playback is not None:
            self._playback.set_real_time(config.playback_real_time)
        else:
            _set_global_time(rs, device, config.global_time)
        self.stream_fps = {
            s.stream_type().name: s.fps() for s in profile.get_streams() if s.stream_type().name in (COLOR, DEPTH)
        }
        self._align = rs.align(rs.stream.color) if config.align_depth else None
        self.ended = False

    # -- opening ----------------------------------------------------------------------------
    def _configure_playback(self, rs_config) -> None:
        rs, path = self._rs, Path(self.config.playback_file).expanduser()
        if not path.is_file():
            raise CameraError(f"playback_file '{path}' does not exist; give a RealSense recording (.db3 or .bag)")
        rs_config.enable_device_from_file(str(path), repeat_playback=False)
        if self.config.enable_color:
            rs_config.enable_stream(rs.stream.color)
        if self.config.enable_depth:
            rs_config.enable_stream(rs.stream.depth)

    def _configure_camera(self, rs_config) -> None:
        rs, cfg = self._rs, self.config
        serials = [_info(d, rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if not serials:
            raise CameraError(
                "no RealSense camera is connected (librealsense found no device); connect one (USB 3), check "
                "the udev rules and, in a container, --privileged; or set 'playback_file' to a recording"
            )
        if cfg.serial_no and cfg.serial_no not in serials:
            raise CameraError(
                f"no RealSense camera with serial_no '{cfg.serial_no}' is connected; connected: {', '.join(serials)}"
            )
        if cfg.serial_no:
            rs_config.enable_device(cfg.serial_no)
        fmt = rs.format.rgb8 if cfg.color_format == "rgb8" else rs.format.bgr8
        if cfg.enable_color:
            rs_config.enable_stream(rs.stream.color, cfg.width, cfg.height, fmt, cfg.fps)
        if cfg.enable_depth:
            rs_config.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)

    def _start_failure(self, exc: RuntimeError) -> str:
        cfg = self.config
        streams = " and ".join(s for s, on in ((COLOR, cfg.enable_color), (DEPTH, cfg.enable_depth)) if on)
        if self.playback:
            return (
                f"cannot play '{cfg.playback_file}' with {streams}: {exc}; a stream the recording lacks can be "
                "turned off with enable_color / enable_depth"
            )
        return (
            f"cannot start the camera with {streams} at {cfg.width}x{cfg.height} {cfg.fps} fps: {exc}; "
            "choose a width, height and fps the camera offers (e.g. 640x480 at 30)"
        )

    # -- reading ----------------------------------------------------------------------------
    def read(self, timeout_s: float = 1.0) -> list[Frame]:
        """The next frameset's frames (color first); [] after ``timeout_s`` without one."""
        ok, frameset = self._pipeline.try_wait_for_frames(max(1, round(timeout_s * 1000)))
        receive_ns = self._now_ns()
        if not ok:
            if self._playback is not None and self._playback.current_status() == self._rs.playback_status.stopped:
                self.ended = True
            return []
        color = frameset.get_color_frame() if self.config.enable_color else None
        depth = frameset.get_depth_frame() if self.config.enable_depth else None
        if self._align is not None:
            if not (color and depth):
                return [self._frame(COLOR, color, receive_ns)] if color else []  # nothing to align depth to
            aligned = self._align.process(frameset)
            color, depth = aligned.get_color_frame(), aligned.get_depth_frame()
        frames = []
        if color:
            frames.append(self._frame(COLOR, color, receive_ns))
        if depth:
            frames.append(self._frame(DEPTH, depth, receive_ns))
        return frames

    def _frame(self, stream: str, frame, receive_ns: int) -> Frame:
        profile = frame.get_profile().as_video_stream_profile()
        pixels = np.asanyarray(frame.get_data())
        if stream == COLOR:
            array = convert_color(pixels, profile.format().name, self.config.color_format)
            encoding = self.config.color_format
        else:
            array, encoding = pixels.copy(), DEPTH_ENCODING
        i = profile.get_intrinsics()
        intrinsics = Intrinsics(i.width, i.height, i.fx, i.fy, i.ppx, i.ppy, i.model.name, tuple(i.coeffs))
        return Frame(
            stream,
            int(frame.get_frame_number()),
            float(frame.get_timestamp()),
            frame.get_frame_timestamp_domain().name,
            receive_ns,
            array,
            encoding,
            intrinsics,
        )

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._pipeline.stop()


def convert_color(pixels: np.ndarray, source: str, target: str) -> np.ndarray:
    """A contiguous (H, W, 3) copy of ``pixels`` (format ``source``) in encoding ``target``."""
    if source not in ("rgb8", "bgr8", "rgba8", "bgra8"):
        raise CameraError(f"color frames in format {source} cannot be published; record rgb8 or bgr8")
    rgb_first = source.startswith("rgb")
    channels = [0, 1, 2] if rgb_first == (target == "rgb8") else [2, 1, 0]
    return np.ascontiguousarray(pixels[..., channels])


def _info(device, key) -> str:
    return device.get_info(key) if device.supports(key) else ""


def _set_global_time(rs, device, enabled: bool) -> None:
    for sensor in device.query_sensors():
        if sensor.supports(rs.option.global_time_enabled):
            sensor.set_option(rs.option.global_time_enabled, 1.0 if enabled else 0.0)
