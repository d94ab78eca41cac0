"""The command line reports bad input as one ``error:`` line and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = os.environ.copy()  # carries the conftest settings (ROS localhost discovery, EGL)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "sdm_controller", *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line on stderr; returns that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_collect_unknown_task_suggests_close_names(tmp_path):
    out = tmp_path / "x.zarr"
    result = run_cli("collect", "metaworld", "--task", "drawr-open", "--out", out)
    line = assert_user_error(result, "drawr-open", "drawer-open")
    assert "did you mean" in line
    assert not out.exists()


def test_train_missing_dataset(tmp_path):
    out = tmp_path / "t"
    result = run_cli("train", "--dataset", "/nonexistent.zarr", "--out", out)
    assert_user_error(result, "/nonexistent.zarr", "does not exist")
    assert not out.exists()


def test_train_zero_steps(drawer_dataset, tmp_path):
    out = tmp_path / "t"
    result = run_cli("train", "--dataset", drawer_dataset, "--out", out, "--steps", "0")
    assert_user_error(result, "steps must be positive")
    assert not (out / "policy.json").exists()


def test_evaluate_missing_artifact(tmp_path):
    result = run_cli("evaluate", "--artifact", tmp_path / "missing_dir", "--task", "drawer-open")
    assert_user_error(result, "missing_dir", "does not exist")


@pytest.mark.parametrize("sampler", ["foo:3", "ddim:x"])
def test_evaluate_bad_sampler(tiny_teacher, sampler):
    result = run_cli("evaluate", "--artifact", tiny_teacher, "--task", "drawer-open", "--sampler", sampler)
    assert_user_error(result, f"'{sampler}'", "METHOD:STEPS")


def test_shipped_training_yaml_loads():
    from pathlib import Path

    from sdm_controller.training.teacher import TrainConfig

    config = TrainConfig.from_yaml(Path(__file__).parents[1] / "config" / "teacher_train.yaml", steps=7)
    assert config.steps == 7  # command-line overrides win
    assert config.policy["unet_preset"] == "tiny" and config.batch_size == 128


def test_evaluate_takes_a_one_step_artifact(tiny_teacher, tmp_path):
    """What ``distill`` writes, ``evaluate`` runs: one row, named by the method, one call per chunk."""
    import json

    from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
    from sdm_controller.runtime.artifact import load_teacher, save_artifact

    teacher, spec = load_teacher(tiny_teacher)
    generator = OneStepPolicy(teacher.config, spec.normalizer, GeneratorSpec(timestep=100))
    generator.load_state_dict(teacher.state_dict())
    artifact = save_artifact(tmp_path / "student", generator, "one-step", provenance={"algorithm": "sdm"})
    out = tmp_path / "rows.json"
    result = run_cli("evaluate", "--artifact", artifact, "--task", "drawer-open", "--episodes", "2",
                     "--json", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["method"] for row in rows] == ["sdm"] and rows[0]["episodes"] == 2


def test_evaluate_refuses_an_artifact_of_other_observations():
    """The shipped Franka policy sees joints and a camera; MetaWorld gives neither: one line, no rollout."""
    result = run_cli("evaluate", "--artifact", ROOT / "models" / "franka_reach_sdm", "--task", "drawer-open")
    assert_user_error(result, "franka_reach_sdm", "MetaWorld", "drawer-open")


def test_evaluate_refuses_a_corrupt_artifact(tiny_teacher, tmp_path):
    import shutil

    artifact = Path(shutil.copytree(tiny_teacher, tmp_path / "corrupt"))
    weights = artifact / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    result = run_cli("evaluate", "--artifact", artifact, "--task", "drawer-open")
    assert_user_error(result, "weights.safetensors")


@pytest.mark.parametrize("command, option, default", [
    (["train"], "--steps", "1000"),
    (["distill"], "--lr-generator", "5e-05"),
    (["evaluate"], "--episodes", "50"),
    (["collect", "metaworld"], "--num-demos", "10"),
    (["bench", "teacher"], "--jobs", "2"),
    (["sim"], "--episodes", "20"),
])
def test_help_shows_defaults(command, option, default):
    """Every command's --help says what an option is when it is not given (from the configs, too)."""
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps long help lines
    entry = text.split(f" {option} ", 1)[1].split(" --", 1)[0]
    assert f"default: {default}" in entry, entry
