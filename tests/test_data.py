"""Episode storage, training windows and dataset → policy config."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
import zarr

from sdm_controller.data.episodes import FORMAT, EpisodeSet, load_episodes, save_episodes
from sdm_controller.data.windows import WindowSampler, window_indices
from sdm_controller.errors import DatasetError
from sdm_controller.training.teacher import policy_config_for

# -- window_indices ----------------------------------------------------------------------------


def test_window_indices_padding_at_episode_edges():
    ends = np.array([5, 8])
    horizon, pad_before, pad_after = 4, 1, 2
    index = window_indices(ends, horizon, pad_before, pad_after)
    per_episode = [5 - 4 + 1 + 2 + 1, 3 - 4 + 1 + 2 + 1]
    assert per_episode == [5, 3]
    assert index.shape == (sum(per_episode), horizon)
    assert index.dtype == np.int64
    first_a, last_a = index[0], index[per_episode[0] - 1]
    first_b, last_b = index[per_episode[0]], index[-1]
    np.testing.assert_array_equal(first_a, [0, 0, 1, 2])  # repeats the first frame once
    np.testing.assert_array_equal(last_a, [3, 4, 4, 4])  # repeats the last frame twice
    np.testing.assert_array_equal(first_b, [5, 5, 6, 7])
    np.testing.assert_array_equal(last_b, [6, 7, 7, 7])
    np.testing.assert_array_equal(
        index,
        [
            [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4], [3, 4, 4, 4],
            [5, 5, 6, 7], [5, 6, 7, 7], [6, 7, 7, 7],
        ],
    )


@pytest.mark.parametrize("horizon, pad_before, pad_after", [(4, 1, 2), (16, 1, 7), (8, 0, 0), (6, 3, 5)])
def test_window_indices_never_cross_episodes(horizon, pad_before, pad_after):
    rng = np.random.default_rng(horizon)
    lengths = rng.integers(horizon, 3 * horizon, size=6)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    index = window_indices(ends, horizon, pad_before, pad_after)
    episode_of = np.searchsorted(ends, index, side="right")
    assert np.all(episode_of == episode_of[:, :1]), "a window crosses an episode boundary"
    steps = np.diff(index, axis=1)
    assert np.all((steps == 0) | (steps == 1))
    counts = np.bincount(episode_of[:, 0], minlength=len(lengths))
    np.testing.assert_array_equal(counts, lengths - horizon + pad_before + pad_after + 1)
    # Every frame of every episode appears in some window (no frame is dropped).
    assert set(index.ravel()) == set(range(ends[-1]))
    # The first window of each episode starts with pad_before + 1 copies of its first frame.
    first_rows = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for row, start in zip(first_rows, starts, strict=True):
        assert np.all(index[row, : pad_before + 1] == start)
        assert index[row, pad_before + 1] == start + 1


def _counting_episodes(lengths, obs_dim=3, action_dim=2) -> EpisodeSet:
    """Frame ``i`` has obs ``[i, i, ...]`` and action ``[i, -i]``: windows can be checked by value."""
    n = int(sum(lengths))
    frame = np.arange(n, dtype=np.float32)
    obs = {"state": np.repeat(frame[:, None], obs_dim, axis=1)}
    action = np.stack([frame, -frame] + [frame] * (action_dim - 2), axis=1)
    return EpisodeSet(obs=obs, action=action, episode_ends=np.cumsum(lengths))


def test_window_sampler_batch_shapes_and_alignment():
    episodes = _counting_episodes([20, 11, 30])
    sampler = WindowSampler(episodes, horizon=16, n_obs_steps=2, n_action_steps=8, obs_keys=["state"], seed=0)
    assert len(sampler) == (20 - 16 + 1 + 7 + 1) + (11 - 16 + 1 + 7 + 1) + (30 - 16 + 1 + 7 + 1)
    batch = sampler.batch(5)
    assert set(batch) == {"obs", "action"}
    assert batch["obs"]["state"].shape == (5, 2, 3)
    assert batch["action"].shape == (5, 16, 2)
    assert batch["obs"]["state"].dtype == torch.float32
    # The observations are the first n_obs_steps frames of the same window as the actions.
    torch.testing.assert_close(batch["obs"]["state"][:, :, 0], batch["action"][:, :2, 0])
    again = WindowSampler(episodes, 16, 2, 8, ["state"], seed=0).batch(5)
    torch.testing.assert_close(again["action"], batch["action"])


# -- save / load -------------------------------------------------------------------------------


def _image_episodes() -> EpisodeSet:
    rng = np.random.default_rng(1)
    n = 13
    obs = {
        "agent_pos": rng.normal(size=(n, 4)).astype(np.float32),
        "corner": rng.integers(0, 256, size=(n, 8, 10, 3), dtype=np.uint8),
    }
    spec = {"low_dim": {"agent_pos": 4}, "cameras": {"corner": [3, 8, 10]}}
    action = rng.normal(size=(n, 4)).astype(np.float32)
    attrs = {"source": "unit-test", "obs_spec": spec}
    return EpisodeSet(obs=obs, action=action, episode_ends=[6, 13], attrs=attrs)


def test_save_load_round_trip_with_images(tmp_path):
    episodes = _image_episodes()
    path = tmp_path / "img.zarr"
    content_hash = save_episodes(episodes, path)
    assert content_hash == episodes.content_hash() and content_hash.startswith("sha256:")
    loaded = load_episodes(path)
    assert loaded.obs["corner"].dtype == np.uint8
    assert loaded.obs["corner"].shape == (13, 8, 10, 3)
    assert hashlib.sha256(loaded.obs["corner"].tobytes()).hexdigest() == hashlib.sha256(
        episodes.obs["corner"].tobytes()).hexdigest()
    np.testing.assert_array_equal(loaded.obs["agent_pos"], episodes.obs["agent_pos"])
    np.testing.assert_array_equal(loaded.action, episodes.action)
    np.testing.assert_array_equal(loaded.episode_ends, [6, 13])
    assert loaded.content_hash() == content_hash
    assert zarr.open_group(str(path), mode="r").attrs["content_hash"] == content_hash
    assert loaded.attrs == episodes.attrs
    assert loaded.camera_keys == ["corner"] and loaded.low_dim_keys == ["agent_pos"]


def test_content_hash_changes_with_content():
    a = _image_episodes()
    b = _image_episodes()
    assert a.content_hash() == b.content_hash()
    b.obs["corner"][3, 2, 1, 0] ^= 1
    assert a.content_hash() != b.content_hash()


def test_load_episodes_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_episodes(tmp_path / "nope.zarr")


def test_load_episodes_plain_folder(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match="plain"):
        load_episodes(folder)


def test_load_episodes_wrong_format(tmp_path):
    path = tmp_path / "fmt.zarr"
    save_episodes(_image_episodes(), path)
    zarr.open_group(str(path), mode="r+").attrs["format"] = "someone-else/2"
    with pytest.raises(DatasetError, match="someone-else/2") as info:
        load_episodes(path)
    assert FORMAT in str(info.value)


def test_load_episodes_missing_episode_ends(tmp_path):
    path = tmp_path / "noends.zarr"
    save_episodes(_image_episodes(), path)
    shutil.rmtree(path / "meta" / "episode_ends")
    with pytest.raises(DatasetError, match="noends.zarr") as info:
        load_episodes(path)
    assert "episode_ends" in str(info.value)


def test_episode_set_mismatched_lengths():
    with pytest.raises(DatasetError, match="'state' has 9 frames but there are 10 actions"):
        EpisodeSet(obs={"state": np.zeros((9, 2))}, action=np.zeros((10, 2)), episode_ends=[10])


@pytest.mark.parametrize("ends", [[5, 9], [5, 5, 10], [6, 4, 10], []])
def test_episode_set_bad_episode_ends(ends):
    with pytest.raises(DatasetError, match="episode_ends"):
        EpisodeSet(obs={"state": np.zeros((10, 2))}, action=np.zeros((10, 2)), episode_ends=ends)


# -- dataset → policy config -------------------------------------------------------------------


def test_policy_config_for_reads_spec_from_dataset():
    episodes = _image_episodes()
    config = policy_config_for(episodes, {"unet_preset": "tiny", "horizon": 8, "n_action_steps": 4})
    assert config.obs.low_dim == {"agent_pos": 4}
    assert config.obs.cameras == {"corner": (3, 8, 10)}
    assert config.action_dim == 4 and config.horizon == 8 and config.unet_preset == "tiny"


def test_policy_config_for_missing_observation_key():
    episodes = _image_episodes()
    episodes.attrs["obs_spec"] = {"low_dim": {"state": 39}, "cameras": {"corner": [3, 8, 10]}}
    with pytest.raises(DatasetError, match="state"):
        policy_config_for(episodes, {})


def test_policy_config_for_wrong_dimension_and_missing_spec():
    episodes = _image_episodes()
    episodes.attrs["obs_spec"] = {"low_dim": {"agent_pos": 7}, "cameras": {}}
    with pytest.raises(DatasetError, match="agent_pos"):
        policy_config_for(episodes, {})
    del episodes.attrs["obs_spec"]
    with pytest.raises(DatasetError, match="obs_spec"):
        policy_config_for(episodes, {})


def test_collected_dataset_matches_its_spec(drawer_episodes, drawer_dataset):
    assert drawer_episodes.num_episodes == 3
    assert drawer_episodes.obs["state"].shape[1:] == (39,)
    assert drawer_episodes.action.shape[1:] == (4,)
    assert np.abs(drawer_episodes.action).max() <= 1.0
    assert drawer_episodes.attrs["task"] == "drawer-open-v3"
    stored = zarr.open_group(str(drawer_dataset), mode="r").attrs["content_hash"]
    assert drawer_episodes.content_hash() == stored
