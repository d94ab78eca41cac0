"""DDPM noise schedule (squaredcos_cap_v2) and a sampler for any number of steps.

Notation: ``abar_t`` is the cumulative product of (1 - beta), ``x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps``. The network predicts either ``eps`` or ``x0`` ("sample"); both are
converted into each other here so that samplers and distillation losses never branch on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from sdm_controller.errors import ConfigError

SAMPLERS = ("ddpm", "ddim")
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def squaredcos_cap_v2_betas(num_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal, as named and clipped in diffusers."""

    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - abar((i + 1) / num_timesteps) / abar(i / num_timesteps), max_beta) for i in range(num_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def spaced_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps from T-1 down, "trailing" spacing.

    One step evaluates the model at t = T-1 (pure noise in), never at t = 0 as the diffusers
    default "leading" spacing does; 10 steps give 99, 89, ..., 9 for T = 100.
    """
    if not 1 <= steps <= num_train_timesteps:
        raise ConfigError(f"sampler steps must lie in [1, {num_train_timesteps}], got {steps}")
    # Integer-indexed (a float-step arange can overshoot by one entry and end at t = -1).
    grid = np.round(num_train_timesteps - np.arange(steps) * num_train_timesteps / steps).astype(int) - 1
    return [int(t) for t in grid]


class NoiseSchedule:
    """Holds abar_t and converts between noise, sample and model outputs."""

    def __init__(self, num_train_timesteps: int = 100, prediction_type: str = "epsilon", clip_sample: bool = True):
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        betas = squaredcos_cap_v2_betas(num_train_timesteps)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()  # (T,)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar at integer timesteps; t = -1 means "no noise" (abar = 1)."""
        table = torch.cat([torch.ones(1), self.alphas_cumprod]).to(t.device)
        return table[t.long() + 1]

    def alpha_sigma(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) shaped to broadcast against a tensor with ``ndim`` dims."""
        ab = self.abar(t).reshape(-1, *([1] * (ndim - 1)))
        return ab.sqrt(), (1.0 - ab).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t, x0.dim())
        return alpha * x0 + sigma * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise if self.prediction_type == "epsilon" else x0

    def to_x0_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, model_output: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output → (x0 estimate, eps estimate); x0 is clipped when ``clip_sample``."""
        alpha, sigma = self.alpha_sigma(t, x_t.dim())
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x_t - sigma * eps) / alpha
        else:
            x0 = model_output
            eps = (x_t - alpha * x0) / sigma
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        return x0, eps

    @torch.no_grad()
    def sample(
        self,
        denoise: Denoiser,
        shape: tuple[int, ...],
        steps: int,
        method: str = "ddim",
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        initial_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the reverse process from pure noise; ``denoise(x_t, t)`` returns the model output.

        ``initial_noise`` (shape ``shape``) replaces the first draw, so a DDIM sample can be paired
        with the same noise a one-step generator was given.

        ``ddpm`` is ancestral sampling (fixed-small variance) on the spaced grid; ``ddim`` is the
        deterministic DDIM update (eta = 0). Both use the same trailing timestep grid.
        """
        if method not in SAMPLERS:
            raise ConfigError(f"sampler '{method}' is unknown; expected one of {SAMPLERS}")
        timesteps = spaced_timesteps(self.num_train_timesteps, steps)
        if initial_noise is not None:
            x = initial_noise.clone()
        else:
            x = torch.randn(shape, generator=generator, device=device)
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            tt = torch.full((shape[0],), t, device=device, dtype=torch.long)
            x0, eps = self.to_x0_eps(x, tt, denoise(x, tt))
            ab_t = self.abar(torch.tensor(t)).item()
            ab_prev = self.abar(torch.tensor(t_prev)).item()
            if method == "ddim":
                x = math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps
                continue
            # Posterior q(x_prev | x_t, x0) of the spaced chain: beta_t = 1 - abar_t / abar_prev.
            beta = 1.0 - ab_t / ab_prev
            coef_x0 = math.sqrt(ab_prev) * beta / (1.0 - ab_t)
            coef_xt = math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)
            x = coef_x0 * x0 + coef_xt * x
            if t_prev >= 0:
                variance = max(beta * (1.0 - ab_prev) / (1.0 - ab_t), 1e-20)
                x = x + math.sqrt(variance) * torch.randn(shape, generator=generator, device=device)
        return x
