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
