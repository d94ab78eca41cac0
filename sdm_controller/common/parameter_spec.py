"""A node parameter as a value: name, default (its type), meaning, range or choices; and its check.

Every node of the package declares its ROS parameters from a table of :class:`ParameterSpec`
(``sdm_controller.ros.parameters`` turns one into a ``ParameterDescriptor``) and checks each
live change with :func:`coerce`. Nothing here imports torch or rclpy, so a node that does not run
a policy (driver, bridge, camera, recorder) starts without loading either.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from sdm_controller.errors import SdmError


class SettingsError(SdmError):
    """A parameter value (or combination) a node refuses; the message names the parameter."""


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter of a node."""

    name: str
    default: Any  # its type is the parameter's type (tuple = double array)
    description: str
    range: tuple[float, float] | None = None  # inclusive, for int and float parameters
    choices: tuple[str, ...] | None = None  # for string parameters
    pattern: str | None = None  # regular expression a string value must match
    hint: str | None = None  # what ``pattern`` accepts, in words, for the error message


def coerce(spec: ParameterSpec, value: Any) -> Any:
    """``value`` as the parameter's type, or :class:`SettingsError`."""
    name, default = spec.name, spec.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"parameter '{name}' must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"parameter '{name}' must be an integer, got {value!r}")
        _check_range(spec, value)
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SettingsError(f"parameter '{name}' must be a finite number, got {value!r}")
        _check_range(spec, float(value))
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"parameter '{name}' must be a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise SettingsError(f"parameter '{name}' is '{value}'; expected one of {list(spec.choices)}")
        if spec.pattern and not re.match(spec.pattern, value):
            raise SettingsError(f"parameter '{name}' is '{value}'; expected {spec.hint or spec.pattern}")
        return value
    # double arrays
    try:
        array = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise SettingsError(f"parameter '{name}' must be a list of numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in array):
        raise SettingsError(f"parameter '{name}' must hold finite numbers, got {list(array)}")
    return array


def _check_range(spec: ParameterSpec, value: float) -> None:
    if spec.range and not spec.range[0] <= value <= spec.range[1]:
        raise SettingsError(f"parameter '{spec.name}' is {value}; expected a value in [{spec.range[0]}, "
                            f"{spec.range[1]}]")
