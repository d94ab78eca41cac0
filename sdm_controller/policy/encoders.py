"""Observation encoder: per-frame features from every observation stream, one module per kind.

The output is flattened over the observation steps into the UNet's global condition, so its
width is ``n_obs_steps * (state_feature_dim + n_cameras * image_feature_dim)``. A new
observation kind adds its module to ``ENCODERS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.convnet import ConvNetEncoder
from sdm_controller.policy.observation_spec import IMAGE, LOW_DIM, ObservationStream
from sdm_controller.policy.resnet import ResNet18Encoder

IMAGE_ENCODER_CLASSES = {"resnet18": ResNet18Encoder, "convnet": ConvNetEncoder}


def crop_images(images: torch.Tensor, fraction: float, random: bool) -> torch.Tensor:
    """Crop (N, C, H, W) to ``fraction`` of each side: random offsets per image, else centred.

    Random crops in training and the centre crop at inference keep the network's input size the
    same in both, as in Diffusion Policy.
    """
    n, _, h, w = images.shape
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    if ch == h and cw == w:
        return images
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return images[:, :, top : top + ch, left : left + cw]
    tops = torch.randint(0, h - ch + 1, (n,), device=images.device)
    lefts = torch.randint(0, w - cw + 1, (n,), device=images.device)
    rows = (tops[:, None] + torch.arange(ch, device=images.device)[None, :])[:, None, :, None]
    cols = (lefts[:, None] + torch.arange(cw, device=images.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return images[batch, chans, rows, cols]


class LowDimEncoder(nn.Sequential):
    """All low-dim streams of a frame, concatenated, through one MLP (Diffusion Policy's state path)."""

    def __init__(self, config: DiffusionConfig, streams: Sequence[ObservationStream]) -> None:
        self.keys = [s.name for s in streams]
        super().__init__(
            nn.Linear(sum(s.shape[0] for s in streams), config.state_hidden_dim),
            nn.Mish(),
            nn.Linear(config.state_hidden_dim, config.state_feature_dim),
        )
        self.feature_dim = config.state_feature_dim

    def features(self, obs: dict[str, torch.Tensor], crop_fraction: float, training: bool) -> torch.Tensor:
        """(B, To, feature_dim) from normalized (B, To, d) vectors."""
        return self(torch.cat([obs[key] for key in self.keys], dim=-1))


class ImageEncoders(nn.ModuleDict):
    """One image trunk per camera (``image_encoder`` of the config), features side by side."""

    def __init__(self, config: DiffusionConfig, streams: Sequence[ObservationStream]) -> None:
        trunk = IMAGE_ENCODER_CLASSES[config.image_encoder]
        super().__init__({s.name: trunk(config.image_feature_dim) for s in streams})
        self.feature_dim = len(streams) * config.image_feature_dim

    def features(self, obs: dict[str, torch.Tensor], crop_fraction: float, training: bool) -> torch.Tensor:
        """(B, To, feature_dim) from (B, To, 3, H, W) images in [0, 1]; random crops in training."""
        out = []
        for name, encoder in self.items():
            images = obs[name]
            b, to = images.shape[:2]
            flat = crop_images(images.flatten(0, 1), crop_fraction, random=training)
            out.append(encoder(flat).reshape(b, to, -1))
        return torch.cat(out, dim=-1)


@dataclass(frozen=True)
class KindEncoder:
    """How one observation kind is encoded: the module class and its attribute on the encoder
    (the attribute names are those of the first artifacts, so their weights load unchanged)."""

    module: type[nn.Module]
    attribute: str


#: Observation kind -> its encoder: one module over all streams of that kind.
ENCODERS: dict[str, KindEncoder] = {
    LOW_DIM: KindEncoder(LowDimEncoder, "state_mlp"),
    IMAGE: KindEncoder(ImageEncoders, "cameras"),
}


class ObservationEncoder(nn.Module):
    """Prepared observations → flat global condition (B, n_obs_steps * frame_dim).

    Each kind present in the spec has one module (``ENCODERS``); their per-frame features are
    concatenated in kind order and flattened over the observation steps.
    """

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.crop_fraction = config.crop_fraction
        self.kind_attributes: list[str] = []
        frame_dim = 0
        for kind in config.obs.kinds():
            entry = ENCODERS[kind]
            module = entry.module(config, config.obs.of_kind(kind))
            self.add_module(entry.attribute, module)
            self.kind_attributes.append(entry.attribute)
            frame_dim += module.feature_dim
        self.output_dim = config.n_obs_steps * frame_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``obs[name]``: (B, To, d) normalized low-dim, or (B, To, 3, H, W) images in [0, 1]."""
        features = [getattr(self, a).features(obs, self.crop_fraction, self.training) for a in self.kind_attributes]
        return torch.cat(features, dim=-1).flatten(1)
