"""Distillation on a real (tiny) teacher: call counts, literal vs clean, data-parallel, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.distribution_matching import DistributionMatching, clamp_straight_through
from sdm_controller.distill.trainer import distill
from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.runtime.artifact import load_one_step, load_teacher


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.fixture(scope="module")
def one_step_artifact(tmp_path_factory, tiny_teacher, drawer_dataset) -> Path:
    out = tmp_path_factory.mktemp("one_step") / "sdm"
    config = DistillConfig.for_method("sdm", steps=3, batch_size=8, fake_warmup_steps=0)
    distill(tiny_teacher, drawer_dataset, out, config, progress=False)
    return out


def test_one_step_inference_is_one_network_call(one_step_artifact: Path) -> None:
    policy, _ = load_one_step(one_step_artifact)
    meta = json.loads((one_step_artifact / "policy.json").read_text())
    assert meta["kind"] == "one-step" and meta["provenance"]["algorithm"] == "sdm"
    unet_calls = count_calls(policy.unet)
    encoder_calls = count_calls(policy.encoder)
    actions = policy.predict_action({"state": torch.randn(3, 2, 39)})
    assert actions.shape == (3, policy.config.n_action_steps, 4)
    assert unet_calls[0] == 1 and encoder_calls[0] == 1
    assert torch.isfinite(actions).all()


def test_teacher_sampling_calls_the_unet_once_per_step(tiny_teacher: Path) -> None:
    policy, _ = load_teacher(tiny_teacher)
    calls = count_calls(policy.unet)
    policy.predict_action({"state": torch.randn(1, 2, 39)}, steps=10, method="ddim")
    assert calls[0] == 10


def test_artifact_records_method_and_fraction(one_step_artifact: Path) -> None:
    meta = json.loads((one_step_artifact / "policy.json").read_text())
    provenance = meta["provenance"]
    assert provenance["distill"]["literal"] is False
    assert provenance["steps"] == 3
    assert provenance["steps_fraction_of_teacher"] == pytest.approx(3 / provenance["teacher_steps"])
    assert meta["generator"]["timestep"] == 100  # x0 teacher: pure noise in, one past the range
    assert (one_step_artifact / "distill_curves.png").exists()


def _dm_terms(tiny_teacher: Path, literal: bool):
    teacher, _ = load_teacher(tiny_teacher)
    torch.manual_seed(0)
    fake = load_teacher(tiny_teacher)[0].requires_grad_(True)
    generator = load_teacher(tiny_teacher)[0].requires_grad_(True)
    config = DistillConfig.for_method("sdm-literal" if literal else "sdm")
    dm = DistributionMatching(teacher.schedule, config)
    cond = teacher.condition({"state": torch.randn(4, 2, 39)})
    z = torch.randn(4, 16, 4)
    a = generator.unet(z, torch.full((4,), 99), cond)
    t = torch.tensor([9, 49, 79, 99])
    terms = dm.terms(a, real=lambda x, tt: teacher.unet(x, tt, cond),
                     fake=lambda x, tt: fake.unet(x, tt, cond), eps=torch.randn(4, 16, 4), t=t, global_count=4)
    return terms, generator, fake


def test_literal_and_clean_differ_only_in_the_fake_loss_gradient_on_g(tiny_teacher: Path) -> None:
    clean, gen_clean, fake_clean = _dm_terms(tiny_teacher, literal=False)
    literal, gen_literal, fake_literal = _dm_terms(tiny_teacher, literal=True)
    # Same values: the switch only changes where gradients flow.
    assert torch.equal(clean.loss_generator, literal.loss_generator)
    assert torch.equal(clean.loss_fake, literal.loss_fake)
    clean.loss_fake.backward()
    literal.loss_fake.backward()
    g_clean = [p.grad for p in gen_clean.parameters()]
    g_literal = [p.grad for p in gen_literal.parameters()]
    assert all(g is None for g in g_clean), "clean mode: F's loss must not reach the generator"
    assert any(g is not None and g.abs().sum() > 0 for g in g_literal), "literal: F's loss trains G too"
    # F's own gradient differs only through the target path: both are non-zero.
    assert all(p.grad is not None for p in fake_clean.unet.parameters())
    assert all(p.grad is not None for p in fake_literal.unet.parameters())


def test_data_parallel_two_processes_match_one(tmp_path: Path, tiny_teacher: Path, drawer_dataset: Path) -> None:
    def run(nproc: int, out: Path) -> dict:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "sdm_controller", "distill", "--teacher", str(tiny_teacher), "--dataset", str(drawer_dataset),
               "--out", str(out), "--method", "sdm", "--steps", "3", "--batch-size", "8", "--update-ratio", "1",
               "--fake-warmup-steps", "1"]  # G steps at iterations 2 and 3, so both networks are compared
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads((out / "distill_history.json").read_text())

    one = run(1, tmp_path / "one")
    two = run(2, tmp_path / "two")
    for key in ("loss_generator", "loss_fake"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-9), key


def test_bad_inputs_fail_before_training(tmp_path: Path, tiny_teacher: Path, drawer_dataset: Path,
                                         one_step_artifact: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        DistillConfig.for_method("sdm-fast")
    with pytest.raises(ConfigError, match="lr_generator"):
        DistillConfig.for_method("sdm", lr_generator=-1e-4)
    with pytest.raises(ConfigError, match="steps"):
        DistillConfig.for_method("sdm", steps=0)
    with pytest.raises(ArtifactError, match="teacher artifact is needed"):
        distill(one_step_artifact, drawer_dataset, tmp_path / "x", DistillConfig(steps=1), progress=False)


def test_dataset_spec_mismatch_is_reported(tmp_path: Path, tiny_teacher: Path) -> None:
    from sdm_controller.data.metaworld_demos import collect_metaworld

    images = tmp_path / "img.zarr"
    collect_metaworld("drawer-open", images, num_demos=1, image_size=32, progress=False)
    with pytest.raises(ArtifactError, match="does not match dataset"):
        distill(tiny_teacher, images, tmp_path / "x", DistillConfig(steps=1), progress=False)


def test_cli_rejects_unknown_method(tmp_path: Path, tiny_teacher: Path, drawer_dataset: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sdm_controller", "distill", "--teacher", str(tiny_teacher), "--dataset",
         str(drawer_dataset), "--out", str(tmp_path / "x"), "--method", "sdm-fast"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_fake_warmup_keeps_the_generator_fixed(tmp_path: Path, tiny_teacher: Path, drawer_dataset: Path) -> None:
    from safetensors.torch import load_file

    config = DistillConfig.for_method("sdm", steps=2, batch_size=8, fake_warmup_steps=2)
    distill(tiny_teacher, drawer_dataset, tmp_path / "g", config, progress=False)
    teacher = load_file(str(tiny_teacher / "weights.safetensors"))
    generator = load_file(str(tmp_path / "g" / "weights.safetensors"))
    assert all(torch.equal(teacher[k], generator[k]) for k in teacher), "G must not move while F warms up"


def test_straight_through_clamp_reads_in_range_and_passes_every_gradient() -> None:
    a = torch.tensor([-3.0, -0.5, 0.25, 1.0, 7.0], requires_grad=True)
    out = clamp_straight_through(a)
    assert out.tolist() == [-1.0, -0.5, 0.25, 1.0, 1.0]
    (out * torch.arange(1.0, 6.0)).sum().backward()
    assert a.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # saturated entries still learn
    assert DistillConfig.for_method("sdm").sample_clamp and not DistillConfig.for_method("onedp-s").sample_clamp
