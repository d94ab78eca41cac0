"""Policy artifacts: bit-exact save/load and a readable ArtifactError for every bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import state_window

from sdm_controller.errors import ArtifactError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.runtime.artifact import (
    POLICY_JSON,
    SCHEMA_VERSION,
    WEIGHTS,
    file_sha256,
    load_teacher,
    read_spec,
    save_artifact,
)


@pytest.fixture
def artifact(tiny_teacher, tmp_path) -> Path:
    """A private copy of the session teacher that a test may corrupt."""
    return Path(shutil.copytree(tiny_teacher, tmp_path / "artifact"))


def _read_json(path: Path) -> dict:
    return json.loads((path / POLICY_JSON).read_text())


def _patch_meta(path: Path, **changes) -> dict:
    meta = json.loads((path / POLICY_JSON).read_text())
    meta.update(changes)
    (path / POLICY_JSON).write_text(json.dumps(meta))
    return meta


def test_teacher_artifact_contents(tiny_teacher, drawer_dataset):
    meta = read_spec(tiny_teacher)
    assert meta.schema_version == SCHEMA_VERSION
    assert meta.kind == "teacher"
    assert meta.config.unet_preset == "tiny"
    assert meta.observation.low_dim == {"state": 39}
    assert meta.weights.sha256 == file_sha256(tiny_teacher / WEIGHTS)
    assert set(meta.normalizer) == {"state", "action"}
    assert meta.provenance["steps"] == 5
    assert (tiny_teacher / "training_curve.png").stat().st_size > 0
    history = json.loads((tiny_teacher / "train_history.json").read_text())
    assert history["step"] == [1, 2, 3, 4, 5] and len(history["loss"]) == 5


def test_joint_names_of_the_dataset_reach_the_artifact(tiny_teacher, tmp_path):
    """A dataset recorded from joint states names its joints; the node maps joint_states by them."""
    teacher, meta = load_teacher(tiny_teacher)
    names = {"state": [f"j{i}" for i in range(39)]}
    out = save_artifact(tmp_path / "a", teacher, kind="teacher", provenance={}, state_names=names)
    assert _read_json(out)["observation"]["state_names"] == names
    assert not meta.state_names  # a MetaWorld dataset has none


def test_save_load_gives_bit_identical_actions(tiny_teacher, drawer_episodes, tmp_path):
    policy, meta = load_teacher(tiny_teacher)
    assert not policy.training
    obs = state_window(drawer_episodes)
    resaved = save_artifact(tmp_path / "again", policy, "teacher", provenance={"note": "resave"})
    policy2, meta2 = load_teacher(resaved)
    assert meta2.weights.tensors == meta.weights.tensors
    for method in ("ddim", "ddpm"):
        a = policy.predict_action(obs, steps=4, method=method, generator=torch.Generator().manual_seed(5))
        b = policy2.predict_action(obs, steps=4, method=method, generator=torch.Generator().manual_seed(5))
        assert a.shape == (3, policy.config.n_action_steps, 4)
        assert torch.equal(a, b)
    c = policy.predict_action(obs, steps=4, method="ddim", generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)
    state, state2 = policy.state_dict(), policy2.state_dict()
    assert state.keys() == state2.keys()
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_missing_folder(tmp_path):
    path = tmp_path / "no_such_artifact"
    with pytest.raises(ArtifactError, match="no_such_artifact"):
        load_teacher(path)


def test_folder_without_policy_json(artifact):
    (artifact / POLICY_JSON).unlink()
    with pytest.raises(ArtifactError, match=POLICY_JSON) as info:
        load_teacher(artifact)
    assert str(artifact) in str(info.value)


def test_invalid_json(artifact):
    (artifact / POLICY_JSON).write_text('{"schema_version": 1, "kind": ')
    with pytest.raises(ArtifactError, match="not valid JSON") as info:
        load_teacher(artifact)
    assert str(artifact / POLICY_JSON) in str(info.value)


def test_policy_json_not_an_object(artifact):
    (artifact / POLICY_JSON).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="JSON object") as info:
        load_teacher(artifact)
    assert str(artifact / POLICY_JSON) in str(info.value)


def test_policy_json_missing_weights(artifact):
    meta = json.loads((artifact / POLICY_JSON).read_text())
    del meta["weights"]
    (artifact / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="'weights'") as info:
        load_teacher(artifact)
    assert str(artifact / POLICY_JSON) in str(info.value)


def test_wrong_schema_version(artifact):
    _patch_meta(artifact, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ArtifactError, match="schema_version") as info:
        load_teacher(artifact)
    assert str(artifact / POLICY_JSON) in str(info.value)


def test_unknown_kind(artifact):
    _patch_meta(artifact, kind="mystery")
    with pytest.raises(ArtifactError, match="mystery") as info:
        read_spec(artifact)
    assert str(artifact / POLICY_JSON) in str(info.value)


def test_weights_replaced_by_random_bytes(artifact):
    weights = artifact / WEIGHTS
    weights.write_bytes(os.urandom(weights.stat().st_size))
    with pytest.raises(ArtifactError, match="sha256") as info:
        load_teacher(artifact)
    assert str(weights) in str(info.value)


def test_random_bytes_with_matching_hash_are_not_readable(artifact):
    weights = artifact / WEIGHTS
    weights.write_bytes(os.urandom(4096))
    meta = json.loads((artifact / POLICY_JSON).read_text())
    meta["weights"]["sha256"] = file_sha256(weights)
    (artifact / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="safetensors") as info:
        load_teacher(artifact)
    assert str(weights) in str(info.value)


def test_weights_missing(artifact):
    (artifact / WEIGHTS).unlink()
    with pytest.raises(ArtifactError, match="missing") as info:
        load_teacher(artifact)
    assert str(artifact / WEIGHTS) in str(info.value)


def test_weights_of_another_policy_are_caught_by_shape_check(artifact, tmp_path):
    meta = _read_json(artifact)
    config = DiffusionConfig.from_dict({**meta["policy"], "unet_preset": "small"})
    other = save_artifact(tmp_path / "other", DiffusionPolicy(config, meta["normalizer"]), "teacher", {})
    shutil.copyfile(other / WEIGHTS, artifact / WEIGHTS)
    meta["weights"]["sha256"] = file_sha256(artifact / WEIGHTS)  # the hash check now passes
    (artifact / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"shape of '[\w.]+'") as info:
        load_teacher(artifact)
    message = str(info.value)
    assert str(artifact) in message
    name = message.split("shape of '")[1].split("'")[0]
    assert name in DiffusionPolicy(DiffusionConfig.from_dict(meta["policy"]), meta["normalizer"]).state_dict()


def test_weights_with_missing_tensor(artifact):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(artifact / WEIGHTS))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, str(artifact / WEIGHTS))
    meta = json.loads((artifact / POLICY_JSON).read_text())
    meta["weights"]["sha256"] = file_sha256(artifact / WEIGHTS)
    (artifact / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="missing") as info:
        load_teacher(artifact)
    assert dropped in str(info.value)


class _MarkerOnUnpickle:
    """Unpickling this object calls ``open(marker, "w")``, i.e. creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_file_is_refused_without_unpickling(tmp_path):
    # The bait works: unpickling it really creates the marker ...
    probe_marker = tmp_path / "probe_marker"
    probe = tmp_path / "probe.pt"
    torch.save({"state_dict": _MarkerOnUnpickle(str(probe_marker))}, probe)
    torch.load(probe, weights_only=False)
    assert probe_marker.exists()
    # ... and the loader refuses the same kind of file without touching its contents.
    marker = tmp_path / "marker"
    checkpoint = tmp_path / "teacher.pt"
    torch.save({"state_dict": _MarkerOnUnpickle(str(marker))}, checkpoint)
    for load in (load_teacher, read_spec):
        with pytest.raises(ArtifactError, match="pickle") as info:
            load(checkpoint)
        assert str(checkpoint) in str(info.value)
    assert not marker.exists()


def test_folder_with_only_a_pickle(tmp_path):
    folder = tmp_path / "old_checkpoint"
    folder.mkdir()
    marker = tmp_path / "marker"
    torch.save({"model": _MarkerOnUnpickle(str(marker))}, folder / "model.pt")
    with pytest.raises(ArtifactError, match="pickle") as info:
        load_teacher(folder)
    assert "model.pt" in str(info.value) and str(folder) in str(info.value)
    assert not marker.exists()


def test_load_teacher_refuses_one_step_artifact(artifact):
    _patch_meta(artifact, kind="one-step")
    assert read_spec(artifact).kind == "one-step"  # a valid artifact, only of the wrong kind
    with pytest.raises(ArtifactError, match="one-step") as info:
        load_teacher(artifact)
    assert str(artifact) in str(info.value)


def test_invalid_policy_config_in_json(artifact):
    meta = json.loads((artifact / POLICY_JSON).read_text())
    meta["policy"]["horizon"] = 10
    (artifact / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="horizon"):
        load_teacher(artifact)


def test_save_artifact_rejects_unknown_kind(tiny_teacher, tmp_path):
    policy, _ = load_teacher(tiny_teacher)
    with pytest.raises(ArtifactError, match="student"):
        save_artifact(tmp_path / "x", policy, "student", {})
