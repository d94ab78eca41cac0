"""Camera intake without ROS: what the ``realsense_camera`` node decides, where a plain pytest reaches it.

* ``realsense_source`` — opens a RealSense camera (by serial) or a recording through ``rs.pipeline``,
  configures the streams and depth-to-color alignment, and returns plain frames (array, encoding,
  frame number, device timestamp, intrinsics);
* ``capture_clock`` — device timestamps → capture times on the host clock (what images are stamped with);
* ``frame_gate`` — drops repeated and out-of-order frame numbers, counts gaps, measures rates;
* ``camera_report`` — the node's diagnostic status from the gates (rates, drops, silence, end of file);
* ``synthetic_recording`` — writes a small ``.db3`` recording from a software device (tests, smoke runs).

Only ``realsense_source`` and ``synthetic_recording`` import ``pyrealsense2``.
"""
