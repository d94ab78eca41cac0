#!/usr/bin/env bash
# Container entry point: ROS 2 Jazzy + the sdm_controller workspace, with the venv's Python.
set -e
source /opt/ros/jazzy/setup.bash
source /opt/sdm_controller/ros2_ws/install/setup.bash
# `ros2` is a /usr/bin/python3 script; run it (and so the launch file and anything it imports)
# with the venv's interpreter, which sees torch, franky and pyrealsense2 as well as ROS.
if [[ "${1:-}" == "ros2" ]]; then
    shift
    exec "$VENV/bin/python" "$(command -v ros2)" "$@"
fi
exec "$@"
