"""How the policy node takes one frame of a per-stream input, by observation kind.

Low-dim streams are filled together from ``joint_states`` by joint name (``common.joints``);
every other stream arrives on a topic of its own, one frame per message. ``FRAME_INTAKE`` turns
the plain value that ``ros/observation_sources.py`` makes of such a message into the array the
policy takes, or raises ``RejectedInput`` saying why the frame cannot be used. A new observation
kind adds its intake here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sdm_controller.common.images import image_to_policy_input
from sdm_controller.policy.observation_spec import IMAGE, ObservationStream


def take_image(raw: Any, stream: ObservationStream) -> np.ndarray:
    """A decoded camera frame, centre-cropped and resized to the stream's (H, W, 3) uint8 RGB."""
    height, width = stream.shape[:2]
    return image_to_policy_input(raw, height, width)


#: Observation kind -> (raw frame, its stream) -> the frame the policy takes.
FRAME_INTAKE: dict[str, Callable[[Any, ObservationStream], np.ndarray]] = {
    IMAGE: take_image,
}
