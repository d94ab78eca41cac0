"""Small untrained but valid joint-space artifacts: inputs for latency benchmarks and smoke runs that need no training.

    write_untrained_artifact("/tmp/fr3_wrist", cameras=("wrist",))   # one-step, FR3 arm + gripper

The artifact follows the joint-space contract of ``sdm_controller.control.policy_interface``:
state and action are the positions of ``joint_names`` (FR3's seven joints and
``fr3_finger_joint1`` by default), the action space is ``joint_position``, ``action.limits`` holds
the joints' position and velocity limits, and the normalizer statistics span a plausible working
range inside those limits (so the untrained policy's clipped output stays inside it). The
networks are the ``tiny`` UNet preset with random initial weights; actions are therefore
meaningless but finite, bounded, and produced at the speed a real artifact of that size runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sdm_controller.common.fr3 import FR3_JOINTS, JOINT_LIMITS
from sdm_controller.control.policy_interface import JOINT_POSITION
from sdm_controller.policy.configuration_diffusion import DiffusionConfig, ObservationSpec
from sdm_controller.policy.modeling_diffusion import ACTION_KEY, DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.runtime.artifact import save_artifact

STATE_KEY = "joint_positions"


def joint_limits(names: Sequence[str]) -> tuple[list[float], list[float], list[float]]:
    """Lower, upper and velocity limits for ``names`` (unknown joints: [-pi, pi], 2 rad/s)."""
    rows = [JOINT_LIMITS.get(name, (-3.1416, 3.1416, 2.0)) for name in names]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def working_range(names: Sequence[str], fraction: float = 0.6) -> tuple[list[float], list[float]]:
    """The middle ``fraction`` of each joint's range: the normalizer's min/max."""
    lower, upper, _ = joint_limits(names)
    mids = [(lo + hi) / 2 for lo, hi in zip(lower, upper, strict=True)]
    halves = [(hi - lo) / 2 * fraction for lo, hi in zip(lower, upper, strict=True)]
    return [m - h for m, h in zip(mids, halves, strict=True)], [m + h for m, h in zip(mids, halves, strict=True)]


def write_untrained_artifact(
    path: str | Path,
    cameras: Sequence[str] = ("wrist",),
    joint_names: Sequence[str] = FR3_JOINTS,
    one_step: bool = True,
    image_size: tuple[int, int] = (32, 32),
    n_obs_steps: int = 2,
    horizon: int = 16,
    n_action_steps: int = 8,
    control_period_s: float = 0.1,
    seed: int = 0,
    image_encoder: str = "resnet18",
) -> Path:
    """Write an untrained artifact (see module docstring) to ``path`` and return it.

    ``image_size`` is (height, width) of every camera; ``one_step=False`` writes a teacher;
    ``image_encoder`` "convnet" makes the camera encoder about 10x cheaper than ResNet-18.
    """
    names = list(joint_names)
    config = DiffusionConfig(
        obs=ObservationSpec(low_dim={STATE_KEY: len(names)},
                            cameras={name: (3, *image_size) for name in cameras}),
        action_dim=len(names),
        horizon=horizon,
        n_obs_steps=n_obs_steps,
        n_action_steps=n_action_steps,
        unet_preset="tiny",
        step_embed_dim=32,
        state_hidden_dim=64,
        state_feature_dim=32,
        image_feature_dim=16,
        image_encoder=image_encoder,
    )
    low, high = working_range(names)
    stats = {STATE_KEY: {"min": low, "max": high}, ACTION_KEY: {"min": low, "max": high}}
    torch.manual_seed(seed)
    if one_step:
        policy = OneStepPolicy(config, stats, GeneratorSpec(timestep=config.num_train_timesteps - 1))
    else:
        policy = DiffusionPolicy(config, stats)
    lower, upper, velocity = joint_limits(names)
    return save_artifact(
        path,
        policy,
        kind="one-step" if one_step else "teacher",
        provenance={"algorithm": "untrained (sdm_controller.bench.untrained_artifact)", "seed": seed},
        action={
            "names": names,
            "space": JOINT_POSITION,
            "limits": {"lower": lower, "upper": upper, "velocity": velocity},
        },
        control_period_s=control_period_s,
        state_names={STATE_KEY: names},
    )
