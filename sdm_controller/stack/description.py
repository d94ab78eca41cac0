"""The Franka stack in one plain-Python description: which nodes, how each is started, wired and configured.

Two launchers read it and nothing else, so they cannot drift apart:

* ``launch/franka.launch.py`` turns it into ``DeclareLaunchArgument``\\ s and ``launch_ros`` ``Node``\\ s
  (``ros2 launch sdm_controller franka.launch.py use_sim:=true``);
* :mod:`sdm_controller.stack.supervisor` turns it into ``python -m sdm_controller.ros.<node>
  --ros-args ...`` processes (``python -m sdm_controller launch franka --sim``, pip installs).

The launch arguments are strings, as in ``ros2 launch``. A node's parameters come from its
parameter file (the launch argument ``<node>_params_file``, by default ``config/<node>.yaml``),
then from the overrides below, which take the values of launch arguments (later wins). Topic
names are relative, so the stack can run under a namespace.

Camera wiring: the policy node reads ``<camera>/image_raw`` for the artifact's camera ``camera``.
Both camera sources publish the same topic, ``<camera_namespace>/color/image_raw`` (the RealSense
layout): the RealSense node because it runs in that namespace, and in simulation the MuJoCo bridge
(which renders the scene camera ``sim_camera`` to ``<sim_camera>/image_raw``) through a
remapping. The policy node's input is remapped to it, so simulation and the real robot have the
same topic graph, and the artifact's camera name need not match either source's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Union

from sdm_controller.errors import SdmError

PACKAGE = "sdm_controller"
ROS_MODULE = "sdm_controller.ros"  # node executable <name> is the module sdm_controller.ros.<name>

SIM = "sim"  # runs only when use_sim is true
REAL = "real"  # runs only when use_sim is false
ALWAYS = "always"
USE_SIM = "use_sim"


@dataclass(frozen=True)
class Arg:
    """The value of the launch argument ``name`` (a ``LaunchConfiguration`` in a launch file)."""

    name: str


@dataclass(frozen=True)
class ConfigFile:
    """A file in the package's ``config/`` folder (``share/sdm_controller/config`` once installed)."""

    name: str


#: A string, an argument's value, or a concatenation of both (e.g. ``(Arg("camera"), "/image_raw")``).
Text = Union[str, Arg, tuple[Union[str, Arg], ...]]  # noqa: UP007 - evaluated at import on Python 3.10


@dataclass(frozen=True)
class Ready:
    """A node is ready once a line of its output contains ``text`` (e.g. a "serving on" log line)."""

    node: str
    text: str


@dataclass(frozen=True)
class Argument:
    """One launch argument: ``name:=value`` on the command line of both launchers."""

    name: str
    default: str | ConfigFile
    description: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NodeSpec:
    """One node process. A node whose wiring differs between sim and real appears once per mode."""

    name: str  # node name (the launch file's ``name``, ``-r __node:=``)
    executable: str  # console script; also the module sdm_controller.ros.<executable>
    params_file: str  # default parameter file in config/
    namespace: Text = ""  # relative to the stack's namespace
    parameters: Mapping[str, Text] = field(default_factory=dict)  # string parameters set after the file
    remappings: tuple[tuple[Text, Text], ...] = ()
    mode: str = ALWAYS  # SIM, REAL or ALWAYS
    after: Ready | None = None  # start only once that node is ready
    description: str = ""

    @property
    def module(self) -> str:
        return f"{ROS_MODULE}.{self.executable}"

    @property
    def params_argument(self) -> str:
        """The launch argument that names this node's parameter file."""
        return f"{self.name}_params_file"


@dataclass(frozen=True)
class Stack:
    """A launchable set of nodes and the arguments that configure them."""

    name: str
    description: str
    arguments: tuple[Argument, ...]
    nodes: tuple[NodeSpec, ...]

    def all_arguments(self) -> tuple[Argument, ...]:
        """The declared arguments plus one ``<node>_params_file`` per node name, in that order."""
        files: dict[str, Argument] = {}
        for node in self.nodes:
            files.setdefault(
                node.params_argument,
                Argument(node.params_argument, ConfigFile(node.params_file), f"parameter file of {node.name}"),
            )
        return (*self.arguments, *files.values())

    def nodes_for(self, use_sim: bool) -> tuple[NodeSpec, ...]:
        wanted = SIM if use_sim else REAL
        nodes = tuple(node for node in self.nodes if node.mode in (ALWAYS, wanted))
        names = {node.name for node in nodes}
        for node in nodes:
            if node.after is not None and node.after.node not in names:
                raise SdmError(f"{node.name} waits for {node.after.node}, which does not run in this mode")
        return nodes


SIM_ARGUMENTS = (
    Argument("sim_hostname", "127.0.0.2", "loopback address the simulated robot serves on (use_sim only)"),
    Argument("sim_camera", "front", "camera of the simulated scene that the bridge renders (use_sim only)"),
)
CAMERA_NAMESPACE = Argument(
    "camera_namespace",
    "camera",
    "namespace of the camera node; its frames are on <camera_namespace>/color/image_raw",
)
SIM_BRIDGE = NodeSpec(
    name="mujoco_bridge",
    executable="mujoco_bridge",
    params_file="mujoco_bridge.yaml",
    mode=SIM,
    parameters={"hostname": Arg("sim_hostname"), "camera_name": Arg("sim_camera")},
    remappings=(
        ((Arg("sim_camera"), "/image_raw"), (Arg("camera_namespace"), "/color/image_raw")),
        ((Arg("sim_camera"), "/camera_info"), (Arg("camera_namespace"), "/color/camera_info")),
    ),
    description="franky-sim robot server with a rendered camera and the task objects",
)
SIM_DRIVER = NodeSpec(
    name="franka_driver",
    executable="franka_driver",
    params_file="franka_driver.yaml",
    mode=SIM,
    parameters={"robot_ip": Arg("sim_hostname")},
    # the driver connects once at start and exits if nothing serves: wait for the simulator
    after=Ready("mujoco_bridge", "franky-sim serving on"),
    description="executes action chunks on the simulated robot (connects as to a real one)",
)


FRANKA = Stack(
    name="franka",
    description="FR3 arm driven by a policy artifact: franka_driver + camera + policy_node, "
    "or franka_driver + mujoco_bridge (franky-sim) + policy_node with use_sim",
    arguments=(
        Argument(
            USE_SIM,
            "false",
            "run against the MuJoCo bridge (franky-sim) instead of the robot and camera",
            choices=("true", "false"),
        ),
        Argument("robot_ip", "", "address of the robot's control unit (FCI); required unless use_sim is true"),
        Argument("artifact", "", "policy artifact folder (empty: the policy node waits for one to be set)"),
        Argument("camera", "front", "camera name in the artifact; the policy node reads <camera>/image_raw"),
        CAMERA_NAMESPACE,
        *SIM_ARGUMENTS,
    ),
    nodes=(
        SIM_BRIDGE,
        SIM_DRIVER,
        NodeSpec(
            name="franka_driver",
            executable="franka_driver",
            params_file="franka_driver.yaml",
            mode=REAL,
            parameters={"robot_ip": Arg("robot_ip")},
            description="executes action chunks on the robot through franky, publishes joint_states",
        ),
        NodeSpec(
            name="realsense_camera",
            executable="realsense_camera",
            params_file="realsense_camera.yaml",
            namespace=Arg("camera_namespace"),
            mode=REAL,
            description="RealSense colour (and depth) frames",
        ),
        NodeSpec(
            name="policy_node",
            executable="policy_node",
            params_file="policy_node.yaml",
            parameters={"artifact": Arg("artifact")},
            remappings=(((Arg("camera"), "/image_raw"), (Arg("camera_namespace"), "/color/image_raw")),),
            description="camera frames + joint states in, timed action chunks out",
        ),
    ),
)

FRANKA_DEMOS = Stack(
    name="franka_demos",
    description="scripted demonstrations in simulation: franka_driver + mujoco_bridge + franka_expert (in the "
    "policy node's place) + recorder; what `collect franka-sim` runs",
    arguments=(
        Argument(USE_SIM, "true", "demonstrations come from the simulated work cell only", choices=("true",)),
        Argument("output", "", "dataset folder the recorder appends the saved episodes to"),
        Argument(
            "camera",
            "front",
            "camera name in the dataset (`cameras` of the recorder's parameter file); read from <camera>/image_raw",
        ),
        CAMERA_NAMESPACE,
        *SIM_ARGUMENTS,
    ),
    nodes=(
        SIM_BRIDGE,
        SIM_DRIVER,
        NodeSpec(
            name="franka_expert",
            executable="franka_expert",
            params_file="franka_expert.yaml",
            mode=SIM,
            description="scripted reach expert: action chunks from joint states and the task's goal",
        ),
        NodeSpec(
            name="recorder",
            executable="recorder",
            params_file="recorder.yaml",
            mode=SIM,
            # the action is the expert's chunk, as the policy node's will be: its point due one period later
            parameters={
                "output": Arg("output"),
                "action_source": "topic",
                "command_topic": "action_chunk",
                "command_type": "joint_trajectory",
                "task": "franka-reach-cube",
                "source": "ros:franka_expert",
            },
            remappings=(((Arg("camera"), "/image_raw"), (Arg("camera_namespace"), "/color/image_raw")),),
            description="camera frames, joint states and the expert's chunks into the dataset",
        ),
    ),
)


STACKS: dict[str, Stack] = {stack.name: stack for stack in (FRANKA, FRANKA_DEMOS)}


# -- evaluation (what a launch context does with substitutions) -----------------------------------
def parse_bool(text: str, name: str = USE_SIM) -> bool:
    """``IfCondition``'s rule: true/1 or false/0, case-insensitive."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise SdmError(f"launch argument '{name}' is '{text}'; expected true or false")


def resolve(value: Text, values: Mapping[str, str]) -> str:
    """The string ``value`` stands for, given the launch arguments' ``values``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Arg):
        if value.name not in values:
            raise SdmError(f"the stack description uses launch argument '{value.name}', which is not declared")
        return values[value.name]
    return "".join(resolve(part, values) for part in value)


def argument_values(stack: Stack, given: Mapping[str, str], config_dir=None) -> dict[str, str]:
    """Every argument's value: ``given`` over the defaults. Unknown names and bad choices are errors.

    ``config_dir`` turns the default parameter files into paths (left as ``config/<file>`` without it).
    """
    declared = {arg.name: arg for arg in stack.all_arguments()}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise SdmError(f"unknown launch argument(s) {unknown} for stack '{stack.name}'; known: {', '.join(declared)}")
    values: dict[str, str] = {}
    for name, arg in declared.items():
        if name in given:
            value = given[name]
        elif isinstance(arg.default, ConfigFile):
            value = str(config_dir / arg.default.name) if config_dir is not None else f"config/{arg.default.name}"
        else:
            value = arg.default
        if arg.choices is not None and value not in arg.choices:
            raise SdmError(f"launch argument '{name}' is '{value}'; expected one of {', '.join(arg.choices)}")
        values[name] = value
    return values


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["name:=value", ...]`` (the ``ros2 launch`` syntax) → dict."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SdmError(f"launch argument '{item}' is not NAME:=VALUE (e.g. use_sim:=true)")
        out[name] = value
    return out
