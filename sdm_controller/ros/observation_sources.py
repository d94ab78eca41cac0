"""Where the policy node reads each per-stream observation from, by observation kind.

Low-dim streams are filled together from ``joint_states`` by joint name; every other stream has
a topic of its own. ``OBSERVATION_SOURCES`` says, per kind, which message type to subscribe to,
on which (relative, remappable) topic, and how a message becomes the plain value that the
core's ``control.frames.FRAME_INTAKE`` takes. A new observation kind adds its row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sensor_msgs.msg import Image

from sdm_controller.policy.observation_spec import IMAGE
from sdm_controller.ros.conversions import image_fields
from sdm_controller.ros.topics import image_topic


@dataclass(frozen=True)
class FrameSource:
    """The ROS side of one per-stream observation kind."""

    message: type  # the message type subscribed to
    topic: Callable[[str], str]  # stream name -> topic
    fields: Callable[[Any], Any]  # message -> the raw frame the core takes


OBSERVATION_SOURCES: dict[str, FrameSource] = {
    IMAGE: FrameSource(Image, image_topic, image_fields),
}
