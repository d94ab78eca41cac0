"""Vectorised MetaWorld rollouts: many envs stepped together, one batched policy call per chunk.

``EvalSuite`` builds its envs once (``gym.make`` costs about a second each) and saves each env's
checkpoint (task list and RNG state); every evaluation restores them, so every policy and sampler
faces exactly the same initial conditions. Episode ``k`` runs on env ``k % num_envs``, whose seed
is ``seed * 1000 + k % num_envs``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from sdm_controller.errors import ConfigError
from sdm_controller.policy.observation_spec import ObservationSpec
from sdm_controller.sim import metaworld as mw

#: ``act(obs_window) -> (B, n_action_steps, Da)``; obs_window[key] is (B, To, ...) in raw units.
ActFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class EvalResult:
    task: str
    episodes: int
    successes: int
    mean_success_steps: float | None
    ms_per_chunk: float
    chunks: int
    wall_s: float

    @property
    def success(self) -> float:
        return self.successes / self.episodes


class EvalSuite:
    """``num_envs`` envs of one task with fixed seeds, reusable across evaluations."""

    def __init__(self, task: str, num_envs: int = 25, seed: int = 0, image_size: int | None = None) -> None:
        if num_envs <= 0:
            raise ConfigError(f"num_envs must be positive, got {num_envs}")
        self.task = mw.resolve_task(task)
        self.image_size = image_size
        self.envs = [mw.make_env(self.task, seed * 1000 + i) for i in range(num_envs)]
        self.checkpoints = [env.get_wrapper_attr("get_checkpoint")() for env in self.envs]
        self.renderers = [mw.CameraRenderer(env, image_size) for env in self.envs] if image_size else None

    def close(self) -> None:
        for renderer in self.renderers or []:
            renderer.close()
        for env in self.envs:
            env.close()

    def _obs(self, i: int, state: np.ndarray) -> dict[str, np.ndarray]:
        return mw.observation(state, self.image_size, self.renderers[i] if self.renderers else None)

    def evaluate(
        self, act: ActFn, episodes: int, n_obs_steps: int, max_steps: int = mw.EPISODE_STEPS
    ) -> EvalResult:
        """Run ``episodes`` episodes in waves of ``num_envs``; success = ``info['success']`` at any step."""
        if episodes <= 0:
            raise ConfigError(f"episodes must be positive, got {episodes}")
        for env, checkpoint in zip(self.envs, self.checkpoints, strict=True):
            env.get_wrapper_attr("load_checkpoint")([checkpoint])
        successes, success_steps, policy_s, chunks = 0, [], 0.0, 0
        start = time.perf_counter()
        remaining = episodes
        while remaining > 0:
            wave = min(remaining, len(self.envs))
            remaining -= wave
            history: list[list[dict[str, np.ndarray]]] = []
            for i in range(wave):
                state, _ = self.envs[i].reset()
                history.append([self._obs(i, state)] * n_obs_steps)
            active = list(range(wave))
            steps = np.zeros(wave, dtype=int)
            while active:
                window = {
                    key: torch.from_numpy(np.stack([np.stack([h[key] for h in history[i]]) for i in active]))
                    for key in history[active[0]][0]
                }
                t0 = time.perf_counter()
                actions = act(window).cpu().numpy()
                policy_s += time.perf_counter() - t0
                chunks += 1
                still = []
                for row, i in enumerate(active):
                    done = False
                    for action in actions[row]:
                        state, _, _, _, info = self.envs[i].step(np.clip(action, -1.0, 1.0))
                        steps[i] += 1
                        history[i] = [*history[i][1:], self._obs(i, state)]
                        if info["success"]:
                            successes += 1
                            success_steps.append(int(steps[i]))
                            done = True
                            break
                        if steps[i] >= max_steps:
                            done = True
                            break
                    if not done:
                        still.append(i)
                active = still
        return EvalResult(
            task=self.task,
            episodes=episodes,
            successes=successes,
            mean_success_steps=float(np.mean(success_steps)) if success_steps else None,
            ms_per_chunk=1000.0 * policy_s / max(chunks, 1),
            chunks=chunks,
            wall_s=time.perf_counter() - start,
        )


def check_observations(spec: ObservationSpec, task: str, artifact: str) -> int | None:
    """The camera size a policy needs in ``task``, or ``ConfigError`` when MetaWorld cannot give
    what the policy observes (a Franka artifact, another camera, another state size)."""
    cameras = spec.cameras
    image_size = next(iter(cameras.values()))[1] if cameras else None
    if image_size is not None and any(shape[1] != shape[2] for shape in cameras.values()):
        raise ConfigError(f"'{artifact}' takes non-square images {cameras}; MetaWorld renders square ones")
    offered = ObservationSpec.from_dict(mw.observation_spec(image_size))
    if offered != spec:
        raise ConfigError(f"'{artifact}' observes {spec}; MetaWorld task '{task}' gives {offered}: it was not "
                          "trained on MetaWorld observations")
    return image_size


def teacher_act(policy, steps: int, method: str, seed: int = 0) -> ActFn:
    """Wrap a ``DiffusionPolicy`` sampler as an ``ActFn`` with a seeded noise generator."""
    generator = torch.Generator().manual_seed(seed)

    def act(window: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy.predict_action(window, steps=steps, method=method, generator=generator)

    return act


def policy_act(policy, seed: int = 0) -> ActFn:
    """Wrap a one-step policy (one network call per chunk) as an ``ActFn``."""
    generator = torch.Generator().manual_seed(seed)

    def act(window: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy.predict_action(window, generator=generator)

    return act
