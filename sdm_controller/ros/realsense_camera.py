"""``realsense_camera``: a RealSense camera (or a recording of one) as ROS image topics.

    ros2 run sdm_controller realsense_camera --ros-args -r __ns:=/camera \
        --params-file config/realsense_camera.yaml -p serial_no:="'123622270136'"
    python -m sdm_controller.ros.realsense_camera --ros-args -p playback_file:=/path/to/recording.db3

Topics (relative, so a namespace or remap places them):

* ``color/image_raw`` (``sensor_msgs/Image``, rgb8 or bgr8) and ``color/camera_info``;
* ``depth/image_raw`` (16UC1, units of ``depth_scale`` metres, 1 mm on D400 cameras) and
  ``depth/camera_info``; with ``align_depth`` the depth image is reprojected onto the color camera
  (same size, intrinsics and ``frame_id`` as the color image);
* ``/diagnostics`` (1 Hz): per stream the publish rate, frames published, repeated and stale frames
  dropped, frames lost (skipped numbers), the newest frame's age; ERROR when a stream has sent
  nothing for ``frame_timeout_s``.

Publishers are reliable with depth 1, which matches both reliable and best-effort (sensor QoS)
subscribers. Every image is stamped with its capture time on the host clock, not the time it
was published (``sdm_controller.sensors.capture_clock``): the timestamp itself when the camera
reports host time (``global_time``), else the device clock's spacing anchored to arrival times
(hardware clock, and always for recordings, whose host times are from when they were recorded).
A frame whose number is not newer than the last one published on its stream is dropped
(``sdm_controller.sensors.frame_gate``). Frames are read and published on a thread of their own;
the executor runs only the diagnostics timer and the parameter services.

Parameters (all read-only: set them at start, e.g. in ``config/realsense_camera.yaml``) are listed
in :data:`PARAMETERS`. If no camera is connected (or none with ``serial_no``), the recording is
missing, or the streams cannot be started, the node logs why and exits with status 1 at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import fields
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from sdm_controller.ros.conversions import ns_to_stamp
from sdm_controller.ros.node_main import run_node
from sdm_controller.ros.topics import DIAGNOSTICS, IMAGE_QOS, image_topic
from sdm_controller.sensors.camera_report import CameraReport, camera_report
from sdm_controller.sensors.capture_clock import CaptureClock
from sdm_controller.sensors.frame_gate import PUBLISHED, FrameGate
from sdm_controller.sensors.realsense_source import (
    COLOR,
    DEPTH,
    CameraError,
    Frame,
    Intrinsics,
    RealSenseSource,
    SourceConfig,
)

NODE_NAME = "realsense_camera"
THROTTLE_S = 5.0
NS = 1_000_000_000

# name, default, description, integer range
PARAMETERS: tuple[tuple[str, Any, str, tuple[int, int] | None], ...] = (
    ("serial_no", "", "Serial number of the camera to open (quote it in YAML); empty = the connected one.", None),
    (
        "playback_file",
        "",
        "A RealSense recording (.db3 or .bag) to play instead of a camera; its own stream sizes and rates apply.",
        None,
    ),
    ("playback_real_time", True, "Play a recording at its recorded pace (false: as fast as it is read).", None),
    (
        "playback_wait_s",
        0.0,
        "Before playing a recording, wait up to this long until every image topic has a "
        "subscriber (so one started at the same time sees the first frame); 0 = play at once.",
        None,
    ),
    ("width", 640, "Image width of the camera streams (pixels).", (1, 4096)),
    ("height", 480, "Image height of the camera streams (pixels).", (1, 4096)),
    ("fps", 30, "Frame rate of the camera streams.", (1, 300)),
    ("enable_color", True, "Publish color/image_raw and color/camera_info.", None),
    ("enable_depth", True, "Publish depth/image_raw and depth/camera_info.", None),
    ("color_format", "rgb8", "Encoding of color/image_raw: rgb8 or bgr8.", None),
    ("align_depth", False, "Reproject depth onto the color camera (needs both streams).", None),
    ("global_time", True, "Let the SDK map the camera clock onto the host clock (camera only).", None),
    ("frame_prefix", "camera", "frame_id prefix: <prefix>_color_optical_frame, <prefix>_depth_optical_frame.", None),
    ("frame_timeout_s", 2.0, "A stream without a frame for this long is reported as an ERROR.", None),
)


def declare(node: Node) -> dict[str, Any]:
    values = {}
    for name, default, description, int_range in PARAMETERS:
        descriptor = ParameterDescriptor(description=description, read_only=True)
        if int_range is not None:
            descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
        values[name] = node.declare_parameter(name, default, descriptor).value
    return values


class RealSenseCameraNode(Node):
    """Thin adapter: :class:`RealSenseSource` → gate → capture clock → messages."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = declare(self)
        config = SourceConfig(**{f.name: values[f.name] for f in fields(SourceConfig)})  # raises CameraError
        self._frame_prefix = values["frame_prefix"]
        self._frame_timeout_s = float(values["frame_timeout_s"])
        streams = [s for s, on in ((COLOR, config.enable_color), (DEPTH, config.enable_depth)) if on]
        # Publishers first: a recording starts playing when the pipeline starts, and subscribers
        # can only be matched to publishers that exist.
        self._image_pubs = {s: self.create_publisher(Image, image_topic(s), IMAGE_QOS) for s in streams}
        self._info_pubs = {s: self.create_publisher(CameraInfo, f"{s}/camera_info", IMAGE_QOS) for s in streams}
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self.gates = {stream: FrameGate() for stream in streams}
        if config.playback_file and values["playback_wait_s"] > 0:
            self._wait_for_subscribers(float(values["playback_wait_s"]))
        self._started_ns = self._now_ns()
        self.source = RealSenseSource(config, now_ns=self._now_ns)  # raises CameraError
        self.clock = CaptureClock(playback=self.source.playback)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._error = ""
        self._ended_logged = False
        self._closing = threading.Event()
        what = f"recording '{config.playback_file}'" if self.source.playback else f"camera {self.source.serial}"
        self.get_logger().info(
            f"{self.source.name} ({what}): publishing {', '.join(f'{s}/image_raw' for s in streams)}"
            f"{' (depth aligned to color)' if config.align_depth else ''}"
        )
        self._reader = threading.Thread(target=self._read_loop, name="realsense-reader", daemon=True)
        self._reader.start()

    def _wait_for_subscribers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(pub.get_subscription_count() == 0 for pub in self._image_pubs.values()):
            if time.monotonic() > deadline:
                self.get_logger().warning(f"no subscriber on every image topic after {timeout_s} s; playing anyway")
                return
            time.sleep(0.05)

    # -- frames -----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        while not self._closing.is_set():
            try:
                frames = self.source.read(timeout_s=0.5)
            except Exception as exc:  # noqa: BLE001 - a camera error must not end the thread silently
                self._error = f"reading frames failed: {exc}"
                self.get_logger().error(self._error, throttle_duration_sec=THROTTLE_S)
                time.sleep(0.5)
                continue
            self._error = ""
            if not frames and self.source.ended and not self._ended_logged:
                self._ended_logged = True
                self.get_logger().info("the recording has ended; nothing more will be published")
            for frame in frames:
                self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        verdict = self.gates[frame.stream].offer(frame.number, frame.timestamp_ms, frame.receive_ns)
        if verdict not in PUBLISHED or self._closing.is_set() or not self.context.ok():
            return
        stamp_ns = self.clock.capture_ns(frame.timestamp_ms, frame.domain, frame.receive_ns)
        aligned = frame.stream == DEPTH and self.source.config.align_depth
        header = Header(
            stamp=ns_to_stamp(stamp_ns),
            frame_id=f"{self._frame_prefix}_{COLOR if aligned else frame.stream}_optical_frame",
        )
        self._image_pubs[frame.stream].publish(image_message(frame, header))
        self._info_pubs[frame.stream].publish(camera_info_message(frame.intrinsics, header))

    # -- diagnostics ------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if not self.context.ok():
            return
        now = self._now_ns()
        source = self.source
        info = (
            ("device", source.name),
            ("serial_no", source.serial),
            ("playback_file", source.config.playback_file),
            ("stamp_mode", self.clock.last_mode or ""),
            ("clock_offset_ms", "" if self.clock.offset_ns is None else f"{self.clock.offset_ns / 1e6:.3f}"),
            ("depth_scale_m", "" if source.depth_scale is None else f"{source.depth_scale:g}"),
        )
        report = camera_report(
            self.gates,
            source.stream_fps,
            now,
            self._started_ns,
            self._frame_timeout_s,
            ended=source.ended,
            error=self._error,
            info=info,
        )
        self._diagnostics_pub.publish(
            diagnostics_message(report, f"{self.get_name()}: camera", self.get_fully_qualified_name(), now)
        )

    # -- helpers ----------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def close(self) -> None:
        """Stop the reader thread and the pipeline (before ``destroy_node``)."""
        self._closing.set()
        self._reader.join(timeout=5.0)
        self.source.close()


# -- messages -------------------------------------------------------------------------------------
def image_message(frame: Frame, header: Header) -> Image:
    height, width = frame.array.shape[:2]
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=frame.encoding,
        is_bigendian=0,
        step=frame.array.strides[0],
        data=frame.array.tobytes(),
    )


def camera_info_message(intrinsics: Intrinsics, header: Header) -> CameraInfo:
    """Pinhole model; RealSense's Brown-Conrady family maps to ROS plumb_bob, Kannala-Brandt to equidistant."""
    i = intrinsics
    model = "equidistant" if i.model == "kannala_brandt4" else "plumb_bob"
    coeffs = list(i.coeffs[:4]) if model == "equidistant" else list(i.coeffs[:5])
    return CameraInfo(
        header=header,
        height=i.height,
        width=i.width,
        distortion_model=model,
        d=coeffs,
        k=[i.fx, 0.0, i.ppx, 0.0, i.fy, i.ppy, 0.0, 0.0, 1.0],
        r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p=[i.fx, 0.0, i.ppx, 0.0, 0.0, i.fy, i.ppy, 0.0, 0.0, 0.0, 1.0, 0.0],
    )


def diagnostics_message(report: CameraReport, name: str, hardware_id: str, stamp_ns: int) -> DiagnosticArray:
    status = DiagnosticStatus(
        name=name,
        message=report.message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in report.values],
    )
    status.level = bytes([report.level])  # a `byte` field: rclpy takes a length-1 bytes value
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = ns_to_stamp(stamp_ns)
    return msg


def main(args: list[str] | None = None) -> None:
    run_node(RealSenseCameraNode, NODE_NAME, args, start_errors=(CameraError,))


if __name__ == "__main__":
    main()
