"""Topic and service names and the QoS profiles of the stack: the one place nodes and clients share.

Names are relative (remappable, namespaced by the launch); a node that publishes a topic and a
node or client that reads it take the name and the QoS from here, so no node imports another.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# -- topics -------------------------------------------------------------------------------------
ACTION_CHUNK = "action_chunk"  # trajectory_msgs/JointTrajectory: policy (or expert) -> driver
JOINT_STATES = "joint_states"  # sensor_msgs/JointState: driver -> policy, recorder
DIAGNOSTICS = "/diagnostics"  # diagnostic_msgs/DiagnosticArray: every node
TASK_SUCCESS = "task/success"  # std_msgs/Bool, latched: bridge -> episode client
TASK_GOAL = "task/goal"  # geometry_msgs/PointStamped, latched: bridge -> expert only (privileged)

# -- services (std_srvs/Trigger), as seen from outside the node ----------------------------------
BRIDGE_RESET_TASK = "mujoco_bridge/reset_task"
DRIVER_RECOVER = "franka_driver/recover"
DRIVER_STOP = "franka_driver/stop"
RECORDER_START = "recorder/start_episode"
RECORDER_STOP = "recorder/stop_episode"
RECORDER_DISCARD = "recorder/discard_episode"


def image_topic(camera: str) -> str:
    """Where a camera's colour frames are read: what camera drivers and the bridge publish."""
    return f"{camera}/image_raw"


# -- QoS profiles -------------------------------------------------------------------------------
#: sensor inputs of the policy node: the newest sample only, a lost one is replaced by the next
SENSOR_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
#: action chunks: every chunk reaches the driver, in order
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
#: joint states and commanded positions published by the driver
STATE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
#: camera frames published by the bridge and the RealSense node
IMAGE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
#: task state a late joiner must still see (success flag, goal)
LATCHED_QOS = QoSProfile(
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
#: the recorder keeps a few samples per stream, since it takes them by stamp rather than newest-first
RECORDER_SENSOR_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
RECORDER_IMAGE_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
