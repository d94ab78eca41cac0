"""MeanFlow as MP1 trains it on action chunks: a one-step policy learned without a teacher.

On the flow-matching path between a demo chunk x0 (t = 0) and noise eps (t = 1),

    z_t = (1 - t) x0 + t eps,            v = eps - x0   (the path's velocity dz_t/dt),

the network learns the average velocity over [r, t], u(z_t, r, t) = 1/(t - r) int_r^t v ds, from the
MeanFlow identity u = v - (t - r) du/dt, whose total derivative follows the path:

    du/dt = JVP of u at (z_t, r, t) along (v, 0, 1)        (``torch.func.jvp``: one forward pass)
    u_tgt = sg(v - (t - r) du/dt)
    L     = mean_b sg(w_b) e_b,   e_b = mean over the chunk of (u - u_tgt)^2,
            w_b = 1 / (e_b + c)^p,  c = 1e-3,  p = 0.5      (MP1's adaptive weighting, gamma = 0.5)

(t, r) are the larger and the smaller of two draws from a logit-normal (location -0.4, scale 1;
MP1's) or a uniform; a share ``1 - meanflow_ratio`` of the batch (MP1: half) gets r = t, where the
target is v itself (plain flow matching). One step: a = z - u(z, r = 0, t = 1), z ~ N(0, I).

The UNet sees both times: t and the interval t - r go, unscaled as in MP1, into its step
embedding and its interval embedding (``ConditionalUnet1D``'s interval input; MP1 embeds t and r).
Read in the teachers' step units instead (100 t), the sinusoids make u rough in t and du/dt large:
on a 1-D two-mode toy with the UNet's own time encoders, 1000 iterations put 42-57 % of the
one-step samples within 0.25 of a mode at 100 t, and 80-92 % unscaled (learning rate 3e-3 / 1e-3).

Left out of MP1's recipe: its target mix v_hat = 2 v - u(z_t, t, t) (a guidance scale of 2 with no
unconditional branch); the target here is MeanFlow's own, v.

The objective takes the network as a callable ``u(z, r, t)`` so that the same code trains the
policy's UNet and the 1-D toy of the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sdm_controller.distill.distribution_matching import reduce_mean
from sdm_controller.distill.method import Step, StepLosses, TeacherFreeMethod, register_method
from sdm_controller.errors import ConfigError
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy

if TYPE_CHECKING:
    from sdm_controller.distill.configuration_distill import DistillConfig

#: ``u(z, r, t) -> average velocity`` (conditioning bound in); r and t are (B,) in [0, 1].
AverageVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: The one-step call's time and interval: from t = 1 (noise) to r = 0 (data).
ONE_STEP_TIME = 1
WEIGHT_OFFSET = 1e-3  # c of the adaptive weight
T_SAMPLERS = ("logit-normal", "uniform")


@dataclass
class MeanFlowTerms:
    loss: torch.Tensor  # the adaptively weighted loss that is back-propagated
    mse: torch.Tensor  # the unweighted mean squared error to the target, for the log


class MeanFlowObjective:
    """The (t, r) sampler and the loss of one batch; networks and optimisers live elsewhere."""

    def __init__(self, config: DistillConfig, distributed: bool = False) -> None:
        self.ratio = config.meanflow_ratio
        self.sampler = config.meanflow_t_sampler
        self.mean, self.std = config.meanflow_t_mean, config.meanflow_t_std
        self.power = config.meanflow_power
        self.distributed = distributed

    def sample_times(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, r), each (n,): t >= r, and r = t for ``n - round(ratio n)`` samples picked at random."""
        if self.sampler == "uniform":
            draws = torch.rand(n, 2, generator=generator)
        else:
            draws = torch.sigmoid(torch.randn(n, 2, generator=generator) * self.std + self.mean)
        t, r = draws.max(dim=1).values, draws.min(dim=1).values
        same = torch.randperm(n, generator=generator)[: n - round(self.ratio * n)]
        r[same] = t[same]
        return t, r

    def loss(
        self,
        velocity: AverageVelocity,
        x0: torch.Tensor,
        eps: torch.Tensor,
        t: torch.Tensor,
        r: torch.Tensor,
        global_count: int,
    ) -> MeanFlowTerms:
        """MeanFlow's loss for clean samples ``x0`` (B, ...) with noise ``eps`` at times (t, r), each (B,)."""
        shape = (-1, *([1] * (x0.dim() - 1)))
        t_, r_ = t.reshape(shape), r.reshape(shape)
        z_t = (1 - t_) * x0 + t_ * eps
        v = eps - x0
        u, du_dt = torch.func.jvp(velocity, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
        target = (v - (t_ - r_) * du_dt).detach()
        error = (u - target).pow(2).flatten(1).mean(dim=1)  # (B,)
        weight = (error.detach() + WEIGHT_OFFSET).pow(-self.power)
        return MeanFlowTerms(
            loss=reduce_mean(weight * error, global_count, self.distributed),
            mse=reduce_mean(error.detach(), global_count, self.distributed),
        )


def one_step(velocity: AverageVelocity, z: torch.Tensor) -> torch.Tensor:
    """The jump from noise to data: a = z - u(z, r = 0, t = 1)."""
    ones = torch.ones(z.shape[0], device=z.device)
    return z - velocity(z, torch.zeros_like(ones), ones)


def unet_velocity(generator: OneStepPolicy, cond: torch.Tensor) -> AverageVelocity:
    """u(z, r, t) read from G's two-time UNet under the conditioning ``cond``."""
    return lambda z, r, t: generator.unet(z, t, cond, t - r)


@register_method
class MeanFlow(TeacherFreeMethod):
    """MP1's one-step MeanFlow policy on G's UNet (with its interval input), from the demonstrations."""

    name = "meanflow"
    loss_names = ("generator", "velocity_mse")
    own_settings = (
        *TeacherFreeMethod.own_settings,
        "meanflow_ratio", "meanflow_t_sampler", "meanflow_t_mean", "meanflow_t_std", "meanflow_power",
    )

    @classmethod
    def check_config(cls, config: DistillConfig) -> None:
        super().check_config(config)
        if not 0.0 <= config.meanflow_ratio <= 1.0:
            raise ConfigError(f"meanflow_ratio (the share of samples with r != t) must lie in [0, 1], got "
                              f"{config.meanflow_ratio}")
        if config.meanflow_t_sampler not in T_SAMPLERS:
            raise ConfigError(f"meanflow_t_sampler '{config.meanflow_t_sampler}' is unknown; expected one of "
                              f"{list(T_SAMPLERS)}")
        if not (math.isfinite(config.meanflow_t_std) and config.meanflow_t_std > 0):
            raise ConfigError(f"meanflow_t_std must be positive, got {config.meanflow_t_std}")
        if not math.isfinite(config.meanflow_t_mean):
            raise ConfigError(f"meanflow_t_mean must be a finite number, got {config.meanflow_t_mean}")
        if not (math.isfinite(config.meanflow_power) and config.meanflow_power >= 0):
            raise ConfigError(f"meanflow_power must be >= 0, got {config.meanflow_power}")

    @classmethod
    def generator_spec(cls, teacher: DiffusionPolicy | None, config: DistillConfig) -> GeneratorSpec:
        """z - u(z, r = 0, t = 1): noise in, time and interval 1, scalings 1 and -1."""
        return GeneratorSpec(timestep=ONE_STEP_TIME, noise_input=True, skip_scale=1.0, out_scale=-1.0,
                             interval=ONE_STEP_TIME)

    def __init__(
        self, teacher: DiffusionPolicy | None, generator: OneStepPolicy, config: DistillConfig, distributed: bool
    ) -> None:
        super().__init__(teacher, generator, config, distributed)
        self.objective = MeanFlowObjective(config, distributed)

    def losses(self, step: Step) -> StepLosses:
        t, r = self.objective.sample_times(step.global_count, step.rng)
        t, r = step.share(t).to(step.device), step.share(r).to(step.device)
        terms = self.objective.loss(unet_velocity(self.generator, step.cond_gen), step.actions, step.eps, t, r,
                                    step.global_count)
        return StepLosses(terms.loss, {"generator": terms.loss, "velocity_mse": terms.mse})
