"""ResNet-18 image trunk with GroupNorm and a spatial-softmax head.

Written here because no CPU torchvision exists for the pinned torch. GroupNorm replaces
BatchNorm (as in Diffusion Policy) so that statistics do not depend on the batch, which matters
for EMA weights and batch-1 inference. Spatial softmax turns each feature map into the expected
(x, y) image position of a learned keypoint, which keeps the "where" that global pooling loses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) feature maps → (B, 2K) expected keypoint coordinates in [-1, 1]."""

    def __init__(self, in_ch: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.proj(x)
        b, k, h, w = maps.shape
        attention = torch.softmax(maps.flatten(2), dim=-1)  # (B, K, H*W)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=attention.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=attention.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1)  # (H*W, 2)
        return (attention @ grid).reshape(b, 2 * k)


class ResNet18Encoder(nn.Module):
    """RGB image (B, 3, H, W) in [0, 1] → (B, feature_dim) with feature_dim = 2 x keypoints."""

    def __init__(self, feature_dim: int = 64) -> None:
        super().__init__()
        if feature_dim % 2:
            raise ValueError(f"feature_dim must be even (x and y per keypoint), got {feature_dim}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            _norm(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = SpatialSoftmax(512, feature_dim // 2)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """The feature map before the keypoint head (the exported graphs pool it themselves)."""
        return self.stages(self.stem((image - self.mean) / 0.5))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(image))
