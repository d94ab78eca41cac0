"""The teacher-free one-step baselines, regression and MeanFlow: their objectives on a two-mode toy,
each method through ``distill`` and the CLI into an artifact the engine runs (torch and onnxruntime
agree), and one error line for each setting that cannot work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sdm_controller.cli import main
from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.meanflow import MeanFlow, MeanFlowObjective, one_step, unet_velocity
from sdm_controller.distill.regression import regression_loss
from sdm_controller.distill.trainer import distill
from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.policy.conditional_unet1d import ConditionalUnet1D
from sdm_controller.policy.configuration_diffusion import DiffusionConfig, ObservationSpec
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.runtime.artifact import POLICY_JSON, load_one_step, load_teacher, read_spec
from sdm_controller.runtime.backends.graphs import GeneratorGraph
from sdm_controller.runtime.backends.torch_backend import TorchBackend
from sdm_controller.runtime.engine import Engine
from sdm_controller.runtime.export import export_onnx
from sdm_controller.training.teacher import TrainConfig

METHODS = ("regression", "meanflow")
TOLERANCE = 1e-4  # fp32 torch vs onnxruntime, un-normalized actions (as tests/test_engine.py)


# -- the objectives on a 1-D two-mode toy: actions -1 or +1 with equal probability --------------


class ToyVelocity(nn.Module):
    """u(z, r, t) for 1-D samples: an MLP on (z, t, t - r)."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, t[:, None], (t - r)[:, None]], dim=1))


def two_modes(n: int, rng: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(n, 1, generator=rng) < 0.5, -1.0, 1.0)


def train_toy(loss_of_batch, module: nn.Module, steps: int, lr: float = 3e-3, batch: int = 256) -> None:
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(1)
    for it in range(steps):
        loss = loss_of_batch(two_modes(batch, rng), rng, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        opt.param_groups[0]["lr"] = lr * (1.0 - it / steps)  # anneal so the final samples settle


def test_meanflow_one_step_samples_land_on_both_modes() -> None:
    torch.manual_seed(0)
    objective = MeanFlowObjective(DistillConfig.for_method("meanflow"))
    net = ToyVelocity()

    def loss(x0, rng, n):
        t, r = objective.sample_times(n, rng)
        return objective.loss(net, x0, torch.randn(n, 1, generator=rng), t, r, n).loss

    train_toy(loss, net, steps=1000)
    with torch.no_grad():
        a = one_step(net, torch.randn(4000, 1, generator=torch.Generator().manual_seed(2)))[:, 0]
    shares = [float((a < 0).float().mean()), float((a > 0).float().mean())]
    distance = (a - a.sign()).abs()
    near = float((distance < 0.25).float().mean())
    print(f"\nmeanflow toy: mode shares {shares[0]:.3f} / {shares[1]:.3f}, within 0.25 of a mode {near:.3f}, "
          f"median distance {float(distance.median()):.3f}")
    assert min(shares) >= 0.3, f"a mode is missed: shares {shares}"
    assert near >= 0.8 and float(distance.median()) < 0.1, "the one-step samples do not sit on the modes"


def test_regression_collapses_to_the_mean() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 64), nn.SiLU(), nn.Linear(64, 1))
    zeros = torch.zeros(1, 1)  # the regressor's fixed input, as noise_input=False gives the UNet

    def loss(x0, rng, n):
        return regression_loss(net(zeros).expand(n, 1), x0, n)

    train_toy(loss, net, steps=400)
    with torch.no_grad():
        mean = float(net(zeros))
    print(f"\nregression toy: prediction {mean:+.3f} (the modes are -1 and +1)")
    assert abs(mean) < 0.1


def test_meanflow_target_is_zero_for_the_exact_average_velocity() -> None:
    """For a point mass at c, paths are straight and u(z, r, t) = (z - c) / t exactly: the JVP along
    (v, 0, 1) must make the target equal u. A tangent that missed t (or moved r) would not."""
    objective = MeanFlowObjective(DistillConfig.for_method("meanflow"))
    rng = torch.Generator().manual_seed(0)
    t, r = objective.sample_times(64, rng)
    c = torch.full((64, 3), 0.3)
    eps = torch.randn(64, 3, generator=rng)
    exact = objective.loss(lambda z, rr, tt: (z - 0.3) / tt[:, None], c, eps, t, r, 64)
    assert float(exact.mse) < 1e-10
    biased = objective.loss(lambda z, rr, tt: (z - 0.3) / tt[:, None] + (tt - rr)[:, None], c, eps, t, r, 64)
    assert float(biased.mse) > 1e-3


def test_the_time_sampler_is_mp1s() -> None:
    objective = MeanFlowObjective(DistillConfig.for_method("meanflow"))
    t, r = objective.sample_times(1000, torch.Generator().manual_seed(0))
    assert bool((t >= r).all()) and bool(((r > 0) & (t < 1)).all())
    assert int((t != r).sum()) == 500  # meanflow_ratio 0.5: exactly half the batch has r != t


# -- the two-time UNet: the default network is unchanged, and all three readings of G agree ----


def test_the_interval_input_is_off_by_default_and_adds_only_its_encoder() -> None:
    torch.manual_seed(0)
    plain = ConditionalUnet1D(4, 10, down_dims=(32, 64, 128))
    torch.manual_seed(0)
    two_time = ConditionalUnet1D(4, 10, down_dims=(32, 64, 128), interval_input=True)
    extra = set(two_time.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) < set(two_time.state_dict())
    assert extra and all(k.startswith("interval_encoder.") for k in extra)
    x, t, cond = torch.randn(2, 16, 4), torch.tensor([1.0, 1.0]), torch.randn(2, 10)
    with pytest.raises(ValueError, match="takes an interval"):
        two_time(x, t, cond)
    with pytest.raises(ValueError, match="would be ignored"):
        plain(x, t, cond, t)


def meanflow_policy(seed: int = 0) -> OneStepPolicy:
    torch.manual_seed(seed)
    config = DiffusionConfig(obs=ObservationSpec(low_dim={"state": 39}), unet_preset="tiny")
    stats = {"state": {"min": [-1.0] * 39, "max": [1.0] * 39}, "action": {"min": [-2.0] * 4, "max": [2.0] * 4}}
    spec = MeanFlow.generator_spec(None, DistillConfig.for_method("meanflow"))
    return OneStepPolicy(config, stats, spec).eval()


def test_generate_and_the_export_graph_compute_the_meanflow_jump() -> None:
    policy = meanflow_policy()
    assert policy.generator_spec.interval == 1 and policy.unet.interval_encoder is not None
    z = torch.randn(1, 16, 4)
    with torch.no_grad():
        cond = policy.condition({"state": torch.randn(1, 2, 39)})
        reference = one_step(unet_velocity(policy, cond), z)  # z - u(z, r = 0, t = 1), as trained
        assert torch.equal(policy.generate(z, cond), reference)
        torch.testing.assert_close(GeneratorGraph(policy).eval()(z, cond), reference, rtol=0, atol=1e-6)


def test_a_generator_interval_needs_a_sample_reading() -> None:
    config = DiffusionConfig(obs=ObservationSpec(low_dim={"state": 39}), unet_preset="tiny",
                             prediction_type="epsilon")
    stats = {"state": {"min": [-1.0] * 39, "max": [1.0] * 39}, "action": {"min": [-1.0] * 4, "max": [1.0] * 4}}
    with pytest.raises(ConfigError, match="prediction_type must be 'sample'"):
        OneStepPolicy(config, stats, GeneratorSpec(timestep=1, interval=1))


# -- each method through distill() and the CLI, into an artifact the engine runs ---------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, drawer_dataset) -> dict[str, Path]:
    """Both methods, 3 iterations on the drawer demos with the tiny UNet, exported to ONNX."""
    root = tmp_path_factory.mktemp("baselines")
    out = {}
    for method in METHODS:
        config = DistillConfig.for_method(method, steps=3, batch_size=8, policy={"unet_preset": "tiny"})
        distill(None, drawer_dataset, root / method, config, progress=False)
        export_onnx(root / method, verify=False)  # the parity test below is the end-to-end check
        out[method] = root / method
    return out


def test_the_budget_is_a_teachers() -> None:
    teacher = TrainConfig()
    for method in METHODS:
        config = DistillConfig.for_method(method)
        assert (config.steps, config.batch_size, config.lr_generator) == (teacher.steps, teacher.batch_size,
                                                                           teacher.lr)
        assert (config.optimizer, config.warmup_steps, config.lr_schedule) == ("adamw", teacher.warmup_steps,
                                                                                "cosine")
        assert config.encoder_trainable and config.grad_clip == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_the_artifact_is_a_one_step_policy_with_a_teachers_normalizer(method, artifacts, tiny_teacher) -> None:
    path = artifacts[method]
    policy, spec = load_one_step(path)
    meta = json.loads((path / POLICY_JSON).read_text())
    assert spec.kind == "one-step" and spec.config.unet_preset == "tiny"
    provenance = spec.provenance
    assert provenance["algorithm"] == method and provenance["steps"] == 3 and provenance["seed"] == 0
    assert provenance["teacher"] is None and provenance["train_seconds"] >= 0
    teacher, teacher_spec = load_teacher(tiny_teacher)  # trained on the same dataset
    assert provenance["dataset_hash"] == teacher_spec.provenance["dataset_hash"]
    assert spec.normalizer == teacher_spec.normalizer
    assert (spec.action, spec.state_names, spec.control_period_s) == (
        teacher_spec.action, teacher_spec.state_names, teacher_spec.control_period_s)
    interval_tensors = [k for k in load_file(str(path / "weights.safetensors")) if ".interval_encoder." in k]
    if method == "meanflow":
        assert meta["generator"] == {"timestep": 1, "noise_input": True, "skip_scale": 1.0, "out_scale": -1.0,
                                     "interval": 1}
        assert interval_tensors
    else:  # a one-time generator's policy.json is what every earlier one-step artifact wrote
        assert meta["generator"] == {"timestep": 0, "noise_input": False, "skip_scale": 0.0, "out_scale": 1.0}
        assert not interval_tensors
    actions = policy.predict_action({"state": torch.randn(2, 2, 39)})
    assert actions.shape == (2, 8, 4) and torch.isfinite(actions).all()


@pytest.mark.parametrize("method", METHODS)
def test_torch_and_onnxruntime_agree(method, artifacts) -> None:
    path = artifacts[method]
    policy, spec = load_one_step(path)
    rng = np.random.default_rng(3)
    obs = {"state": rng.uniform(-0.5, 0.5, (2, 39)).astype(np.float32)}
    out = {}
    for backend in ("torch", "onnxruntime"):
        engine = Engine.load(path, backend=backend, seed=7)
        assert engine.backend_name == backend
        out[backend] = engine(obs)
    diff = float(np.abs(out["torch"] - out["onnxruntime"]).max())
    print(f"\n{method}: max |torch - onnxruntime| = {diff:.2e}")
    assert diff <= TOLERANCE
    engine = Engine(TorchBackend(policy, "one-step", torch.device("cpu")), spec, seed=7)
    reference = policy.predict_action({"state": torch.from_numpy(obs["state"])[None]},
                                      generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(engine(obs), reference[0].numpy(), atol=1e-6, rtol=0)


def test_a_seeded_run_is_reproducible(tmp_path, drawer_dataset) -> None:
    config = DistillConfig.for_method("meanflow", steps=2, batch_size=8, policy={"unet_preset": "tiny"}, seed=3)
    for name in ("a", "b"):
        distill(None, drawer_dataset, tmp_path / name, config, progress=False)
    a, b = (load_file(str(tmp_path / n / "weights.safetensors")) for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", METHODS)
def test_the_cli_trains_without_a_teacher(method, tmp_path, drawer_dataset, capsys) -> None:
    out = tmp_path / method
    code = main(["distill", "--method", method, "--dataset", str(drawer_dataset), "--out", str(out),
                 "--steps", "2", "--batch-size", "8", "--unet", "tiny"])
    assert code == 0, capsys.readouterr().err
    assert f"wrote one-step artifact {out} ({method}, 2 steps" in capsys.readouterr().out
    policy, spec = load_one_step(out)
    assert spec.provenance["algorithm"] == method and spec.config.unet_preset == "tiny"


# -- bad input: one error line each, before anything trains ------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "regression-fast"], "distillation method 'regression-fast' does not exist"),
        (["--method", "meanflow", "--meanflow-ratio", "1.5"], "meanflow_ratio (the share of samples with r != t) "
                                                              "must lie in [0, 1], got 1.5"),
        (["--method", "regression", "--steps", "0"], "steps must be positive, got 0"),
        (["--method", "meanflow", "--update-ratio", "1"], "setting 'update_ratio' is one of distillation from a "
                                                          "teacher; method 'meanflow' trains without a teacher"),
        (["--method", "regression", "--meanflow-ratio", "0.5"], "setting 'meanflow_ratio' is read only by method "
                                                                "meanflow; method 'regression' does not read it"),
        (["--method", "regression", "--teacher", "TEACHER"], "method 'regression' trains on the demonstrations "
                                                             "without a teacher; drop the teacher"),
        (["--method", "sdm"], "method 'sdm' distils a teacher; give the teacher artifact (--teacher)"),
        (["--method", "sdm", "--teacher", "TEACHER", "--unet", "tiny"], "setting 'policy' is read only by method "
                                                                        "meanflow / regression; method 'sdm'"),
    ],
)
def test_bad_input_is_one_error_line(args, expected, tmp_path, tiny_teacher, drawer_dataset, capsys) -> None:
    out = tmp_path / "out"
    args = [str(tiny_teacher) if a == "TEACHER" else a for a in args]
    code = main(["distill", "--dataset", str(drawer_dataset), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("method", "overrides", "expected"),
    [
        ("meanflow", {"meanflow_ratio": -0.1}, "meanflow_ratio .* must lie in \\[0, 1\\], got -0.1"),
        ("meanflow", {"meanflow_t_sampler": "beta"}, "meanflow_t_sampler 'beta' is unknown"),
        ("meanflow", {"meanflow_t_std": 0.0}, "meanflow_t_std must be positive"),
        ("meanflow", {"encoder_trainable": False}, "encoder_trainable must be True"),
        ("regression", {"lr_fake": 1e-3}, "setting 'lr_fake' is one of distillation from a teacher"),
        ("regression", {"policy": {"unet_preset": "huge"}}, "policy overrides .* invalid: unet_preset 'huge'"),
        ("meanflow", {"policy": {"prediction_type": "epsilon"}}, "policy.prediction_type cannot be set"),
        ("meanflow", {"steps": -1}, "steps must be positive"),
    ],
)
def test_settings_that_cannot_work_are_refused(method, overrides, expected) -> None:
    with pytest.raises(ConfigError, match=expected):
        DistillConfig.for_method(method, **overrides)


def test_constructed_configs_are_checked_by_value() -> None:
    """Without for_method the caller's intent is unknown: a teacher setting at its default passes."""
    assert DistillConfig(method="regression", encoder_trainable=True, update_ratio=1).update_ratio == 1
    with pytest.raises(ConfigError, match="setting 'cd_ema'"):
        DistillConfig(method="regression", encoder_trainable=True, cd_ema=0.5)


def test_a_meanflow_artifact_without_its_interval_is_refused(artifacts, tmp_path) -> None:
    """A MeanFlow network read as a one-time UNet: its interval encoder has nowhere to go."""
    copy = Path(shutil.copytree(artifacts["meanflow"], tmp_path / "edited"))
    meta = json.loads((copy / POLICY_JSON).read_text())
    del meta["generator"]["interval"]
    (copy / POLICY_JSON).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="unexpected \\['unet.interval_encoder"):
        load_one_step(copy)
    assert read_spec(copy).generator.interval is None
