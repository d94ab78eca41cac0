"""The stack description, the pip launcher's command lines and ``launch/franka.launch.py`` agree.

``launch`` and ``launch_ros`` cannot be installed here, so the launch file runs against small
stand-ins for the parts of their API it uses (put into ``sys.modules`` for the import). They keep
the real constructors' signatures (``launch`` / ``launch_ros`` on Humble and Jazzy: keyword-only
arguments, the same names; ``Node`` accepts only its own and ``ExecuteProcess``' keywords) and
evaluate substitutions and conditions as a launch context does. The test then compares, for
several sets of launch arguments, the nodes the launch file would start (name, namespace,
executable, parameter files, overrides, remappings) with the pip launcher's command lines for the
same arguments. Running the file catches more drift than parsing it: the file loops over the
description, so a node, argument or remapping it drops, a wrong condition, an undeclared
``LaunchConfiguration`` or a misspelled keyword all show up as a difference or an error.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import yaml

from sdm_controller.errors import SdmError
from sdm_controller.stack import description as desc
from sdm_controller.stack.description import FRANKA, argument_values, parse_assignments
from sdm_controller.stack.supervisor import config_dir, plan, ros_arguments

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "franka.launch.py"


# -- stand-ins for launch / launch_ros ------------------------------------------------------------
class Substitution:
    def perform(self, context: dict) -> str:
        raise NotImplementedError


def perform(value, context: dict) -> str:
    """``SomeSubstitutionsType`` → text: a str, a Substitution, or an iterable of both (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Substitution):
        return value.perform(context)
    if isinstance(value, (list, tuple)):
        return "".join(perform(part, context) for part in value)
    raise TypeError(f"not a substitution type: {value!r}")


class LaunchConfiguration(Substitution):
    def __init__(self, variable_name, *, default=None):
        self.variable_name = variable_name
        self.default = default

    def perform(self, context):
        if self.variable_name not in context:
            raise KeyError(f"launch configuration '{self.variable_name}' is used but never declared or set")
        return context[self.variable_name]


class PathJoinSubstitution(Substitution):
    def __init__(self, substitutions):
        self.substitutions = list(substitutions)

    def perform(self, context):
        return os.path.join(*(perform(part, context) for part in self.substitutions))


class FindPackageShare(Substitution):
    SHARE = {"sdm_controller": str(REPO)}  # the source tree stands in for share/sdm_controller

    def __init__(self, package):
        self.package = package

    def perform(self, context):
        return self.SHARE[perform(self.package, context)]


class Condition:
    def __init__(self, *, predicate=None):
        self._predicate = predicate

    def evaluate(self, context) -> bool:
        return self._predicate(context)


def condition_value(expression, context) -> bool:
    text = perform(expression, context).lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"condition expression '{text}' is not true/false/1/0")


class IfCondition(Condition):
    def __init__(self, predicate_expression):
        super().__init__(predicate=lambda context: condition_value(predicate_expression, context))


class UnlessCondition(Condition):
    def __init__(self, predicate_expression):
        super().__init__(predicate=lambda context: not condition_value(predicate_expression, context))


class Action:
    def __init__(self, *, condition=None):
        self.condition = condition


class DeclareLaunchArgument(Action):
    def __init__(self, name, *, default_value=None, description=None, choices=None, **kwargs):
        super().__init__(**kwargs)
        if choices is not None and not choices:
            raise RuntimeError("Provided choices arg is empty. Use None to ignore the choice list.")
        if choices is not None and isinstance(default_value, str) and default_value not in choices:
            raise RuntimeError(f'Provided default_value "{default_value}" is not in provided choices')
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


#: keywords of launch.actions.ExecuteProcess (and Action) that launch_ros' Node passes on
EXECUTE_PROCESS_KEYWORDS = {
    "condition", "cwd", "env", "additional_env", "shell", "sigterm_timeout", "sigkill_timeout", "emulate_tty",
    "prefix", "output", "output_format", "log_cmd", "on_exit", "respawn", "respawn_delay", "cached_output",
}  # fmt: skip


class Node(Action):
    def __init__(self, *, executable, package=None, name=None, namespace=None, exec_name=None, parameters=None,
                 remappings=None, ros_arguments=None, arguments=None, **kwargs):  # fmt: skip
        unknown = set(kwargs) - EXECUTE_PROCESS_KEYWORDS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        if parameters is not None and not isinstance(parameters, list):
            raise TypeError("Node parameters must be a list")  # launch_ros: ensure_argument_type(list)
        super().__init__(condition=kwargs.pop("condition", None))
        self.executable, self.package, self.name, self.namespace = executable, package, name, namespace
        self.parameters, self.remappings, self.arguments = parameters or [], list(remappings or []), arguments
        self.ros_arguments, self.kwargs = ros_arguments, kwargs


class ParameterValue:
    def __init__(self, value, *, value_type=None):
        self.value, self.value_type = value, value_type

    def evaluate(self, context):
        text = perform(self.value, context)
        return text if self.value_type is str else yaml.safe_load(text)


class RegisterEventHandler(Action):
    def __init__(self, event_handler, **kwargs):
        super().__init__(**kwargs)
        self.event_handler = event_handler


class OnProcessIO:
    def __init__(self, *, target_action=None, on_stdin=None, on_stdout=None, on_stderr=None, **kwargs):
        self.target_action, self.on_stdout, self.on_stderr = target_action, on_stdout, on_stderr


class ProcessIO:
    """The event: ``text`` is bytes, as launch's ``ProcessIO.text``."""

    def __init__(self, text: bytes, from_stdout: bool):
        self.text, self.from_stdout, self.from_stderr = text, from_stdout, not from_stdout


class LaunchDescription:
    def __init__(self, initial_entities=None, *, deprecated_reason=None):
        self.entities = list(initial_entities or [])


def standin_modules() -> dict[str, types.ModuleType]:
    modules = {}
    for name, attrs in {
        "launch": {"LaunchDescription": LaunchDescription, "Substitution": Substitution, "Action": Action},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument,
                           "RegisterEventHandler": RegisterEventHandler},
        "launch.event_handlers": {"OnProcessIO": OnProcessIO},
        "launch.conditions": {"IfCondition": IfCondition, "UnlessCondition": UnlessCondition},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration,
                                 "PathJoinSubstitution": PathJoinSubstitution},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
        "launch_ros.parameter_descriptions": {"ParameterValue": ParameterValue},
        "launch_ros.substitutions": {"FindPackageShare": FindPackageShare},
    }.items():  # fmt: skip
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        modules[name] = module
    return modules


@pytest.fixture
def launch_description(monkeypatch):
    for name, module in standin_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("franka_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


# -- both launchers reduced to the same canonical form ---------------------------------------------
def evaluate_launch(description: LaunchDescription, given: dict[str, str]) -> dict[str, dict]:
    """What ``ros2 launch ... name:=value`` would start: {node name: canonical node}.

    Every node that starts prints first an unrelated line, then the ready lines the description
    names for it (in sim, the bridge's "franky-sim serving on ..."), to stdout and to stderr; the
    registered ``OnProcessIO`` handlers see them as launch would deliver them.
    """
    context = dict(given)
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    unknown = set(given) - {arg.name for arg in declared}
    if unknown:
        raise SdmError(f"unknown launch argument(s) {sorted(unknown)}")
    ready_lines = {node.after.node: node.after.text for node in FRANKA.nodes if node.after}
    handlers: list[OnProcessIO] = []
    started: dict[str, dict] = {}

    def execute(entity, after=None) -> None:
        if isinstance(entity, DeclareLaunchArgument):
            if entity.name not in context:
                if entity.default_value is None:
                    raise SdmError(f"required launch argument '{entity.name}' was not provided")
                context[entity.name] = perform(entity.default_value, context)
            if entity.choices is not None and context[entity.name] not in entity.choices:
                raise SdmError(f"argument '{entity.name}' value '{context[entity.name]}' is not valid")
            return
        if entity.condition is not None and not entity.condition.evaluate(context):
            return
        if isinstance(entity, RegisterEventHandler):
            assert isinstance(entity.event_handler, OnProcessIO) and isinstance(
                entity.event_handler.target_action, Node
            )
            handlers.append(entity.event_handler)
            return
        assert isinstance(entity, Node), f"unexpected launch entity {entity!r}"
        name = perform(entity.name, context)
        assert name not in started, f"two nodes named {name} start together"
        started[name] = canonical_node(entity, context, after)
        running.append((name, entity))

    def print_output(name: str, entity: Node) -> None:
        """The node's output reaches the handlers registered for it (after every entity was visited)."""
        for handler in [h for h in handlers if h.target_action is entity]:
            for from_stdout in (True, False):
                callback = handler.on_stdout if from_stdout else handler.on_stderr
                assert callback(ProcessIO(b"[INFO] starting\n", from_stdout)) is None
            if name in ready_lines:
                line = f"[INFO] [0.0] [{name}]: {ready_lines[name]} 127.0.0.2\n".encode()
                for from_stdout in (False, True):  # ROS logs go to stderr; the second line is ignored
                    callback = handler.on_stdout if from_stdout else handler.on_stderr
                    for action in callback(ProcessIO(line, from_stdout)) or []:
                        execute(action, after=(name, ready_lines[name]))

    running: list[tuple[str, Node]] = []
    for entity in description.entities:
        execute(entity)
    delivered = 0
    while delivered < len(running):
        print_output(*running[delivered])
        delivered += 1
    return started


def canonical_node(entity: Node, context: dict, after) -> dict:
    assert entity.package == desc.PACKAGE and entity.arguments is None and entity.ros_arguments is None
    assert entity.kwargs.get("output") == "screen"
    files, params = [], {}
    for item in entity.parameters:
        if isinstance(item, dict):
            for key, value in item.items():
                params[key] = value.evaluate(context) if isinstance(value, ParameterValue) else value
        else:
            files.append(perform(item, context))
    return {
        "module": f"{desc.ROS_MODULE}.{perform(entity.executable, context)}",
        "namespace": "/" + perform(entity.namespace or "", context).strip("/"),
        "params_files": files,
        "params": params,
        "remappings": [(perform(a, context), perform(b, context)) for a, b in entity.remappings],
        "after": after,
    }


def canonical_command(argv: list[str], after=None) -> dict:
    """Parse ``python -m <module> --ros-args ...`` back into the canonical form."""
    assert argv[1] == "-m" and argv[3] == "--ros-args", argv
    node = {"module": argv[2], "namespace": "/", "params_files": [], "params": {}, "remappings": [], "after": after}
    name = None
    rest = iter(argv[4:])
    for flag in rest:
        value = next(rest)
        if flag == "--params-file":
            node["params_files"].append(value)
            continue
        key, sep, text = value.partition(":=")
        assert sep, argv
        if flag == "-p":
            node["params"][key] = yaml.safe_load(text)  # what rcl does with the text after :=
        elif flag == "-r" and key == "__node":
            name = text
        elif flag == "-r" and key == "__ns":
            node["namespace"] = text
        elif flag == "-r":
            node["remappings"].append((key, text))
        else:
            raise AssertionError(f"unexpected flag {flag} in {argv}")
    return {name: node}


def launcher_nodes(given: dict[str, str]) -> dict[str, dict]:
    out = {}
    for spec in plan(FRANKA, given, python="python"):
        out.update(canonical_command(list(spec.argv), spec.after))
    return out


CASES = [
    {"use_sim": "true"},
    {"use_sim": "true", "artifact": "/models/a b:c", "camera": "wrist", "sim_hostname": "127.0.0.9",
     "sim_camera": "top"},
    {"robot_ip": "172.16.0.2"},
    {"use_sim": "false", "robot_ip": "10.0.0.2", "artifact": "/m/x", "camera": "scene",
     "camera_namespace": "rs0", "policy_node_params_file": "{tmp}/my policy.yaml"},
    {"use_sim": "1", "robot_ip": "true"},  # not a choice of use_sim: both refuse
]  # fmt: skip


@pytest.mark.parametrize("given", CASES, ids=[" ".join(f"{k}:={v}" for k, v in c.items()) for c in CASES])
def test_launch_file_starts_what_the_pip_launcher_starts(launch_description, given, tmp_path):
    given = {key: value.replace("{tmp}", str(tmp_path)) for key, value in given.items()}
    (tmp_path / "my policy.yaml").write_text("/**:\n  ros__parameters: {}\n")
    try:
        expected = launcher_nodes(given)
    except SdmError:
        with pytest.raises(SdmError):
            evaluate_launch(launch_description, given)
        return
    assert evaluate_launch(launch_description, given) == expected


def test_launch_file_declares_every_argument_of_the_description(launch_description):
    declared = {e.name: e for e in launch_description.entities if isinstance(e, DeclareLaunchArgument)}
    assert list(declared) == [arg.name for arg in FRANKA.all_arguments()]
    for arg in FRANKA.all_arguments():
        assert declared[arg.name].description == arg.description
        assert declared[arg.name].choices == (list(arg.choices) if arg.choices else None)
    nodes = [e for e in launch_description.entities if isinstance(e, Node)]
    assert [(n.name, n.executable) for n in nodes] == [(n.name, n.executable) for n in FRANKA.nodes if not n.after]
    gated = [e.event_handler for e in launch_description.entities if isinstance(e, RegisterEventHandler)]
    assert [h.target_action.name for h in gated] == [n.after.node for n in FRANKA.nodes if n.after]


def test_launch_file_rejects_an_unknown_keyword(monkeypatch):
    """The stand-in Node is strict: a keyword launch_ros does not know fails here as it would there."""
    with pytest.raises(TypeError, match="node_name"):
        Node(executable="x", node_name="y")


# -- the description itself ------------------------------------------------------------------------
def console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entry_points = ast.literal_eval(node.value)
            return dict(line.replace(" ", "").split("=", 1) for line in entry_points["console_scripts"])
    raise AssertionError("setup.py has no entry_points")


def test_every_node_is_a_console_script_and_a_module():
    scripts = console_scripts()
    for node in FRANKA.nodes:
        assert scripts.get(node.executable) == f"{node.module}:main", node.executable
        module_file = REPO / Path(*node.module.split(".")).with_suffix(".py")
        assert module_file.is_file(), f"{node.name}: {module_file} is missing"


def test_every_parameter_file_exists_with_a_wildcard_section():
    for node in FRANKA.nodes:
        path = config_dir() / node.params_file
        assert path.is_file(), f"{node.name}: {path} is missing"
        content = yaml.safe_load(path.read_text())
        assert "ros__parameters" in content.get("/**", {}), f"{path}: expected '/**: ros__parameters:'"
    assert config_dir() == REPO / "config"


def test_each_mode_runs_one_driver_one_camera_source_and_the_policy():
    sim = [n.name for n in FRANKA.nodes_for(True)]
    real = [n.name for n in FRANKA.nodes_for(False)]
    assert sorted(sim) == ["franka_driver", "mujoco_bridge", "policy_node"]
    assert sorted(real) == ["franka_driver", "policy_node", "realsense_camera"]


def expand(namespace: str, name: str) -> str:
    return name if name.startswith("/") else "/" + "/".join(p for p in (*namespace.split("/"), name) if p)


def topic(node: dict, name: str) -> str:
    """The fully qualified topic a node uses for ``name`` after its remappings (rcl's rule)."""
    full = expand(node["namespace"], name)
    for source, target in node["remappings"]:
        if expand(node["namespace"], source) == full:
            return expand(node["namespace"], target)
    return full


@pytest.mark.parametrize("camera,namespace", [("front", "camera"), ("wrist", "rs/left")])
def test_the_policy_reads_the_topic_the_camera_source_publishes(camera, namespace):
    common = {"camera": camera, "camera_namespace": namespace}
    sim = launcher_nodes({"use_sim": "true", **common})
    wanted = topic(sim["policy_node"], f"{camera}/image_raw")
    bridge = sim["mujoco_bridge"]
    rendered = bridge["params"]["camera_name"]  # the scene camera; it publishes <camera_name>/image_raw
    assert rendered == "front"  # the scene's camera, whatever the artifact calls its camera
    assert topic(bridge, f"{rendered}/image_raw") == wanted == f"/{namespace}/color/image_raw"
    assert topic(bridge, f"{rendered}/camera_info") == f"/{namespace}/color/camera_info"
    real = launcher_nodes({"robot_ip": "10.0.0.2", **common})
    assert topic(real["realsense_camera"], "color/image_raw") == topic(real["policy_node"], f"{camera}/image_raw")
    assert topic(real["policy_node"], f"{camera}/image_raw") == wanted  # same graph in both modes
    for nodes in (sim, real):  # the rest of the graph is not renamed
        driver, policy = nodes["franka_driver"], nodes["policy_node"]
        assert topic(driver, "joint_states") == topic(policy, "joint_states") == "/joint_states"
        assert topic(driver, "action_chunk") == topic(policy, "action_chunk") == "/action_chunk"


def test_the_simulated_driver_connects_where_the_bridge_serves():
    sim = launcher_nodes({"use_sim": "true", "robot_ip": "10.0.0.2", "sim_hostname": "127.0.0.5"})
    assert sim["franka_driver"]["params"]["robot_ip"] == sim["mujoco_bridge"]["params"]["hostname"] == "127.0.0.5"
    real = launcher_nodes({"robot_ip": "10.0.0.2"})
    assert real["franka_driver"]["params"]["robot_ip"] == "10.0.0.2"


def test_argument_errors_name_the_argument():
    with pytest.raises(SdmError, match="robot_ipp"):
        argument_values(FRANKA, {"robot_ipp": "1"})
    with pytest.raises(SdmError, match="use_sim"):
        argument_values(FRANKA, {"use_sim": "yes"})
    with pytest.raises(SdmError, match="NAME:=VALUE"):
        parse_assignments(["use_sim=true"])
    assert parse_assignments(["a:=b:=c", "e:="]) == {"a": "b:=c", "e": ""}


def test_overrides_reach_the_node_as_strings_through_rcl():
    """rcl itself parses the pip launcher's ``--ros-args``: strings stay strings, remaps and names apply."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.node import Node as RosNode
    from std_msgs.msg import String

    values = argument_values(FRANKA, {"artifact": "/m/a b: c", "camera": "wrist"}, config_dir())
    policy = next(n for n in FRANKA.nodes if n.name == "policy_node")
    realsense = next(n for n in FRANKA.nodes if n.name == "realsense_camera")
    for spec, checks in ((policy, {"artifact": "/m/a b: c"}), (realsense, {})):
        context = Context()
        rclpy.init(args=["node", *ros_arguments(spec, values)], context=context)
        try:
            node = RosNode("placeholder", context=context)
            assert node.get_fully_qualified_name() == expand(
                desc.resolve(spec.namespace, values), spec.name), node.get_fully_qualified_name()  # fmt: skip
            for name, value in checks.items():
                node.declare_parameter(name, "")
                assert node.get_parameter(name).value == value
            if spec is policy:
                assert node.create_publisher(String, "wrist/image_raw", 1).topic_name == "/camera/color/image_raw"
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)


def test_empty_and_boolean_looking_overrides_stay_strings():
    values = argument_values(FRANKA, {"use_sim": "true", "artifact": "", "sim_hostname": "true"})
    driver = next(n for n in FRANKA.nodes_for(True) if n.name == "franka_driver")
    args = ros_arguments(driver, values)
    assert yaml.safe_load(args[args.index("-p") + 1].partition(":=")[2]) == "true"
    policy = next(n for n in FRANKA.nodes if n.name == "policy_node")
    args = ros_arguments(policy, values)
    assert yaml.safe_load(args[args.index("-p") + 1].partition(":=")[2]) == ""
