"""The distillation-method registry: a method added from outside runs through ``distill`` unchanged,
and a name nobody registered is refused in one line before anything loads or trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sdm_controller.bench import distill_benchmark as db
from sdm_controller.cli import main
from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.method import (
    DistillMethod,
    Step,
    StepLosses,
    get_method,
    method_names,
    register_method,
    unregister_method,
)
from sdm_controller.distill.trainer import distill
from sdm_controller.errors import ConfigError
from sdm_controller.runtime.artifact import load_one_step

BUILT_IN = ["sdm", "sdm-literal", "onedp-s", "onedp-d", "cd", "meanflow", "regression"]


class DemoRegression(DistillMethod):
    """G's one-step sample regressed onto the demonstration chunk: no score, no other network."""

    name = "test-demo-regression"
    preset = {"warmup_steps": 0, "lr_generator": 1e-3}

    def losses(self, step: Step) -> StepLosses:
        loss = F.mse_loss(self.generator.generate(step.z, step.cond_gen), step.actions)
        return StepLosses(loss, {"generator": loss})


def test_a_registered_method_distills_through_the_generic_loop(
    tmp_path: Path, tiny_teacher: Path, drawer_dataset: Path
) -> None:
    register_method(DemoRegression)
    try:
        assert method_names() == [*BUILT_IN, DemoRegression.name]
        config = DistillConfig.for_method(DemoRegression.name, steps=3, batch_size=8)
        assert config.lr_generator == 1e-3 and config.warmup_steps == 0  # the preset was applied
        history: dict = {}
        distill(tiny_teacher, drawer_dataset, tmp_path / "g", config, progress=False, history_out=history)
    finally:
        unregister_method(DemoRegression.name)
    assert DemoRegression.name not in method_names()
    with pytest.raises(ConfigError, match="does not exist"):
        DistillConfig.for_method(DemoRegression.name)

    assert set(history) == {"step", "loss_generator", "eval_step", "eval_success"}
    assert len(history["loss_generator"]) == 3 and all(v > 0 for v in history["loss_generator"])
    policy, _ = load_one_step(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "policy.json").read_text())
    assert meta["kind"] == "one-step" and meta["provenance"]["algorithm"] == DemoRegression.name
    assert meta["generator"]["timestep"] == 100  # the default spec: x0 teacher, pure noise in
    actions = policy.predict_action({"state": torch.randn(2, 2, 39)})
    assert actions.shape == (2, policy.config.n_action_steps, 4) and torch.isfinite(actions).all()
    teacher = load_file(str(tiny_teacher / "weights.safetensors"))
    student = load_file(str(tmp_path / "g" / "weights.safetensors"))
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher), "G must have been trained"


def test_an_unregistered_method_is_one_error_line_before_anything_trains(
    tmp_path: Path, tiny_teacher: Path, drawer_dataset: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "x"
    code = main(["distill", "--teacher", str(tiny_teacher), "--dataset", str(drawer_dataset), "--out", str(out),
                 "--method", "sdm-fast", "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: distillation method 'sdm-fast' does not exist")
    assert all(name in err for name in BUILT_IN), err
    assert not out.exists()


def test_the_registry_refuses_a_taken_name_and_a_method_without_a_generator_loss() -> None:
    class Impostor(DemoRegression):
        name = "sdm"

    class Silent(DemoRegression):
        name = "test-silent"
        loss_names = ("fake",)

    with pytest.raises(ConfigError, match="'sdm' is already registered by .*distribution_matching.SDM"):
        register_method(Impostor)
    with pytest.raises(ConfigError, match="must log a 'generator' loss"):
        register_method(Silent)
    with pytest.raises(ConfigError, match="does not exist"):
        unregister_method("test-silent")
    assert method_names() == BUILT_IN and get_method("sdm").__name__ == "SDM"


def test_the_benchmark_runs_registered_methods_only(monkeypatch: pytest.MonkeyPatch) -> None:
    db.check_methods()
    monkeypatch.setitem(db.METHODS, "sample", ["sdm", "sdm-fast"])
    with pytest.raises(ConfigError, match="'sdm-fast' does not exist"):
        db.check_methods()
