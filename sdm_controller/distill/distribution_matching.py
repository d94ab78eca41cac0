"""The distribution-matching core shared by SDM and OneDP (S and D).

One iteration, for a batch of conditions c (see ``../shared/research/algorithms.md`` §6):

    a    = G(z, c)                                    generator sample (normalized x0)
    x_t  = alpha_t a + sigma_t eps,  t ~ sampler
    g    = w(t) (x0_fake(x_t) - x0_real(x_t)) / n     no grad; n: score normaliser
    L_G  = 1/2 mean (a - sg(a - g))^2                 dL_G/da = g / N: a moves toward the real
                                                      score's denoised sample, away from the fake's
    L_F  = mean (F(x_t) - target(a, eps))^2          denoising on generator samples (a detached,
                                                      except in ``literal`` mode as SDM released it)

The networks are passed in as callables so that the same code trains a UNet policy and the 2-D
toy problem of the tests. OneDP-D has no fake network: the score of a point mass at ``a`` is
exact, i.e. x0_fake = a.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.policy.noise_schedule import NoiseSchedule, spaced_timesteps

#: ``net(x_t, t) -> raw output`` in the schedule's parameterisation (conditioning bound in).
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DMTerms:
    """What one distribution-matching iteration produced."""

    loss_generator: torch.Tensor
    loss_fake: torch.Tensor | None
    grad_norm: torch.Tensor  # mean |g| before the surrogate, for logging
    t: torch.Tensor


class TimestepSampler:
    """Noise levels for the DM and DSM terms: SDM's 10-point DDIM grid, or OneDP's uniform range."""

    def __init__(self, config: DistillConfig, num_train_timesteps: int) -> None:
        if config.t_sampler == "grid":
            self.values = torch.tensor(spaced_timesteps(num_train_timesteps, 10))
        else:
            lo, hi = config.t_range
            self.values = torch.arange(lo, min(hi, num_train_timesteps - 1) + 1)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        index = torch.randint(0, len(self.values), (n,), generator=generator)
        return self.values[index]


def world_size(distributed: bool) -> int:
    if not distributed:
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def reduce_mean(value: torch.Tensor, global_count: int, distributed: bool) -> torch.Tensor:
    """Sum over the global batch divided by ``global_count``.

    The value is global (sums all-reduced), the gradient stays local: each rank back-propagates
    its own share, and the trainer sums gradients across ranks.
    """
    total = value.sum()
    if distributed:
        import torch.distributed as dist

        global_total = total.detach().clone()
        dist.all_reduce(global_total)
        total = total + (global_total - total.detach())
    return total / global_count


def clamp_straight_through(a: torch.Tensor) -> torch.Tensor:
    """``a`` clamped to the normalized action range [-1, 1], with the identity's gradient.

    The policy acts on the clamped chunk, so the scores are read there; the straight-through
    gradient still reaches saturated entries (a hard clamp would freeze them for good).
    """
    return a + (a.clamp(-1.0, 1.0) - a).detach()


class DistributionMatching:
    """Computes L_G and L_F for one batch; optimisers and update ratio live in the trainer."""

    def __init__(self, schedule: NoiseSchedule, config: DistillConfig, distributed: bool = False) -> None:
        # Scores are read from unclipped x0 estimates: clipping would bias the score difference.
        self.schedule = NoiseSchedule(schedule.num_train_timesteps, schedule.prediction_type, clip_sample=False)
        self.config = config
        self.distributed = distributed
        self.sample_t = TimestepSampler(config, schedule.num_train_timesteps)

    def score_gradient(
        self, a: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor
    ) -> torch.Tensor:
        """g with the configured weighting and normaliser (no autograd through it)."""
        alpha, sigma = self.schedule.alpha_sigma(t, a.dim())
        # "sdm": the score difference (s_fake - s_real) in x0 form; "sigma2" (OneDP): the
        # sigma^2-weighted eps difference times d x_t / d a = alpha.
        weight = alpha / sigma**2 if self.config.weighting == "sdm" else alpha**2
        g = weight * (x0_fake - x0_real)
        if self.config.score_normalizer != "none":
            magnitude = (x_t - alpha * x0_real).abs() / sigma**2  # |real score|
            if self.config.score_normalizer == "batch":
                count = magnitude.numel() * world_size(self.distributed)
                n = reduce_mean(magnitude.flatten(), count, self.distributed)
            else:
                n = magnitude.flatten(1).mean(dim=1).reshape(-1, *([1] * (a.dim() - 1)))
            g = g / n.clamp_min(1e-8)
        return g

    def terms(
        self,
        a: torch.Tensor,
        real: Denoiser,
        fake: Denoiser | None,
        eps: torch.Tensor,
        t: torch.Tensor,
        global_count: int,
    ) -> DMTerms:
        """L_G and L_F for generator samples ``a``; ``fake`` None means a point-mass fake score.

        ``eps`` and ``t`` are passed in (not drawn here) so that data-parallel ranks can slice
        one global draw and reproduce a single-process run exactly.
        """
        alpha, sigma = self.schedule.alpha_sigma(t, a.dim())
        x_t = alpha * a + sigma * eps
        with torch.no_grad():
            x0_real, _ = self.schedule.to_x0_eps(x_t.detach(), t, real(x_t.detach(), t))
            if fake is None:
                x0_fake = a.detach()
            else:
                x0_fake, _ = self.schedule.to_x0_eps(x_t.detach(), t, fake(x_t.detach(), t))
            g = self.score_gradient(a.detach(), x_t.detach(), t, x0_real, x0_fake)
        # The surrogate's gradient w.r.t. a is exactly g / numel (a - sg(a - g) = g numerically).
        per_element = 0.5 * (a - (a - g).detach()) ** 2
        loss_generator = reduce_mean(per_element.flatten(), per_element[0].numel() * global_count, self.distributed)
        loss_fake = None
        if fake is not None:
            sample = a if self.config.literal else a.detach()
            x_t_fake = x_t if self.config.literal else x_t.detach()
            target = self.schedule.training_target(sample, eps)
            per_element = (fake(x_t_fake, t) - target) ** 2
            loss_fake = reduce_mean(per_element.flatten(), per_element[0].numel() * global_count, self.distributed)
        grad_norm = g.abs().mean()
        return DMTerms(loss_generator=loss_generator, loss_fake=loss_fake, grad_norm=grad_norm, t=t)
