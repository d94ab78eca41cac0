"""Franka stack: driver + camera + policy node, or driver + MuJoCo bridge + policy node in simulation.

    ros2 launch sdm_controller franka.launch.py robot_ip:=172.16.0.2 artifact:=/path/to/artifact
    ros2 launch sdm_controller franka.launch.py use_sim:=true artifact:=/path/to/artifact
    ros2 launch sdm_controller franka.launch.py --show-args          # every argument, with its default

Everything here comes from ``sdm_controller.stack.description.FRANKA``, the description that the
pip launcher (``python -m sdm_controller launch franka [--sim]``) also reads: this file only turns
it into launch actions. Add or change a node, argument, parameter file, override or remapping
there, not here. A node that waits for another (in simulation the driver connects once at start,
so it waits for the bridge's "franky-sim serving on" line) is started by an ``OnProcessIO``
handler on that node's output, as the pip launcher does.
"""

# ruff takes `launch` for first-party (the launch/ folder); it is ROS 2's launch package
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.event_handlers import OnProcessIO
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from sdm_controller.stack.description import ALWAYS, FRANKA, PACKAGE, SIM, USE_SIM, Arg, ConfigFile


def substitution(value):
    """A description value as launch substitutions: text, a LaunchConfiguration, or a list of both (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Arg):
        return LaunchConfiguration(value.name)
    return [substitution(part) for part in value]


def default_value(default):
    if isinstance(default, ConfigFile):
        return PathJoinSubstitution([FindPackageShare(PACKAGE), "config", default.name])
    return default


def condition(mode):
    if mode == ALWAYS:
        return None
    use_sim = LaunchConfiguration(USE_SIM)
    return IfCondition(use_sim) if mode == SIM else UnlessCondition(use_sim)


def node_action(node):
    # The parameter file first, then the overrides (later entries win). The overrides are string
    # parameters: value_type=str keeps e.g. an IP address or "true" from being read as YAML.
    overrides = {name: ParameterValue(substitution(value), value_type=str) for name, value in node.parameters.items()}
    extra = {"namespace": substitution(node.namespace)} if node.namespace else {}
    return Node(
        package=PACKAGE,
        executable=node.executable,
        name=node.name,
        parameters=[LaunchConfiguration(node.params_argument), *([overrides] if overrides else [])],
        remappings=[(substitution(source), substitution(target)) for source, target in node.remappings],
        condition=condition(node.mode),
        output="screen",
        **extra,
    )


def start_when_ready(action, ready, target):
    """``action`` once a line of ``target``'s output contains ``ready.text`` (the first time only)."""
    started = []

    def on_output(event):
        if not started and ready.text in event.text.decode(errors="replace"):
            started.append(True)
            return [action]
        return None

    return RegisterEventHandler(OnProcessIO(target_action=target, on_stdout=on_output, on_stderr=on_output))


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument(
            arg.name,
            default_value=default_value(arg.default),
            description=arg.description,
            choices=list(arg.choices) if arg.choices else None,
        )
        for arg in FRANKA.all_arguments()
    ]
    actions = [(node, node_action(node)) for node in FRANKA.nodes]
    entities = []
    for node, action in actions:
        if node.after is None:
            entities.append(action)
            continue
        # the node it waits for: that name, in a mode where both run (see Stack.nodes_for)
        target = next(
            other_action
            for other, other_action in actions
            if other.name == node.after.node and (ALWAYS in (other.mode, node.mode) or other.mode == node.mode)
        )
        entities.append(start_when_ready(action, node.after, target))
    return LaunchDescription([*arguments, *entities])
