"""Consistency distillation (LCM / ManiCM style), the baseline with a learned ODE shortcut.

On the teacher's 10-point DDIM grid t_10 > ... > t_1 (99, 89, ..., 9 for T = 100): noise a demo
chunk to x_{t_n}, take one teacher DDIM step to x_{t_{n-1}} (the correct update
x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps, not ManiCM's x0-as-eps slip), and train the
online network so that f(x_{t_n}, t_n) matches the EMA target f^-(x_{t_{n-1}}, t_{n-1}); below the
grid the target is the clean estimate itself. f(x, t) = c_skip(t) x + c_out(t) x0(x, t), with
f(x, 0) = x. One-step inference is f(z, t_10).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from sdm_controller.distill.distribution_matching import reduce_mean
from sdm_controller.distill.method import DistillMethod, Step, StepLosses, register_method
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.policy.noise_schedule import NoiseSchedule, spaced_timesteps

if TYPE_CHECKING:
    from sdm_controller.distill.configuration_distill import DistillConfig

TIMESTEP_SCALING = 10.0  # LCM's scaling of the timestep inside c_skip / c_out


def boundary_scalings(t: torch.Tensor | int, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) at t; c_skip(0) = 1 and c_out(0) = 0 make f(x, 0) = x."""
    scaled = torch.as_tensor(t, dtype=torch.float32) * TIMESTEP_SCALING
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / torch.sqrt(scaled**2 + sigma_data**2)
    return c_skip, c_out


class ConsistencyDistillation:
    """The CD loss for a batch of clean chunks; the trainer owns networks and optimisers."""

    def __init__(self, schedule: NoiseSchedule, sigma_data: float, distributed: bool = False) -> None:
        self.schedule = NoiseSchedule(schedule.num_train_timesteps, schedule.prediction_type, clip_sample=False)
        self.sigma_data = sigma_data
        self.distributed = distributed
        self.grid = spaced_timesteps(schedule.num_train_timesteps, 10)

    @property
    def top_timestep(self) -> int:
        return self.grid[0]

    def consistency(self, unet_out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0, _ = self.schedule.to_x0_eps(x, t, unet_out)
        c_skip, c_out = boundary_scalings(t, self.sigma_data)
        shape = (-1, *([1] * (x.dim() - 1)))
        return c_skip.reshape(shape).to(x) * x + c_out.reshape(shape).to(x) * x0

    def loss(self, x0_data, eps, index, teacher, online, target, global_count: int) -> torch.Tensor:
        """``teacher/online/target(x, t) -> raw UNet output``; ``index`` picks the grid point per sample."""
        grid = torch.tensor(self.grid + [-1])
        t = grid[index]
        t_prev = grid[index + 1]
        x_t = self.schedule.add_noise(x0_data, eps, t)
        with torch.no_grad():
            x0_teacher, eps_teacher = self.schedule.to_x0_eps(x_t, t, teacher(x_t, t))
            ab_prev = self.schedule.abar(t_prev).reshape(-1, *([1] * (x_t.dim() - 1)))
            x_prev = ab_prev.sqrt() * x0_teacher + (1 - ab_prev).sqrt() * eps_teacher
            last = (t_prev < 0).reshape(-1, *([1] * (x_t.dim() - 1)))
            t_safe = t_prev.clamp_min(0)
            y = torch.where(last, x_prev, self.consistency(target(x_prev, t_safe), x_prev, t_safe))
        pred = self.consistency(online(x_t, t), x_t, t)
        per_element = F.mse_loss(pred, y, reduction="none")
        return reduce_mean(per_element.flatten(), per_element[0].numel() * global_count, self.distributed)

    def generator_scalings(self) -> tuple[float, float]:
        c_skip, c_out = boundary_scalings(self.top_timestep, self.sigma_data)
        return float(c_skip), float(c_out)


def ema_update(target: torch.nn.Module, online: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
            p_t.mul_(decay).add_(p_o, alpha=1.0 - decay)




@register_method
class CD(DistillMethod):
    """ManiCM-style LCM distillation (AdamW 5e-5, clip 1, frozen encoder): G is the online network,
    trained on demo chunks against an EMA target; no network besides G is optimised."""

    name = "cd"
    loss_names = ("generator", "fake")  # no F: "fake" stays null, so all built-in histories have the same columns

    def __init__(
        self, teacher: DiffusionPolicy, generator: OneStepPolicy, config: DistillConfig, distributed: bool
    ) -> None:
        super().__init__(teacher, generator, config, distributed)
        self.core = ConsistencyDistillation(teacher.schedule, config.cd_sigma_data, distributed)
        self.target = copy.deepcopy(generator).requires_grad_(False)

    @classmethod
    def generator_spec(cls, teacher: DiffusionPolicy, config: DistillConfig) -> GeneratorSpec:
        """f(z, t_10): the top of the grid with its consistency scalings (``generator_timestep`` is not read)."""
        core = ConsistencyDistillation(teacher.schedule, config.cd_sigma_data)
        skip_scale, out_scale = core.generator_scalings()
        return GeneratorSpec(core.top_timestep, config.noise_input, skip_scale, out_scale)

    def losses(self, step: Step) -> StepLosses:
        index = step.share(torch.randint(0, len(self.core.grid), (step.global_count,), generator=step.rng))
        loss = self.core.loss(
            step.actions, step.eps, index,
            teacher=lambda x, t, c=step.cond_real: self.teacher.unet(x, t, c),
            online=lambda x, t, c=step.cond_gen: self.generator.unet(x, t, c),
            target=lambda x, t, c=step.cond_real: self.target.unet(x, t, c),
            global_count=step.global_count,
        )
        return StepLosses(loss, {"generator": loss})

    def after_generator_step(self) -> None:
        ema_update(self.target, self.generator, self.config.cd_ema)
