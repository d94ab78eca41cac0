"""The teacher: a DDPM diffusion policy over action chunks, conditioned on observations.

Observation windows come in raw units (low-dim float, images uint8 HWC or float CHW in [0, 1]);
the policy normalizes them, encodes them into one global condition, and denoises a chunk of
``horizon`` actions. ``predict_action`` returns the ``n_action_steps`` actions that start at the
newest observation, in raw units.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sdm_controller.policy.conditional_unet1d import ConditionalUnet1D
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.encoders import ObservationEncoder
from sdm_controller.policy.noise_schedule import NoiseSchedule
from sdm_controller.policy.normalizer import Normalizer
from sdm_controller.policy.observation_spec import IMAGE, LOW_DIM

ACTION_KEY = "action"


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) → float (..., 3, H, W) in [0, 1]; float CHW passes through."""
    if images.dtype == torch.uint8:
        return images.movedim(-1, -3).float() / 255.0
    return images


def normalize_low_dim(normalizer: Normalizer, name: str, values: torch.Tensor) -> torch.Tensor:
    """Raw low-dim vectors → [-1, 1] with the stream's own min-max statistics."""
    return normalizer.normalize(name, values.float())


def prepare_image(normalizer: Normalizer, name: str, images: torch.Tensor) -> torch.Tensor:
    """Raw uint8 HWC frames → float CHW in [0, 1] (images have no statistics)."""
    return images_to_float(images)


#: Observation kind -> how a raw stream becomes the encoder's input (normalizer, name, tensor).
PREPARE: dict[str, Callable[[Normalizer, str, torch.Tensor], torch.Tensor]] = {
    LOW_DIM: normalize_low_dim,
    IMAGE: prepare_image,
}


class ConditionedUnet(nn.Module):
    """Normalizer + observation encoder + conditional UNet: what the teacher and the one-step
    generator share, under the same parameter names so that state dicts move between them."""

    def __init__(self, config: DiffusionConfig, stats: dict[str, dict[str, list[float]]]) -> None:
        super().__init__()
        self.config = config
        self.normalizer = Normalizer(stats)
        self.encoder = ObservationEncoder(config)
        self.unet = ConditionalUnet1D(
            action_dim=config.action_dim,
            global_cond_dim=self.encoder.output_dim,
            down_dims=config.down_dims,
            step_embed_dim=config.step_embed_dim,
            kernel_size=config.kernel_size,
            n_groups=config.n_groups,
        )

    def prepare_obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw observation window (B, To, ...) → each stream prepared by its kind (``PREPARE``)."""
        return {s.name: PREPARE[s.kind](self.normalizer, s.name, obs[s.name]) for s in self.config.obs.streams}

    def condition(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(self.prepare_obs(obs))


class DiffusionPolicy(ConditionedUnet):
    """The conditioned UNet read as a DDPM denoiser, with its noise schedule."""

    def __init__(self, config: DiffusionConfig, stats: dict[str, dict[str, list[float]]]) -> None:
        super().__init__(config, stats)
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.prediction_type, config.clip_sample)

    # -- training ----------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Denoising loss on a batch: ``batch['obs'][key]`` (B, To, ...), ``batch['action']`` (B, H, Da)."""
        cond = self.condition(batch["obs"])
        x0 = self.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY].float())
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        pred = self.unet(self.schedule.add_noise(x0, noise, t), t, cond)
        return F.mse_loss(pred.float(), self.schedule.training_target(x0, noise))

    # -- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample_chunk(
        self,
        obs: dict[str, torch.Tensor],
        steps: int = 10,
        method: str = "ddim",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Full predicted chunk (B, horizon, Da) in raw action units."""
        cond = self.condition(obs)
        batch = cond.shape[0]
        shape = (batch, self.config.horizon, self.config.action_dim)
        x0 = self.schedule.sample(
            lambda x, t: self.unet(x, t, cond), shape, steps, method, generator=generator, device=cond.device
        )
        return self.normalizer.unnormalize(ACTION_KEY, x0)

    @torch.no_grad()
    def predict_action(
        self,
        obs: dict[str, torch.Tensor],
        steps: int = 10,
        method: str = "ddim",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The executed actions (B, n_action_steps, Da), starting at the newest observation."""
        chunk = self.sample_chunk(obs, steps, method, generator)
        start = self.config.n_obs_steps - 1
        return chunk[:, start : start + self.config.n_action_steps]
