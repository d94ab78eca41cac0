# Sourced by the scripts that start the ROS stack: DDS discovery stays on this machine, a domain of
# its own (unless one is given) keeps it apart from other stacks, MuJoCo renders headless.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$1}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
