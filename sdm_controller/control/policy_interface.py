"""What a policy artifact needs from the robot and gives back: the node's side of ``policy.json``.

The policy node runs an artifact only when its :class:`~sdm_controller.runtime.artifact.ArtifactSpec`
says, besides what every artifact holds, how its vectors map onto named joints. In
``policy.json`` (schema 2) that is::

    "observation": {
        "streams": [{"name": "joint_positions", "kind": "low_dim", "shape": [8], "dtype": "float32"},
                    {"name": "wrist", "kind": "image", "shape": [96, 96, 3], "dtype": "uint8"}],
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

* ``observation.state_names[key]`` lists, for every low-dim stream, the ``sensor_msgs/JointState``
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
* Image streams keep their meaning: the node subscribes to ``<camera>/image_raw`` and feeds uint8
  RGB frames of the given size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdm_controller.errors import ArtifactError
from sdm_controller.policy.observation_spec import IMAGE, LOW_DIM, ObservationSpec, ObservationStream
from sdm_controller.runtime.artifact import ArtifactSpec, read_spec

JOINT_POSITION = "joint_position"


@dataclass(frozen=True)
class PolicyInterface:
    """The inputs and outputs of one artifact, as the node sees them."""

    artifact: str
    kind: str  # "teacher" or "one-step"
    observation: ObservationSpec  # the streams, each with its kind and frame shape
    state_names: dict[str, tuple[str, ...]]  # low-dim stream -> joint names filling it, in order
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
        """Names of the observation streams, in the engine's order."""
        return self.observation.names

    @property
    def frame_streams(self) -> tuple[ObservationStream, ...]:
        """The streams that arrive one frame per message on a topic of their own (all but low-dim,
        which are filled together from ``joint_states``)."""
        return tuple(s for s in self.observation.streams if s.kind != LOW_DIM)

    @property
    def cameras(self) -> dict[str, tuple[int, int]]:
        """Camera name -> (height, width) of the policy's input."""
        return {s.name: (s.shape[0], s.shape[1]) for s in self.observation.of_kind(IMAGE)}

    def same_observations(self, other: PolicyInterface | None) -> bool:
        """True when ``other`` takes exactly the same observation history (a buffer can be kept)."""
        return other is not None and (
            self.observation == other.observation
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
    def from_spec(cls, spec: ArtifactSpec) -> PolicyInterface:
        """The node's view of a parsed artifact; ``ArtifactError`` where it breaks the node's contract."""
        where = spec.where()
        obs = spec.observation
        missing = [key for key in obs.low_dim if key not in spec.state_names]
        if missing:
            raise ArtifactError(
                f"{where} lacks observation.state_names: the policy node maps JointState messages by joint name "
                f"and needs, for each low-dim key {sorted(missing)}, the list of joint names that fill it"
            )
        action = spec.action
        if action.space != JOINT_POSITION:
            raise ArtifactError(
                f"{where} has action.space {action.space!r}; the policy node publishes joint positions and runs only "
                f"artifacts with action.space '{JOINT_POSITION}'"
            )
        if not action.names:
            raise ArtifactError(f"{where} action.names must be the list of commanded joint names")
        if spec.control_period_s is None:
            raise ArtifactError(
                f"{where} has control_period_s None; the node needs the positive time between actions"
            )
        config = spec.config
        return cls(
            artifact=str(spec.path),
            kind=spec.kind,
            observation=obs,
            state_names={key: spec.state_names[key] for key in obs.low_dim},
            action_names=action.names,
            n_obs_steps=config.n_obs_steps,
            n_action_steps=config.n_action_steps,
            control_period_s=spec.control_period_s,
            num_train_timesteps=config.num_train_timesteps,
            lower=action.lower,
            upper=action.upper,
            velocity=action.velocity,
        )


def read_interface(artifact: str | Path) -> PolicyInterface:
    """Read ``policy.json`` (not the weights) and check it against the node's contract."""
    if not str(artifact):
        raise ArtifactError("no artifact is set; set the 'artifact' parameter to a policy artifact folder")
    return PolicyInterface.from_spec(read_spec(artifact))
