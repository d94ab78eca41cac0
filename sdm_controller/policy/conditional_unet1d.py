"""1-D temporal UNet with FiLM conditioning (the Diffusion Policy denoiser).

Reads top to bottom: step embedding, conv block, FiLM residual block, the UNet. The action chunk
is treated as a 1-D signal over time with ``action_dim`` channels; the diffusion step and the
observation features modulate every residual block through a per-channel scale and bias.

With ``interval_input`` the UNet also takes a second time, the interval ``t - r`` of a MeanFlow
average velocity u(z, r, t): it is embedded like the step by its own encoder and added to the
step's embedding, so the FiLM layers keep their width. Without it (the default) the module, its
state dict and its output are exactly those of the one-time UNet.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the (integer or real) diffusion step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def time_encoder(dim: int) -> nn.Sequential:
    """Sinusoidal embedding of a time, then an MLP: the diffusion step's (and the interval's) encoder."""
    return nn.Sequential(
        SinusoidalStepEmbedding(dim),
        nn.Linear(dim, 4 * dim),
        nn.Mish(),
        nn.Linear(4 * dim, dim),
    )


class Conv1dBlock(nn.Module):
    """Conv1d → GroupNorm → Mish, length preserving."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_ch),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class FiLMResidualBlock(nn.Module):
    """Two conv blocks; the condition scales and shifts the first one's output per channel."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int, n_groups: int) -> None:
        super().__init__()
        self.conv1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.conv2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)  # each (B, C, 1)
        h = self.conv2(scale * h + bias)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Denoiser ``f(x_t, t, cond) -> (B, horizon, action_dim)``, or ``f(z, t, cond, interval)``.

    ``cond`` is a flat global condition (observation features over the observation steps).
    """

    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        down_dims: tuple[int, ...] = (64, 128, 256),
        step_embed_dim: int = 128,
        kernel_size: int = 5,
        n_groups: int = 8,
        interval_input: bool = False,
    ) -> None:
        super().__init__()
        self.step_encoder = time_encoder(step_embed_dim)
        # Registered only when used: a one-time UNet has exactly the parameters it always had.
        self.interval_encoder = time_encoder(step_embed_dim) if interval_input else None
        cond_dim = step_embed_dim + global_cond_dim
        widths = (action_dim, *down_dims)

        def block(i: int, o: int) -> FiLMResidualBlock:
            return FiLMResidualBlock(i, o, cond_dim, kernel_size, n_groups)

        self.down = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            last = level == len(down_dims) - 1
            down = nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([block(c_in, c_out), block(c_out, c_out), down]))
        mid = down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        # Every up level doubles the length back: the deepest skip is consumed by the mid blocks'
        # output, and the shallowest (full-length) skip is not used, as in Diffusion Policy.
        for c_out, c_in in zip(reversed(down_dims[:-1]), reversed(down_dims[1:]), strict=True):
            up = nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([block(2 * c_in, c_out), block(c_out, c_out), up]))
        self.final = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], action_dim, 1),
        )

    def add_interval_input(self) -> None:
        """Gives the UNet its second time input (a freshly initialised interval encoder)."""
        if self.interval_encoder is None:
            self.interval_encoder = time_encoder(self.step_encoder[0].dim)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        global_cond: torch.Tensor,
        interval: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # sample: (B, H, Da) -> channels-first (B, Da, H) for the temporal convolutions.
        x = sample.transpose(1, 2)
        if timestep.dim() == 0:
            timestep = timestep.expand(x.shape[0])
        if (interval is None) != (self.interval_encoder is None):
            raise ValueError(
                "this UNet takes an interval (built with interval_input=True) and none was given"
                if interval is None else
                "an interval was given to a UNet without interval_input; it would be ignored"
            )
        if self.interval_encoder is None:
            cond = torch.cat([self.step_encoder(timestep), global_cond], dim=-1)
        else:
            if interval.dim() == 0:
                interval = interval.expand(x.shape[0])
            step = self.step_encoder(timestep) + self.interval_encoder(interval)
            cond = torch.cat([step, global_cond], dim=-1)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)  # (B, H, Da)
