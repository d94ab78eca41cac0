"""Configuration of the teacher diffusion policy: one dataclass, every field with a default.

The same config travels inside a policy artifact (``policy.json``), so a loaded policy is rebuilt
from exactly the settings it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sdm_controller.errors import ConfigError
from sdm_controller.policy.observation_spec import ObservationSpec

#: UNet channel widths per level. ``tiny`` and ``small`` fit a 2-core CPU (``tiny`` trains 2.3x
#: faster and is what the CPU benchmarks use), ``dp`` is Diffusion Policy's image UNet scaled down
#: one level, ``dp3`` is the size used by Diffusion Policy / DP3 / SDM.
UNET_PRESETS: dict[str, tuple[int, ...]] = {
    "tiny": (32, 64, 128),
    "small": (64, 128, 256),
    "dp": (256, 512, 1024),
    "dp3": (512, 1024, 2048),
}
PREDICTION_TYPES = ("epsilon", "sample")
IMAGE_ENCODERS = ("resnet18", "convnet")


@dataclass
class DiffusionConfig:
    """Every hyperparameter of the teacher policy (network, diffusion, horizons)."""

    obs: ObservationSpec = field(default_factory=lambda: ObservationSpec(low_dim={"state": 39}))
    action_dim: int = 4  # length of one action vector
    horizon: int = 16  # actions predicted per chunk
    n_obs_steps: int = 2  # observation frames the policy is conditioned on
    n_action_steps: int = 8  # actions executed from each chunk, starting at the newest observation
    unet_preset: str = "small"  # key of UNET_PRESETS
    kernel_size: int = 5  # temporal convolution kernel
    n_groups: int = 8  # GroupNorm groups in the UNet
    step_embed_dim: int = 128  # sinusoidal diffusion-step embedding width
    prediction_type: str = "sample"  # "epsilon" (DP) or "sample" (x0, DP3/SDM)
    num_train_timesteps: int = 100  # T of the DDPM schedule
    clip_sample: bool = True  # clip x0 predictions to the normalized range [-1, 1]
    state_hidden_dim: int = 256  # hidden width of the low-dim observation MLP
    state_feature_dim: int = 64  # per-frame feature from the low-dim MLP
    image_feature_dim: int = 64  # per-camera feature (2 x spatial-softmax keypoints)
    image_encoder: str = "resnet18"  # "resnet18" (Diffusion Policy's, GroupNorm) or "convnet" (small, for CPUs)
    crop_fraction: float = 0.9  # random crop (training) / centre crop (inference) side fraction

    def __post_init__(self) -> None:
        if not isinstance(self.obs, ObservationSpec):
            self.obs = ObservationSpec.from_dict(self.obs)
        if self.unet_preset not in UNET_PRESETS:
            raise ConfigError(f"unet_preset '{self.unet_preset}' is unknown; expected one of {sorted(UNET_PRESETS)}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"prediction_type '{self.prediction_type}' is unknown; expected one of {PREDICTION_TYPES}"
            )
        for name in ("action_dim", "horizon", "n_obs_steps", "n_action_steps", "num_train_timesteps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.horizon % 4 != 0:
            raise ConfigError(f"horizon must be a multiple of 4 (the UNet halves it twice), got {self.horizon}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ConfigError(
                f"n_obs_steps - 1 + n_action_steps = {self.n_obs_steps - 1 + self.n_action_steps} exceeds "
                f"horizon {self.horizon}: the executed actions must lie inside the predicted chunk"
            )
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ConfigError(f"image_encoder '{self.image_encoder}' is unknown; expected one of {IMAGE_ENCODERS}")
        if not 0.5 <= self.crop_fraction <= 1.0:
            raise ConfigError(f"crop_fraction must lie in [0.5, 1], got {self.crop_fraction}")

    @property
    def down_dims(self) -> tuple[int, ...]:
        return UNET_PRESETS[self.unet_preset]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "obs": self.obs.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown policy config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**data)
