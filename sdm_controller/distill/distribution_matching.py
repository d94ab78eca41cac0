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

The registered methods (bottom of the file) differ only in their presets and in whether F exists.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.method import DistillMethod, Step, StepLosses, TrainedNetwork, register_method
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import OneStepPolicy
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


class DistributionMatchingMethod(DistillMethod):
    """G trained on the teacher's score against a fake score F that learns G's samples."""

    loss_names = ("generator", "fake", "anchor")
    own_settings = ("anchor", "anchor_weight", "anchor_steps")
    learned_fake: ClassVar[bool] = True  # False: F is the exact score of a point mass at G's sample

    def __init__(
        self, teacher: DiffusionPolicy, generator: OneStepPolicy, config: DistillConfig, distributed: bool
    ) -> None:
        super().__init__(teacher, generator, config, distributed)
        self.core = DistributionMatching(teacher.schedule, config, distributed)
        self.fake = None
        if self.learned_fake:
            self.fake = copy.deepcopy(teacher).requires_grad_(True)
            self.fake.encoder.requires_grad_(config.encoder_trainable)
            self.trained.append(TrainedNetwork("fake", self.fake, config.lr_fake))

    def losses(self, step: Step) -> StepLosses:
        config, fake = self.config, self.fake
        t = step.share(self.core.sample_t(step.global_count, step.rng)).to(step.device)
        with torch.set_grad_enabled(step.train_generator or config.literal):
            a = self.generator.generate(step.z, step.cond_gen)
            if config.sample_clamp:
                a = clamp_straight_through(a)
        cond_fake = fake.condition(step.obs) if (fake is not None and config.encoder_trainable) else step.cond_real
        terms = self.core.terms(
            a,
            real=lambda x, tt, c=step.cond_real: self.teacher.unet(x, tt, c),
            fake=(lambda x, tt, c=cond_fake: fake.unet(x, tt, c)) if fake is not None else None,
            eps=step.eps,
            t=t,
            global_count=step.global_count,
        )
        loss_g, loss_f = terms.loss_generator, terms.loss_fake
        loss_anchor = self._anchor(a, step) if step.train_generator else None
        objective = (loss_f if loss_f is not None else 0.0) + (loss_g if step.train_generator else 0.0)
        if loss_anchor is not None:
            objective = objective + config.anchor_weight * loss_anchor
        return StepLosses(objective, {"generator": loss_g, "fake": loss_f, "anchor": loss_anchor})

    def _anchor(self, a: torch.Tensor, step: Step) -> torch.Tensor | None:
        """Mean squared distance of G's sample from a fixed target, DMD's regression term: the
        teacher's deterministic DDIM sample from the same noise (a paired target that moves G toward
        the teacher's own map), or the demonstration chunk of the same window."""
        if self.config.anchor == "none":
            return None
        if self.config.anchor == "teacher":
            with torch.no_grad():
                teacher = self.teacher
                target = teacher.schedule.sample(lambda x, t: teacher.unet(x, t, step.cond_real), tuple(step.z.shape),
                                                 self.config.anchor_steps, "ddim", device=step.device,
                                                 initial_noise=step.z)
        else:
            target = step.actions
        per_element = (a - target) ** 2
        return reduce_mean(per_element.flatten(), per_element[0].numel() * step.global_count, self.distributed)


@register_method
class SDM(DistributionMatchingMethod):
    """Released SDM: 10-point grid, AdamW, clip 1, frozen encoder, batch-wide score normaliser.

    Fixed here: F's loss detaches the sample, G has an EMA, one call. Changed, with the evidence in
    ``benchmarks/results/sdm_ablation.json``: G learns at 5e-6, a twentieth of F's 1e-4. The score
    difference is only as good as F's model of G's current samples; at the released 5e-5 (half F's
    rate) G moves faster than F can follow, F's denoising loss on G's samples grows to 3-10x the
    teacher's, the DM gradient becomes F's error, and a generator that starts from a good teacher
    collapses before it recovers (assembly, x0 teacher: 0.14 at init, 0.00 after 200 iterations).
    At 5e-6 F tracks G (its loss stays at the teacher's) and success rises monotonically
    (0.22 → 0.64 over 1000 iterations, teacher DDIM-10 0.62). ``tests/test_distill_drift.py``
    shows the same on the 2-D toy. F also learns alone for 50 iterations first (at init F equals
    R, so g is noise). The scores are read at the clamped sample (straight-through): an epsilon
    teacher read as a generator puts 95 % of its outputs outside [-1, 1], where neither score
    means anything (benchmarks/results/probe_epsilon_sdm.json).
    """

    name = "sdm"
    preset = {"fake_warmup_steps": 50, "lr_fake": 1e-4, "lr_generator": 5e-6, "sample_clamp": True}


@register_method
class SDMLiteral(SDM):
    """SDM as released: F's loss does not detach the generator sample, so it trains G too; G at
    the released 5e-5."""

    name = "sdm-literal"
    preset = {**SDM.preset, "literal": True, "lr_generator": 5e-5}


@register_method
class OneDPS(DistributionMatchingMethod):
    """OneDP-S (paper, App. B): Adam beta1 = 0, TTUR 2e-5 / 1e-6, k ~ U[2, 95], sigma^2 weighting,
    no normaliser, trainable encoders, generator timestep 65."""

    name = "onedp-s"
    preset = {
        "optimizer": "adam",
        "betas": (0.0, 0.999),
        "lr_generator": 1e-6,
        "lr_fake": 2e-5,
        "weight_decay": 0.0,
        "t_sampler": "uniform",
        "weighting": "sigma2",
        "score_normalizer": "none",
        "encoder_trainable": True,
        "generator_timestep": 65,
    }


@register_method
class OneDPD(OneDPS):
    """OneDP-D: OneDP-S with zeros for noise and no F (the point-mass score of G's own sample)."""

    name = "onedp-d"
    preset = {**OneDPS.preset, "noise_input": False}
    learned_fake = False
