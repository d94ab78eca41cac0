"""MetaWorld v3 tasks as this project uses them: names, seeding, observations, camera.

One place knows the v3 pitfalls: the 500-step default limit (we cut at ``EPISODE_STEPS``), expert
actions outside [-1, 1] (clipped), seeds that only take effect through ``gym.make``, and camera
images that come out upside down with slow default shadows.
"""

from __future__ import annotations

import difflib
import os
import warnings
from typing import Any

import numpy as np

from sdm_controller.errors import TaskError

EPISODE_STEPS = 200  # DP3 / SDM protocol episode length
STATE_DIM = 39
ACTION_DIM = 4
ACTION_NAMES = ["dx", "dy", "dz", "gripper"]
CAMERA = "corner"
CONTROL_PERIOD_S = 0.0125  # 80 Hz MetaWorld control step (frame_skip 5 x 2.5 ms)


def _quiet() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    warnings.filterwarnings("ignore", module="gymnasium")
    warnings.filterwarnings("ignore", message=".*Constant\\(s\\) may be too high.*")


def task_names() -> list[str]:
    _quiet()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(name.removesuffix("-v3") for name in ALL_V3_ENVIRONMENTS)


def resolve_task(name: str) -> str:
    """'drawer-open' or 'drawer-open-v3' → 'drawer-open-v3'; unknown names get suggestions."""
    base = name.removesuffix("-v3")
    names = task_names()
    if base not in names:
        close = difflib.get_close_matches(base, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known tasks: {', '.join(names)}"
        raise TaskError(f"unknown MetaWorld task '{name}'{hint}")
    return f"{base}-v3"


def make_env(task: str, seed: int) -> Any:
    """One MT1 env of ``task`` whose reset sequence is fixed by ``seed`` (through gym.make)."""
    _quiet()
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/* ids)

    return gym.make("Meta-World/MT1", env_name=resolve_task(task), seed=seed, max_episode_steps=EPISODE_STEPS)


def expert_policy(task: str) -> Any:
    _quiet()
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[resolve_task(task)]()


class CameraRenderer:
    """Renders the task camera upright, with shadows off (about 20x cheaper on llvmpipe)."""

    def __init__(self, env: Any, size: int, camera: str = CAMERA) -> None:
        import mujoco

        self._mujoco = mujoco
        self.model = env.unwrapped.model
        self.data = env.unwrapped.data
        self.camera = camera
        self.renderer = mujoco.Renderer(self.model, size, size)

    def __call__(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=self.camera)
        self.renderer.scene.flags[self._mujoco.mjtRndFlag.mjRND_SHADOW] = False
        return self.renderer.render()[::-1].copy()  # the corner cameras look upside down

    def close(self) -> None:
        self.renderer.close()


def observation(state: np.ndarray, image_size: int | None, renderer: CameraRenderer | None) -> dict[str, np.ndarray]:
    """State mode: the 39-d state. Image mode: hand xyz + gripper as proprioception, plus the camera."""
    if image_size is None:
        return {"state": state.astype(np.float32)}
    assert renderer is not None
    return {"agent_pos": state[:4].astype(np.float32), CAMERA: renderer()}


def observation_spec(image_size: int | None) -> dict[str, Any]:
    """The ``ObservationSpec`` fields matching ``observation``."""
    if image_size is None:
        return {"low_dim": {"state": STATE_DIM}, "cameras": {}}
    return {"low_dim": {"agent_pos": 4}, "cameras": {CAMERA: (3, image_size, image_size)}}
