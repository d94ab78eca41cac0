"""Exponential moving average of model weights with the warm-up of Diffusion Policy.

decay(step) = 1 - (1 + step)^-power, capped at ``max_decay``: early on the average follows the
model closely (a fresh model's weights are poor), later it smooths over many updates. A model
that starts good (a generator initialised from its teacher) wants the opposite: ``warmup=False``
averages at ``max_decay`` from the first update, so the average leaves the start only as fast as
its window allows.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.model``, a frozen copy of the tracked module, updated by ``step``."""

    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999, warmup: bool = True) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power = power
        self.max_decay = max_decay
        self.warmup = warmup
        self.updates = 0

    def decay(self) -> float:
        if not self.warmup:
            return self.max_decay
        return min(self.max_decay, max(0.0, 1.0 - (1.0 + self.updates) ** -self.power))

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        d = self.decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
        self.updates += 1
