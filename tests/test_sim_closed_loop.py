"""Closed-loop episodes on the simulated stack (mujoco_bridge, franka_driver and policy_node as
processes over DDS, camera images in, chunks out), run and scored from outside, and their settings."""

from __future__ import annotations

import numpy as np
import pytest

from sdm_controller.bench.franka_sim import goal
from sdm_controller.bench.untrained_artifact import write_untrained_artifact
from sdm_controller.cli import main as cli_main
from sdm_controller.errors import ConfigError
from sdm_controller.stack.episodes import params_file_with
from sdm_controller.stack.sim_evaluation import PolicyUnderTest, run_policy_on_sim
from sdm_controller.stack.supervisor import package_folder


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    """Two short episodes of an untrained one-step artifact with the bridge's camera (96x96 "front")."""
    folder = tmp_path_factory.mktemp("sim")
    artifact = write_untrained_artifact(folder / "fr3_front", cameras=("front",), image_size=(96, 96),
                                  image_encoder="convnet")
    return run_policy_on_sim(PolicyUnderTest("untrained", artifact), episodes=2, log_path=folder / "nodes.log",
                             seed=7, timeout_s=4.0, progress=False)


@pytest.mark.ros
def test_chunks_flow_from_camera_images_and_every_episode_is_measured(sim_run):
    assert len(sim_run.episodes) == 2
    for episode in sim_run.episodes:
        assert not episode.success  # an untrained policy does not find the cube
        assert episode.chunks >= 10 and episode.chunk_rate_hz > 3.0, episode
        # the bridge reported the hand half a metre or so from the cube's top, and nothing closer than the table allows
        assert 0.2 < episode.start_distance_m < 1.0 and 0.0 <= episode.min_distance_m <= episode.start_distance_m
        assert episode.recoveries >= 1
    latencies = sim_run.latencies_ms()
    assert np.all(np.isfinite(latencies)) and np.all(latencies > 0)
    summary = sim_run.summary()
    assert summary["latency_p50_ms"] < 300.0 and summary["chunks"] == latencies.size
    assert summary["success"] == 0.0 and summary["episodes"] == 2
    assert len(sim_run.frames) >= 4 and sim_run.frames[0].shape == (96, 96, 3)  # episode 0, every 0.5 s
    assert not sim_run.episodes[1].frames


def test_settings_that_cannot_run_are_refused_before_any_node_starts(sim_run, tmp_path):
    for episodes, timeout_s in ((0, 5.0), (2, 0.0), (-1, -1.0)):
        with pytest.raises(ConfigError, match="must be positive"):
            run_policy_on_sim(sim_run.policy, episodes=episodes, timeout_s=timeout_s, log_path=tmp_path / "log")
    assert not (tmp_path / "log").exists()


def test_a_folder_without_a_policy_is_refused_before_any_node_starts(tmp_path):
    with pytest.raises(ConfigError, match="not a policy artifact"):
        run_policy_on_sim(PolicyUnderTest("none", tmp_path), episodes=1, log_path=tmp_path / "log")
    assert not (tmp_path / "log").exists()
    assert cli_main(["sim", "--artifact", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_job_settings_go_into_a_copy_of_the_parameter_file(tmp_path):
    path = params_file_with("policy_node.yaml", {"sampler": "ddpm", "sampler_steps": 100, "enabled": False}, tmp_path)
    text = path.read_text()
    assert "    sampler: ddpm              # ddim | ddpm" in text and "sampler_steps: 100 " in text
    assert "enabled: false" in text
    assert "sampler: ddim" in (package_folder("config") / "policy_node.yaml").read_text()  # the package's unchanged
    with pytest.raises(Exception, match="no single 'no_such_key:' line"):
        params_file_with("policy_node.yaml", {"no_such_key": 1}, tmp_path)


def test_the_goal_compares_sdm_with_the_teachers_best_sampler():
    def summary(label, success, rate):
        return {"label": label, "success": success, "chunk_rate_hz": rate}

    teachers = [summary("teacher-ddim10", 0.90, 3.0), summary("teacher-ddpm100", 0.88, 0.3)]
    result = goal([summary("sdm", 0.86, 30.0), *teachers])
    assert result["teacher_best"] == "teacher-ddim10" and result["success_met"] and result["rate_met"]
    result = goal([summary("sdm", 0.80, 20.0), *teachers])
    assert not result["success_met"] and not result["rate_met"] and result["chunk_rate_ratio"] == pytest.approx(20 / 3)


@pytest.mark.ros
def test_the_shipped_sdm_policy_drives_the_arm_to_the_cube(tmp_path):
    """README command 1's policy, through the whole stack: chunks flow and the hand closes in on the cube."""
    artifact = package_folder("models") / "franka_reach_sdm"
    run = run_policy_on_sim(PolicyUnderTest("sdm", artifact), episodes=2, log_path=tmp_path / "nodes.log",
                            seed=11, timeout_s=8.0, progress=False)
    for episode in run.episodes:
        assert episode.chunks >= 20 and episode.chunk_rate_hz > 5.0, episode
        # from about half a metre away to within a few centimetres of the cube's top face
        assert episode.min_distance_m < 0.25 * episode.start_distance_m, episode
