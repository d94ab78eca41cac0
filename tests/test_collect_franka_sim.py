"""``collect franka-sim``: the scripted expert recorded through the real sim stack (bridge, driver,
expert node, recorder as processes over DDS), then read back as a training dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdm_controller.common.fr3 import FR3_JOINTS, JOINT_LIMITS, action_limits
from sdm_controller.data.episodes import load_episodes
from sdm_controller.errors import ConfigError
from sdm_controller.sim.franka_scene import HOME_Q
from sdm_controller.stack.franka_sim_demos import collect_franka_sim
from sdm_controller.training.teacher import TrainConfig, train_teacher

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos") / "reach.zarr"
    results = collect_franka_sim(out, num_demos=2, seed=3, timeout_s=20.0, progress=False)
    return out, results


def test_expert_episodes_become_a_dataset_of_the_policy_topics(collected):
    out, results = collected
    assert sum(r.success for r in results) == 2, results
    assert all(r.chunks > 0 and r.recoveries >= 1 for r in results), results
    episodes = load_episodes(out)
    assert episodes.num_episodes == 2
    assert episodes.obs["front"].shape[1:] == (96, 96, 3)
    assert episodes.attrs["action_source"] == "topic"
    assert episodes.attrs["recorder"]["command_type"] == "joint_trajectory"
    assert list(episodes.attrs["action_names"]) == list(FR3_JOINTS)
    starts = np.concatenate([[0], episodes.episode_ends[:-1]])
    state, action = episodes.obs["state"], episodes.action
    for start, end in zip(starts, episodes.episode_ends, strict=True):
        # each episode starts with the arm at home, after the reset, and then moves
        np.testing.assert_allclose(state[start, :7], HOME_Q, atol=0.02)
        assert np.abs(state[end - 1, :7] - state[start, :7]).max() > 0.1
        # and ends holding still on the cube for the collection's hold_s (1 s = 10 frames)
        assert np.abs(np.diff(state[end - 6 : end, :7], axis=0)).max() < 0.01
        # action k is the expert's target one period later: where the arm is one frame later (tracking lag)
        lag = np.abs(action[start : end - 1, :7] - state[start + 1 : end, :7]).max()
        assert lag < 0.15, lag
        # the camera sees the arm move
        assert np.abs(episodes.obs["front"][end - 1].astype(int) - episodes.obs["front"][start]).mean() > 1.0


def test_collect_refuses_bad_settings_before_starting_anything(tmp_path):
    with pytest.raises(ConfigError, match="positive"):
        collect_franka_sim(tmp_path / "a.zarr", num_demos=0)
    with pytest.raises(ConfigError, match="hold_s"):
        collect_franka_sim(tmp_path / "a.zarr", num_demos=1, hold_s=-1.0)
    with pytest.raises(ConfigError, match="hold_s"):
        collect_franka_sim(tmp_path / "a.zarr", num_demos=1, timeout_s=5.0, hold_s=5.0)
    (tmp_path / "b.zarr").mkdir()
    with pytest.raises(ConfigError, match="exists"):
        collect_franka_sim(tmp_path / "b.zarr", num_demos=1)


def test_a_teacher_trained_on_the_demos_carries_the_fr3_limits(collected, tmp_path):
    out, _ = collected
    config = TrainConfig(steps=2, batch_size=4, warmup_steps=1,
                         policy={"unet_preset": "tiny", "image_encoder": "convnet"})
    train_teacher(out, tmp_path / "teacher", config, progress=False)
    action = json.loads((tmp_path / "teacher" / "policy.json").read_text())["action"]
    assert action["names"] == list(FR3_JOINTS)
    assert action["limits"]["lower"] == [JOINT_LIMITS[name][0] for name in FR3_JOINTS]
    assert action["limits"]["velocity"][-1] == JOINT_LIMITS["fr3_finger_joint1"][2]
    assert action_limits(["fr3_joint1", "elbow"]) is None  # not all FR3 joints: the node's parameters must say
