"""Raw image fields (what ``sensor_msgs/Image`` carries) → uint8 RGB at the policy's input size.

No cv_bridge: it is built against numpy 1.x on Humble/Jazzy and crashes under numpy 2. The
fields are checked against each other before any pixel is read, because a truncated or
mislabelled buffer would otherwise turn into a plausible-looking but wrong image:

* ``step`` (bytes per row) must be at least ``width * bytes_per_pixel``;
* ``data`` must hold exactly ``height * step`` bytes (at least that much for the last row's padding
  is not enough: a ROS image is always ``height * step`` long).

Resizing: a frame of any size is first centre-cropped to the policy's aspect ratio, then resized
with ``cv2.INTER_AREA`` (the right filter for downscaling; cropping first keeps the scale factor
integral for common sizes such as 480x480 → 96x96, which is also about 4x faster).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sdm_controller.common.rejected import BAD_ENCODING, BAD_SIZE, EMPTY_DATA, RejectedInput

#: encoding -> (channels, bytes per channel)
ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "8UC3": (3, 1),  # treated as bgr8, OpenCV's order
    "mono16": (1, 2),
}


@dataclass(frozen=True)
class RawImage:
    """The fields of a ``sensor_msgs/Image`` (``data`` as any bytes-like object)."""

    height: int
    width: int
    encoding: str
    step: int
    data: bytes | bytearray | memoryview | np.ndarray
    is_bigendian: bool = False


def decode_image(image: RawImage) -> np.ndarray:
    """Check the fields and return (height, width, 3) uint8 RGB (a new array)."""
    if image.encoding not in ENCODINGS:
        raise RejectedInput(
            BAD_ENCODING, f"image encoding '{image.encoding}' is not supported; use one of {sorted(ENCODINGS)}"
        )
    channels, depth = ENCODINGS[image.encoding]
    height, width, step = int(image.height), int(image.width), int(image.step)
    buffer = np.frombuffer(image.data, dtype=np.uint8) if not isinstance(image.data, np.ndarray) else image.data
    buffer = buffer.reshape(-1).view(np.uint8)
    if height <= 0 or width <= 0 or buffer.size == 0:
        raise RejectedInput(EMPTY_DATA, f"image is empty ({width}x{height}, {buffer.size} bytes of data)")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise RejectedInput(
            BAD_SIZE, f"image step {step} is less than width {width} x {channels * depth} bytes per pixel "
            f"({image.encoding})"
        )
    if buffer.size != height * step:
        raise RejectedInput(
            BAD_SIZE, f"image data has {buffer.size} bytes; {image.encoding} {width}x{height} with step {step} "
            f"needs height x step = {height * step}"
        )
    rows = buffer.reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if image.is_bigendian else "<u2")
        pixels = (rows.copy().view(dtype).reshape(height, width) >> 8).astype(np.uint8)
    else:
        pixels = rows.reshape(height, width, channels)
    encoding = image.encoding
    if channels == 1:
        return cv2.cvtColor(np.ascontiguousarray(pixels.reshape(height, width)), cv2.COLOR_GRAY2RGB)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    if encoding in ("bgr8", "8UC3"):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
    if encoding == "rgba8":
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGRA2RGB)  # bgra8


def centre_crop_to_aspect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred region of ``image`` with the aspect ratio ``width / height`` (a view)."""
    h, w = image.shape[:2]
    if h * width > w * height:  # too tall
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        return image[top : top + new_h]
    new_w = max(1, round(h * width / height))
    left = (w - new_w) // 2
    return image[:, left : left + new_w]


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 → (height, width, 3) uint8: centre crop to the aspect ratio, then INTER_AREA."""
    if image.shape[:2] == (height, width):
        return image
    cropped = centre_crop_to_aspect(image, height, width)
    if cropped.shape[:2] == (height, width):
        return np.ascontiguousarray(cropped)
    return cv2.resize(np.ascontiguousarray(cropped), (width, height), interpolation=cv2.INTER_AREA)


def image_to_policy_input(image: RawImage, height: int, width: int) -> np.ndarray:
    """Decode, crop and resize in one call: the frame as the policy takes it."""
    return fit_image(decode_image(image), height, width)
