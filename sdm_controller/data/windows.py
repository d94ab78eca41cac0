"""Training windows over episodes, padded at the edges as in Diffusion Policy.

A window is ``horizon`` consecutive frames of one episode; its first ``n_obs_steps`` frames are
the observations and all its frames give the action chunk. Windows may start up to
``n_obs_steps - 1`` frames before an episode and end up to ``n_action_steps - 1`` frames after it;
the missing frames repeat the episode's first or last frame, so the policy learns the start of
an episode (no history yet) and the end (hold still).
"""

from __future__ import annotations

import numpy as np
import torch

from sdm_controller.data.episodes import EpisodeSet


def window_indices(
    episode_ends: np.ndarray, horizon: int, pad_before: int, pad_after: int
) -> np.ndarray:
    """(num_windows, horizon) frame indices, clamped to each window's own episode."""
    rows = []
    starts = np.concatenate([[0], episode_ends[:-1]])
    offsets = np.arange(horizon)
    for start, end in zip(starts, episode_ends, strict=True):
        length = end - start
        first, last = -pad_before, length - horizon + pad_after
        for i in range(first, last + 1):
            rows.append(start + np.clip(i + offsets, 0, length - 1))
    return np.asarray(rows, dtype=np.int64).reshape(-1, horizon)


class WindowSampler:
    """Random batches of windows from an ``EpisodeSet``, as torch tensors.

    Low-dim data and actions are gathered with one index operation per batch (the whole
    dataset fits in memory); images stay uint8 until the policy converts them.
    """

    def __init__(
        self,
        episodes: EpisodeSet,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        obs_keys: list[str],
        seed: int = 0,
    ) -> None:
        self.index = window_indices(episodes.episode_ends, horizon, n_obs_steps - 1, n_action_steps - 1)
        self.n_obs_steps = n_obs_steps
        self.obs = {key: torch.from_numpy(np.ascontiguousarray(episodes.obs[key])) for key in obs_keys}
        self.action = torch.from_numpy(episodes.action)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, batch_size: int) -> dict:
        rows = self.index[self.rng.integers(0, len(self.index), size=batch_size)]
        rows_t = torch.from_numpy(rows)
        obs_rows = rows_t[:, : self.n_obs_steps]
        return {
            "obs": {key: value[obs_rows] for key, value in self.obs.items()},
            "action": self.action[rows_t],
        }
