"""The shipped artifacts, written with schema 1 before observation streams existed, still load and act
exactly as they did: ``data/shipped_actions.json`` holds the actions the code before the change
produced (torch backend, 1 thread, engine seed 0) on seeded observations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sdm_controller.errors import ArtifactError
from sdm_controller.policy.observation_spec import IMAGE, LOW_DIM
from sdm_controller.runtime.artifact import POLICY_JSON, SCHEMA_VERSION, load_policy, read_spec, save_artifact
from sdm_controller.runtime.engine import Engine

MODELS = Path(__file__).resolve().parents[1] / "models"
PINNED = json.loads((Path(__file__).parent / "data" / "shipped_actions.json").read_text())


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pinned_observations(engine: Engine, calls: int = 3) -> list[dict[str, np.ndarray]]:
    """The observations the pinned actions were computed on (same generator, same draw order)."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(calls):
        obs = {}
        for spec in engine.inputs:
            if spec.dtype == np.uint8:
                obs[spec.name] = rng.integers(0, 256, spec.shape, dtype=np.uint8)
            else:
                obs[spec.name] = rng.uniform(-0.5, 0.5, spec.shape).astype(np.float32)
        out.append(obs)
    return out


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_artifact_reads_as_schema_1_with_kinds(name):
    spec = read_spec(MODELS / name)
    assert spec.schema_version == 1
    assert [(s.name, s.kind, s.shape) for s in spec.observation.streams] == [
        ("state", LOW_DIM, (8,)),
        ("front", IMAGE, (96, 96, 3)),
    ]
    assert spec.state_names["state"][-1] == "fr3_finger_joint1"
    assert spec.action.space == "joint_position" and len(spec.action.names) == 8


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_artifact_gives_the_pinned_actions(name, one_thread):
    engine = Engine.load(MODELS / name, backend="torch", steps=10, method="ddim", seed=0)
    for obs, expected in zip(pinned_observations(engine), PINNED[name], strict=True):
        np.testing.assert_array_equal(engine(obs), np.asarray(expected, dtype=np.float32))


def test_resaved_as_schema_2_it_acts_the_same(tmp_path, one_thread):
    """Schema 1 in, schema 2 out: the same spec, the same weights, the same actions."""
    name = "franka_reach_sdm"
    policy, old = load_policy(MODELS / name)
    out = save_artifact(tmp_path / name, policy, old.kind, provenance=old.provenance, action=old.action,
                        control_period_s=old.control_period_s, state_names=old.state_names)
    new = read_spec(out)
    assert new.schema_version == SCHEMA_VERSION == 2
    assert "streams" in json.loads((out / POLICY_JSON).read_text())["observation"]
    assert (new.observation, new.state_names, new.action, new.generator) == (
        old.observation, old.state_names, old.action, old.generator)
    assert new.weights.sha256 == old.weights.sha256
    engine = Engine.load(out, backend="torch", seed=0)
    for obs, expected in zip(pinned_observations(engine), PINNED[name], strict=True):
        np.testing.assert_array_equal(engine(obs), np.asarray(expected, dtype=np.float32))


def test_edited_schema_1_observation_is_refused(tmp_path):
    """Schema 1's two copies of the observation spec must agree, as schema 2's do."""
    copy = Path(shutil.copytree(MODELS / "franka_reach_teacher", tmp_path / "teacher"))
    meta = json.loads((copy / POLICY_JSON).read_text())
    meta["observation"]["cameras"]["front"] = [3, 64, 64]
    (copy / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="disagrees with the policy config"):
        read_spec(copy)
