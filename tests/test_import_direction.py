"""Imports run one way: the data flow's order, with the shared vocabulary below everything.

``ALLOWED`` is the house's plan: for each folder (or top-level module) of the package, the parts
it may import. The test walks every module's imports with ``ast`` (function-level imports
included) and fails on any arrow that is not in the plan, and on rclpy or ROS messages in a
part that must run without ROS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sdm_controller"
BASE = {"errors", "common", "version"}

#: part -> the parts it may import (``version`` is the package root's ``__version__``).
ALLOWED: dict[str, set[str]] = {
    "version": set(),
    "errors": set(),
    "common": {"errors"},
    "policy": {"common", "errors"},
    "sim": {"common", "errors"},
    "sensors": {"common", "errors"},
    "driver": {"common", "errors"},
    "data": {"policy", "sim"} | BASE,
    "runtime": {"policy"} | BASE,
    "training": {"data", "policy", "runtime"} | BASE,
    "distill": {"training", "data", "policy", "runtime"} | BASE,
    "control": {"runtime", "policy"} | BASE,
    "ros": {"control", "driver", "sensors", "sim", "data", "runtime", "policy"} | BASE,
    "stack": {"ros", "control", "data", "runtime", "sim"} | BASE,
    "bench": {"stack", "ros", "control", "distill", "training", "data", "runtime", "policy", "sim", "driver",
              "sensors"} | BASE,
    "cli": {"bench", "stack", "distill", "training", "data", "runtime", "policy", "sim"} | BASE,
    "__main__": {"cli"},
}

#: parts that must import and run with no ROS installation at all
ROS_FREE = {"version", "errors", "common", "policy", "sim", "sensors", "driver", "data", "runtime", "training",
            "distill", "control"}
ROS_MODULES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "sensor_msgs", "std_msgs", "std_srvs",
               "trajectory_msgs", "diagnostic_msgs", "geometry_msgs", "launch", "launch_ros"}


def part_of(module: str) -> str:
    """``sdm_controller.ros.policy_node`` -> ``ros``; the package root -> ``version``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "version"
    return parts[1]


def is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``source``, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: -node.level]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "sdm_controller":  # ``from sdm_controller import errors`` names a module, ``__version__`` not
                found += [(node.lineno, f"sdm_controller.{alias.name}" if is_module(alias.name) else base)
                          for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def violations(source: str, module: str) -> list[str]:
    """Every import of ``module`` that the plan does not allow, as readable lines."""
    here = part_of(module)
    out = []
    for line, target in imports_of(source, module):
        top = target.split(".")[0]
        if top == "sdm_controller":
            there = part_of(target)
            if there != here and there not in ALLOWED[here]:
                out.append(f"{module}:{line} imports {target} ({here} -> {there} is not in the plan)")
        elif here in ROS_FREE and top in ROS_MODULES:
            out.append(f"{module}:{line} imports {target}, but {here}/ must run without ROS")
    return out


def package_modules() -> list[tuple[str, Path]]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append((".".join(parts), path))
    return modules


def test_every_part_of_the_package_is_in_the_plan():
    parts = {part_of(module) for module, _ in package_modules()}
    assert parts <= set(ALLOWED), f"parts without a row in ALLOWED: {sorted(parts - set(ALLOWED))}"


def test_imports_run_one_way():
    found = [v for module, path in package_modules() for v in violations(path.read_text(), module)]
    assert not found, "imports against the data flow:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "module, source, words",
    [
        ("sdm_controller.policy.encoders", "from sdm_controller.runtime.engine import Engine\n", "policy -> runtime"),
        ("sdm_controller.common.fr3", "def f():\n    from sdm_controller.control import limits\n",
         "common -> control"),
        ("sdm_controller.driver.core", "from ..control.limits import JointLimits\n", "driver -> control"),
        ("sdm_controller.data.recording", "import rclpy\n", "must run without ROS"),
        ("sdm_controller.training.teacher", "from sensor_msgs.msg import Image\n", "must run without ROS"),
        ("sdm_controller.data.episodes", "from sdm_controller import ros\n", "data -> ros"),
    ],
)
def test_the_check_catches_a_back_up_arrow(module, source, words):
    found = violations(source, module)
    assert len(found) == 1 and words in found[0], found


def test_the_check_passes_arrows_in_the_plan():
    assert violations("from sdm_controller.common.fr3 import FR3_JOINTS\nimport numpy\n",
                      "sdm_controller.driver.core") == []
    assert violations("from sdm_controller.control.controller import PolicyController\nimport rclpy\n",
                      "sdm_controller.ros.policy_node") == []
