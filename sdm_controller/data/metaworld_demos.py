"""Demonstrations from MetaWorld's scripted experts, successful episodes only.

An episode stops a few steps after the first success (the policy should learn to finish, not
to wander) or at the episode limit; failures are dropped and retried with the next reset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from sdm_controller.data.episodes import EpisodeSet, save_episodes
from sdm_controller.errors import ConfigError, DatasetError
from sdm_controller.sim import metaworld as mw

STEPS_AFTER_SUCCESS = 10


def collect_metaworld(
    task: str,
    out: str | Path,
    num_demos: int = 10,
    seed: int = 0,
    image_size: int | None = None,
    max_attempts_factor: int = 3,
    progress: bool = True,
) -> tuple[EpisodeSet, str]:
    """Run the expert until ``num_demos`` successes; write them to ``out``; return (set, hash)."""
    if num_demos <= 0:
        raise ConfigError(f"num_demos must be positive, got {num_demos}")
    task_id = mw.resolve_task(task)
    env = mw.make_env(task_id, seed)
    expert = mw.expert_policy(task_id)
    renderer = mw.CameraRenderer(env, image_size) if image_size else None
    episodes: list[dict[str, np.ndarray]] = []
    attempts = 0
    bar = tqdm(total=num_demos, desc=f"collect {task_id}", disable=not progress)
    while len(episodes) < num_demos:
        attempts += 1
        if attempts > max_attempts_factor * num_demos:
            raise DatasetError(
                f"the {task_id} expert succeeded in only {len(episodes)} of {attempts - 1} episodes; "
                f"cannot collect {num_demos} demos"
            )
        state, _ = env.reset()
        frames: dict[str, list[np.ndarray]] = {}
        actions: list[np.ndarray] = []
        success_step = None
        for step in range(mw.EPISODE_STEPS):
            for key, value in mw.observation(state, image_size, renderer).items():
                frames.setdefault(key, []).append(value)
            action = np.clip(expert.get_action(state), -1.0, 1.0).astype(np.float32)
            actions.append(action)
            state, _, _, _, info = env.step(action)
            if info["success"] and success_step is None:
                success_step = step
            if success_step is not None and step >= success_step + STEPS_AFTER_SUCCESS:
                break
        if success_step is None:
            continue
        episode = {"action": np.stack(actions)}
        episode.update({f"obs/{key}": np.stack(values) for key, values in frames.items()})
        episodes.append(episode)
        bar.update(1)
    bar.close()
    if renderer:
        renderer.close()
    env.close()
    attrs = {
        "source": f"metaworld:{task_id}",
        "task": task_id,
        "seed": seed,
        "obs_spec": mw.observation_spec(image_size),
        "action_names": mw.ACTION_NAMES,
        "action_space": "end-effector delta + gripper, [-1, 1]",
        "control_period_s": mw.CONTROL_PERIOD_S,
        "expert_attempts": attempts,
    }
    episode_set = EpisodeSet.from_episodes(episodes, attrs)
    content_hash = save_episodes(episode_set, out)
    return episode_set, content_hash
