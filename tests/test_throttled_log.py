"""ThrottledLog with rclpy's own loggers: one throttle per key, not per call site."""

from __future__ import annotations

import pytest

rclpy_logging = pytest.importorskip("rclpy.logging")

from sdm_controller.ros.throttled_log import ThrottledLog  # noqa: E402


def test_each_key_has_its_own_throttle():
    log = ThrottledLog(rclpy_logging.get_logger("throttle_test"), period_s=60.0)
    assert log.warning("joint_states nan", "first NaN")
    assert not log.warning("joint_states nan", "second NaN within the period")
    assert log.warning("front size", "a different fault right after is still shown")
    assert log.error("cycle engine_error", "errors too")
    assert not log.error("cycle engine_error", "throttled")
