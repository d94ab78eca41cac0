"""Declare a node's parameters from a :class:`~sdm_controller.control.settings.ParameterSpec` table.

Each parameter gets a ``ParameterDescriptor`` with its description, its allowed values (as
``additional_constraints`` text), and a ``FloatingPointRange`` / ``IntegerRange`` for numbers, so
``ros2 param describe`` shows them and rclpy itself refuses out-of-range values. Double-array
parameters are declared by type (an empty list default would otherwise be typed as a byte
array) and set to ``[]`` when no override gives them a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from sdm_controller.common.parameter_spec import ParameterSpec


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None:
        low, high = spec.range
        if isinstance(spec.default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return desc


def declare_parameters(node: Node, specs: Iterable[ParameterSpec]) -> dict[str, Any]:
    """Declare every parameter (overrides from ``--ros-args``/YAML apply) and return their values."""
    values: dict[str, Any] = {}
    for spec in specs:
        if isinstance(spec.default, tuple):
            param = node.declare_parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, descriptor(spec))
            if param.value is None:
                node.set_parameters([Parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, list(spec.default))])
            values[spec.name] = tuple(node.get_parameter(spec.name).value)
        else:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, descriptor(spec)).value
    return values


def parameter_changes(parameters: Iterable[Parameter]) -> dict[str, Any]:
    """``{name: value}`` of a set-parameters request (arrays as tuples)."""
    changes = {}
    for param in parameters:
        value = param.value
        if param.type_ in (Parameter.Type.DOUBLE_ARRAY, Parameter.Type.INTEGER_ARRAY):
            value = tuple(value)
        changes[param.name] = value
    return changes
