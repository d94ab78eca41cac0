"""What a policy artifact needs from the robot and gives back: the node's side of ``policy.json``.

The policy node runs an artifact only when ``policy.json`` says, besides what every artifact
holds (see ``sdm_controller.runtime.artifact``), how its vectors map onto named joints. This is
the contract addition for joint-space artifacts::

    "observation": {
        "low_dim": {"joint_positions": 8},
        "cameras": {"wrist": [3, 96, 96]},
        "state_names": {"joint_positions": ["fr3_joint1", ..., "fr3_joint7", "fr3_finger_joint1"]}
    },
    "action": {
        "dim": 8,
        "names": ["fr3_joint1", ..., "fr3_joint7", "fr3_finger_joint1"],
        "space": "joint_position",
        "limits": {"lower": [...], "upper": [...], "velocity": [...]}     # optional
    },
    "horizons": {"n_obs_steps": 2, "horizon": 16, "n_action_steps": 8},
    "control_period_s": 0.1

* ``observation.state_names[key]`` lists, for every low-dim key, the ``sensor_msgs/JointState``
  joint whose *position* fills each entry of that vector, in order. The node maps joint states by
  these names, so the order of joints in the message does not matter and extra joints are ignored.
* ``action.names`` are the joints the actions command, in the order of the action vector; they
  become ``JointTrajectory.joint_names``. A gripper is one more named joint (for the Franka hand,
  ``fr3_finger_joint1``: the opening of one finger in metres).
* ``action.space`` must be ``"joint_position"``: the node publishes positions, and publishing
  anything else as positions would move the arm somewhere nobody asked for.
* ``action.limits`` (optional) gives per-joint position bounds and velocity limits in the units of
  the action; the node's ``joint_position_lower``/``upper``/``joint_velocity_limit`` parameters
  override them. Position limits must come from one of the two.
* ``control_period_s`` is the time between consecutive actions (and observation steps) of the
  demonstrations; the node samples its observation history and times the actions with it.
* Cameras keep their meaning: the node subscribes to ``<camera>/image_raw`` and feeds uint8 RGB
  frames of the given size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdm_controller.errors import ArtifactError
from sdm_controller.runtime.artifact import POLICY_JSON, read_meta

JOINT_POSITION = "joint_position"


@dataclass(frozen=True)
class PolicyInterface:
    """The inputs and outputs of one artifact, as the node sees them."""

    artifact: str
    kind: str  # "teacher" or "one-step"
    cameras: dict[str, tuple[int, int]]  # camera name -> (height, width) of the policy's input
    state_names: dict[str, tuple[str, ...]]  # low-dim key -> joint names filling it, in order
    action_names: tuple[str, ...]
    n_obs_steps: int
    n_action_steps: int
    control_period_s: float
    num_train_timesteps: int
    lower: tuple[float, ...] | None = None  # artifact's own position limits (None: not given)
    upper: tuple[float, ...] | None = None
    velocity: tuple[float, ...] | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def period_ns(self) -> int:
        return round(self.control_period_s * 1e9)

    @property
    def streams(self) -> tuple[str, ...]:
        """Names of the observation streams: low-dim keys, then cameras (the engine's order)."""
        return (*self.state_names, *self.cameras)

    def same_observations(self, other: PolicyInterface | None) -> bool:
        """True when ``other`` takes exactly the same observation history (a buffer can be kept)."""
        return other is not None and (
            self.cameras == other.cameras
            and self.state_names == other.state_names
            and self.n_obs_steps == other.n_obs_steps
            and self.period_ns == other.period_ns
        )

    def measured_action_index(self) -> dict[int, tuple[str, int]]:
        """Action index -> (low-dim key, index) of the same joint's measured position, where observed."""
        found: dict[int, tuple[str, int]] = {}
        for a, name in enumerate(self.action_names):
            for key, names in self.state_names.items():
                if name in names:
                    found[a] = (key, names.index(name))
                    break
        return found

    @classmethod
    def from_meta(cls, meta: dict[str, Any], artifact: str | Path = "") -> PolicyInterface:
        where = f"'{Path(artifact) / POLICY_JSON}'" if artifact else POLICY_JSON
        policy = meta.get("policy", {})
        obs = meta.get("observation")
        if not isinstance(obs, dict):
            raise ArtifactError(f"{where} lacks the 'observation' object")
        low_dim = obs.get("low_dim") or {}
        cameras_raw = obs.get("cameras") or {}
        state_names_raw = obs.get("state_names")
        if low_dim and not isinstance(state_names_raw, dict):
            raise ArtifactError(
                f"{where} lacks observation.state_names: the policy node maps JointState messages by joint name "
                f"and needs, for each low-dim key {sorted(low_dim)}, the list of joint names that fill it"
            )
        state_names: dict[str, tuple[str, ...]] = {}
        for key, dim in low_dim.items():
            names = (state_names_raw or {}).get(key)
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ArtifactError(f"{where} observation.state_names['{key}'] must be a list of {dim} joint names")
            if len(names) != int(dim):
                raise ArtifactError(
                    f"{where} observation.state_names['{key}'] has {len(names)} names; low_dim['{key}'] is {dim}"
                )
            if len(set(names)) != len(names):
                raise ArtifactError(f"{where} observation.state_names['{key}'] repeats a joint name")
            state_names[str(key)] = tuple(names)
        cameras: dict[str, tuple[int, int]] = {}
        for name, shape in cameras_raw.items():
            if not isinstance(shape, list | tuple) or len(shape) != 3 or int(shape[0]) != 3:
                raise ArtifactError(f"{where} camera '{name}' has shape {shape}; expected [3, height, width]")
            cameras[str(name)] = (int(shape[1]), int(shape[2]))
        action = meta.get("action")
        if not isinstance(action, dict):
            raise ArtifactError(f"{where} lacks the 'action' object")
        space = action.get("space")
        if space != JOINT_POSITION:
            raise ArtifactError(
                f"{where} has action.space {space!r}; the policy node publishes joint positions and runs only "
                f"artifacts with action.space '{JOINT_POSITION}'"
            )
        names = action.get("names")
        dim = action.get("dim", policy.get("action_dim"))
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ArtifactError(f"{where} action.names must be the list of commanded joint names")
        if len(names) != dim or policy.get("action_dim", dim) != dim:
            raise ArtifactError(f"{where} action.names has {len(names)} names; the action dimension is {dim}")
        if len(set(names)) != len(names):
            raise ArtifactError(f"{where} action.names repeats a joint name")
        period = meta.get("control_period_s")
        if not isinstance(period, int | float) or not math.isfinite(period) or period <= 0:
            raise ArtifactError(
                f"{where} has control_period_s {period!r}; the node needs the positive time between actions"
            )
        horizons = meta.get("horizons") or {}
        n_obs = horizons.get("n_obs_steps", policy.get("n_obs_steps"))
        n_act = horizons.get("n_action_steps", policy.get("n_action_steps"))
        if not isinstance(n_obs, int) or not isinstance(n_act, int) or n_obs < 1 or n_act < 1:
            raise ArtifactError(f"{where} horizons must give positive integers n_obs_steps and n_action_steps")
        limits = action.get("limits") or {}
        bounds = {}
        for key in ("lower", "upper", "velocity"):
            value = limits.get(key)
            if value is None:
                bounds[key] = None
                continue
            if not isinstance(value, list) or len(value) != len(names):
                raise ArtifactError(f"{where} action.limits.{key} must list {len(names)} numbers (one per joint)")
            bounds[key] = tuple(float(v) for v in value)
        return cls(
            artifact=str(artifact),
            kind=str(meta.get("kind")),
            cameras=cameras,
            state_names=state_names,
            action_names=tuple(names),
            n_obs_steps=n_obs,
            n_action_steps=n_act,
            control_period_s=float(period),
            num_train_timesteps=int(policy.get("num_train_timesteps", 100)),
            lower=bounds["lower"],
            upper=bounds["upper"],
            velocity=bounds["velocity"],
        )


def read_interface(artifact: str | Path) -> PolicyInterface:
    """Read ``policy.json`` (not the weights) and check it against the node's contract."""
    if not str(artifact):
        raise ArtifactError("no artifact is set; set the 'artifact' parameter to a policy artifact folder")
    return PolicyInterface.from_meta(read_meta(artifact), artifact)
