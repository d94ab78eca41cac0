"""Min-max normalizer to [-1, 1], per key and per dimension.

Statistics live in ``policy.json`` (readable, no pickle); the module holds them as non-persistent
buffers so that they move with the model and are traced into exported graphs, but are not part
of ``weights.safetensors``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sdm_controller.errors import ArtifactError

#: Dimensions whose range is below this are passed through centred instead of divided by ~0
#: (MetaWorld has several constant observation dimensions over a task's demonstrations).
MIN_RANGE = 1e-4


def minmax_stats(array: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension min and max over all leading axes."""
    flat = np.asarray(array, dtype=np.float64).reshape(-1, array.shape[-1])
    return {"min": flat.min(axis=0).tolist(), "max": flat.max(axis=0).tolist()}


class Normalizer(nn.Module):
    """Maps each key's last dimension with ``y = x * scale + offset``."""

    def __init__(self, stats: dict[str, dict[str, list[float]]]) -> None:
        super().__init__()
        self.stats = {key: {"min": list(v["min"]), "max": list(v["max"])} for key, v in stats.items()}
        for key, value in self.stats.items():
            lo = torch.tensor(value["min"], dtype=torch.float32)
            hi = torch.tensor(value["max"], dtype=torch.float32)
            if lo.shape != hi.shape or lo.dim() != 1:
                raise ArtifactError(f"normalizer stats for '{key}' need equal-length 'min' and 'max' lists")
            span = hi - lo
            tiny = span < MIN_RANGE
            scale = torch.where(tiny, torch.ones_like(span), 2.0 / span.clamp_min(MIN_RANGE))
            offset = torch.where(tiny, -(hi + lo) / 2, -1.0 - lo * scale)
            self.register_buffer(f"{key}_scale", scale, persistent=False)
            self.register_buffer(f"{key}_offset", offset, persistent=False)

    def _params(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self.stats:
            raise KeyError(f"normalizer has no statistics for '{key}'; it knows {sorted(self.stats)}")
        return getattr(self, f"{key}_scale"), getattr(self, f"{key}_offset")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._params(key)
        return x * scale + offset

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        scale, offset = self._params(key)
        return (y - offset) / scale
