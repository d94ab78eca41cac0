"""The policy node's parameters: one table (default, range, meaning) and their validation.

The node declares its ROS parameters from :data:`PARAMETERS` (descriptions and ranges become the
``ParameterDescriptor``), reads them into a :class:`NodeSettings`, and validates every live change
with :meth:`NodeSettings.updated` (each value on its own) and :func:`check_settings` (the values
together, against the artifact they will run with). Both raise :class:`SettingsError` whose
message names the parameter and what was expected; the node returns it as the
``SetParametersResult`` reason.

What applies when (see ``sdm_controller.ros.policy_node``): ``artifact``, ``backend``, ``device``
and (teacher artifacts) ``sampler`` and ``sampler_steps`` load a new engine beside the running one and swap when
it is warm; everything else applies from the next inference cycle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from sdm_controller.common.parameter_spec import ParameterSpec, SettingsError, coerce
from sdm_controller.control.blending import BLENDING_MODES, EXPONENTIAL
from sdm_controller.control.limits import JointLimits
from sdm_controller.control.policy_interface import PolicyInterface

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")
TRIGGER_MODES = ("timer", "observation")
SAMPLER_METHODS = ("ddim", "ddpm")  # sdm_controller.policy.noise_schedule.SAMPLERS
DEVICE_PATTERN = r"^(cpu|auto|cuda(:\d+)?)$"


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("artifact", "", "Policy artifact folder (policy.json + weights.safetensors). A change loads the "
                  "new engine beside the running one and swaps when it is warm."),
    ParameterSpec("backend", "auto", "Inference backend; auto picks the fastest that works here.",
                  choices=BACKEND_CHOICES),
    ParameterSpec("device", "cpu", "Torch device of the engine: cpu, cuda, cuda:N or auto.",
                  pattern=DEVICE_PATTERN, hint="cpu, cuda, cuda:N or auto"),
    ParameterSpec("sampler", "ddim", "Sampler of teacher artifacts: ddim (deterministic, few steps) or ddpm "
                  "(stochastic, as trained); one-step artifacts ignore it.", choices=SAMPLER_METHODS),
    ParameterSpec("sampler_steps", 10, "Sampler steps for teacher artifacts (one-step artifacts ignore it).",
                  range=(1, 1000)),
    ParameterSpec("inference_rate_hz", 10.0, "Rate of the inference cycle (one chunk per cycle when the "
                  "observations are fresh).", range=(0.1, 200.0)),
    ParameterSpec("trigger", "timer", "What starts an inference cycle: timer (every 1/inference_rate_hz) or "
                  "observation (as soon as every input has a sample newer than the last chunk's, at most "
                  "inference_rate_hz; the lowest observation-to-chunk latency).", choices=TRIGGER_MODES),
    ParameterSpec("executed_steps", 0, "Actions published per chunk, from the newest observation on; 0 = all "
                  "n_action_steps of the artifact.", range=(0, 256)),
    ParameterSpec("blending", "off", "Chunk blending: off (publish each chunk as predicted), exponential "
                  "(ACT temporal ensembling), latest-only (newest chunk, points not yet due).",
                  choices=BLENDING_MODES),
    ParameterSpec("blend_coefficient", 0.1, "Exponential blending: weight exp(-m*i) of the i-th oldest "
                  "prediction; 0 = mean, > 0 favours older, < 0 newer predictions.", range=(-5.0, 5.0)),
    ParameterSpec("observation_timeout_s", 0.5, "Observations older than this (node clock) are stale: no chunk "
                  "is built from them.", range=(0.01, 10.0)),
    ParameterSpec("stamp_tolerance_s", 0.05, "How far a header stamp may lie ahead of the node's clock before "
                  "the message is refused.", range=(0.0, 1.0)),
    ParameterSpec("joint_position_lower", (), "Lower position limit per action joint (artifact action order); "
                  "empty = the artifact's action.limits.lower."),
    ParameterSpec("joint_position_upper", (), "Upper position limit per action joint; empty = the artifact's "
                  "action.limits.upper."),
    ParameterSpec("joint_velocity_limit", (), "Velocity limit per action joint (units/s); empty = the artifact's "
                  "action.limits.velocity, else unlimited (max_step_rad still applies)."),
    ParameterSpec("max_step_rad", 0.1, "Largest change of any joint between consecutive commanded points "
                  "(one control period apart), including from the last commanded point.", range=(1e-4, 3.2)),
    ParameterSpec("enabled", True, "Publish chunks. False keeps intake and diagnostics running but publishes "
                  "nothing."),
)
SPECS: dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}
#: parameters whose change needs a new engine
ENGINE_PARAMETERS = ("artifact", "backend", "device", "sampler", "sampler_steps")


@dataclass(frozen=True)
class NodeSettings:
    """Values of all parameters (field names = parameter names)."""

    artifact: str = ""
    backend: str = "auto"
    device: str = "cpu"
    sampler: str = "ddim"
    sampler_steps: int = 10
    inference_rate_hz: float = 10.0
    trigger: str = "timer"
    executed_steps: int = 0
    blending: str = "off"
    blend_coefficient: float = 0.1
    observation_timeout_s: float = 0.5
    stamp_tolerance_s: float = 0.05
    joint_position_lower: tuple[float, ...] = ()
    joint_position_upper: tuple[float, ...] = ()
    joint_velocity_limit: tuple[float, ...] = ()
    max_step_rad: float = 0.1
    enabled: bool = True

    def updated(self, changes: Mapping[str, Any]) -> NodeSettings:
        """A copy with ``changes`` applied, each value type- and range-checked."""
        values = {}
        for name, value in changes.items():
            if name not in SPECS:
                continue  # parameters of other parts (use_sim_time, qos overrides) are not ours
            values[name] = coerce(SPECS[name], value)
        return replace(self, **values)

    def engine_key(self, kind: str | None) -> tuple:
        """What identifies the engine these settings need (the sampler matters for teachers only)."""
        sampler = (self.sampler, self.sampler_steps) if kind in (None, "teacher") else None
        return (self.artifact, self.backend, self.device, sampler)

    def changed(self, other: NodeSettings) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


@dataclass(frozen=True, eq=False)
class ResolvedSettings:
    """What the controller applies for one artifact: its limits and chunk length."""

    settings: NodeSettings
    limits: JointLimits
    executed_steps: int


def check_settings(settings: NodeSettings, interface: PolicyInterface) -> ResolvedSettings:
    """Check the settings together against ``interface``; the limits and chunk length they give."""
    dim, names = interface.action_dim, interface.action_names
    if settings.executed_steps > interface.n_action_steps:
        raise SettingsError(
            f"parameter 'executed_steps' is {settings.executed_steps}; the artifact '{interface.artifact}' "
            f"predicts {interface.n_action_steps} actions per chunk (0 publishes all of them)"
        )
    if interface.kind == "teacher" and settings.sampler_steps > interface.num_train_timesteps:
        raise SettingsError(
            f"parameter 'sampler_steps' is {settings.sampler_steps}; the teacher '{interface.artifact}' has "
            f"{interface.num_train_timesteps} diffusion steps"
        )
    arrays = {}
    for name, fallback in (
        ("joint_position_lower", interface.lower),
        ("joint_position_upper", interface.upper),
        ("joint_velocity_limit", interface.velocity),
    ):
        value = getattr(settings, name)
        if value and len(value) != dim:
            raise SettingsError(
                f"parameter '{name}' has {len(value)} values; the artifact '{interface.artifact}' commands {dim} "
                f"joints {list(names)} (give one value per joint, or none to use the artifact's limits)"
            )
        arrays[name] = value or fallback
    lower, upper = arrays["joint_position_lower"], arrays["joint_position_upper"]
    if lower is None or upper is None:
        raise SettingsError(
            f"no joint position limits for '{interface.artifact}': set 'joint_position_lower' and "
            "'joint_position_upper' (one value per action joint), or give action.limits in its policy.json"
        )
    bad = [n for n, lo, hi in zip(names, lower, upper, strict=True) if not lo < hi]
    if bad:
        raise SettingsError(f"joint position limits have lower >= upper for {bad}")
    velocity = arrays["joint_velocity_limit"] or (math.inf,) * dim
    bad = [n for n, v in zip(names, velocity, strict=True) if not v > 0]
    if bad:
        raise SettingsError(f"parameter 'joint_velocity_limit' must be positive; it is not for {bad}")
    limits = JointLimits(np.array(lower), np.array(upper), np.array(velocity), settings.max_step_rad, names)
    executed = settings.executed_steps or interface.n_action_steps
    return ResolvedSettings(settings, limits, executed)


def describe_blending(settings: NodeSettings) -> str:
    if settings.blending == EXPONENTIAL:
        return f"{EXPONENTIAL} (m = {settings.blend_coefficient:g})"
    return settings.blending
