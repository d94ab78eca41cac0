"""Regression: the cheapest one-step policy, trained on the demonstrations without a teacher.

The UNet, called once with a fixed input (zeros for z, a fixed timestep), is fitted to the
normalized demo chunk by mean squared error:

    a   = G(0, t_fix, E(obs))
    L   = mean (a - x0)^2

so it learns the conditional mean of the demonstrated chunks: where the demonstrations disagree
for one observation (two ways around an obstacle) it averages them, which is what a generative
one-step policy is there to avoid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sdm_controller.distill.distribution_matching import reduce_mean
from sdm_controller.distill.method import Step, StepLosses, TeacherFreeMethod, register_method
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec

if TYPE_CHECKING:
    from sdm_controller.distill.configuration_distill import DistillConfig

#: The regressor's constant step input: it has no noise level, any fixed value does.
REGRESSION_TIMESTEP = 0


def regression_loss(prediction: torch.Tensor, actions: torch.Tensor, global_count: int,
                    distributed: bool = False) -> torch.Tensor:
    """Mean squared error over the global batch (sums divided by its element count)."""
    per_element = (prediction - actions) ** 2
    return reduce_mean(per_element.flatten(), per_element[0].numel() * global_count, distributed)


@register_method
class Regression(TeacherFreeMethod):
    """The UNet as a mean predictor of the demo chunk: no noise in, one call out."""

    name = "regression"

    @classmethod
    def generator_spec(cls, teacher: DiffusionPolicy | None, config: DistillConfig) -> GeneratorSpec:
        return GeneratorSpec(timestep=REGRESSION_TIMESTEP, noise_input=False)

    def losses(self, step: Step) -> StepLosses:
        prediction = self.generator.generate(step.z, step.cond_gen)  # z: zeros (no noise input)
        loss = regression_loss(prediction, step.actions, step.global_count, self.distributed)
        return StepLosses(loss, {"generator": loss})
