"""Observation encoder: per-frame features from low-dim vectors and camera images.

The output is flattened over the observation steps into the UNet's global condition, so its
width is ``n_obs_steps * (state_feature_dim + n_cameras * image_feature_dim)``.
"""

from __future__ import annotations

import torch
from torch import nn

from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.convnet import ConvNetEncoder
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


class ObservationEncoder(nn.Module):
    """Normalized observations → flat global condition (B, n_obs_steps * frame_dim)."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        spec = config.obs
        self.low_dim_keys = list(spec.low_dim)
        self.camera_names = list(spec.cameras)
        self.crop_fraction = config.crop_fraction
        self.state_mlp = None
        frame_dim = 0
        if self.low_dim_keys:
            self.state_mlp = nn.Sequential(
                nn.Linear(spec.low_dim_total, config.state_hidden_dim),
                nn.Mish(),
                nn.Linear(config.state_hidden_dim, config.state_feature_dim),
            )
            frame_dim += config.state_feature_dim
        encoder = IMAGE_ENCODER_CLASSES[config.image_encoder]
        self.cameras = nn.ModuleDict({name: encoder(config.image_feature_dim) for name in self.camera_names})
        frame_dim += len(self.camera_names) * config.image_feature_dim
        self.output_dim = config.n_obs_steps * frame_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``obs[key]``: (B, To, d) normalized low-dim, or (B, To, 3, H, W) images in [0, 1]."""
        features = []
        if self.state_mlp is not None:
            state = torch.cat([obs[key] for key in self.low_dim_keys], dim=-1)  # (B, To, sum d)
            features.append(self.state_mlp(state))
        for name, encoder in self.cameras.items():
            images = obs[name]
            b, to = images.shape[:2]
            flat = crop_images(images.flatten(0, 1), self.crop_fraction, random=self.training)
            features.append(encoder(flat).reshape(b, to, -1))
        return torch.cat(features, dim=-1).flatten(1)
