"""The distilled one-step policy: ``a = G(z, t_gen, E(obs))``, one network call, no scheduler.

It has the teacher's modules (normalizer, encoder, UNet) under the same names, so a teacher's
state dict initialises it directly. The UNet output is read in the teacher's parameterisation at
the fixed timestep ``t_gen`` and turned into a normalized action chunk:

* ``sample`` teachers: the output is the chunk;
* ``epsilon`` teachers: chunk = (z - sigma eps) / alpha at ``t_gen`` (so ``t_gen`` < T);
* consistency models add their boundary scaling: chunk = c_skip z + c_out x0;
* MeanFlow reads an average velocity u(z, r = 0, t = 1) from a UNet with a second time input
  (the interval t - r, see ``ConditionalUnet1D``) and jumps: chunk = z - u (scalings 1 and -1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sdm_controller.errors import ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import ACTION_KEY, ConditionedUnet
from sdm_controller.policy.noise_schedule import NoiseSchedule


@dataclass
class GeneratorSpec:
    """How the one-step network is called and read (stored in ``policy.json``)."""

    timestep: int  # fixed diffusion step fed to the UNet
    noise_input: bool = True  # False: zeros in place of z (deterministic OneDP-D)
    skip_scale: float = 0.0  # consistency c_skip at ``timestep`` (0 for DM-distilled generators)
    out_scale: float = 1.0  # consistency c_out at ``timestep``
    interval: int | None = None  # second time fed to a two-time UNet (MeanFlow's t - r); None: one time

    def to_dict(self) -> dict:
        # A one-time generator writes the object it always wrote (the export fingerprint reads it).
        return {k: v for k, v in asdict(self).items() if k != "interval" or v is not None}


class OneStepPolicy(ConditionedUnet):
    """Observation encoder + generator UNet; ``predict_action`` is one UNet evaluation."""

    def __init__(self, config: DiffusionConfig, stats: dict, generator: GeneratorSpec) -> None:
        if config.prediction_type == "epsilon" and generator.timestep >= config.num_train_timesteps:
            raise ConfigError(
                f"generator timestep {generator.timestep} is outside the schedule (T = "
                f"{config.num_train_timesteps}); an epsilon-prediction generator needs alpha_t there"
            )
        if generator.interval is not None and config.prediction_type == "epsilon":
            raise ConfigError(
                f"generator interval {generator.interval} makes the UNet output an average velocity, read "
                "as is; the policy config's prediction_type must be 'sample', got 'epsilon'"
            )
        super().__init__(config, stats)
        if generator.interval is not None:
            self.unet.add_interval_input()
        self.generator_spec = generator
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.prediction_type, clip_sample=False)

    def noise(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        shape = (batch, self.config.horizon, self.config.action_dim)
        if not self.generator_spec.noise_input:
            return torch.zeros(shape, device=device)
        return torch.randn(shape, generator=generator, device=device)

    def generate(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Normalized chunk (B, H, Da), unclipped (distillation losses need the raw output)."""
        spec = self.generator_spec
        t = torch.full((z.shape[0],), spec.timestep, device=z.device, dtype=torch.long)
        if spec.interval is None:
            out = self.unet(z, t, cond)
        else:
            out = self.unet(z, t, cond, torch.full_like(t, spec.interval))
        if self.config.prediction_type == "epsilon":
            alpha, sigma = self.schedule.alpha_sigma(t, z.dim())
            out = (z - sigma * out) / alpha
        if spec.skip_scale or spec.out_scale != 1.0:
            out = spec.skip_scale * z + spec.out_scale * out
        return out

    @torch.no_grad()
    def sample_chunk(self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Full chunk (B, horizon, Da) in raw action units, clipped to the demonstrated range."""
        cond = self.condition(obs)
        z = self.noise(cond.shape[0], generator, cond.device)
        return self.normalizer.unnormalize(ACTION_KEY, self.generate(z, cond).clamp(-1.0, 1.0))

    @torch.no_grad()
    def predict_action(
        self, obs: dict[str, torch.Tensor], generator: torch.Generator | None = None, **_: object
    ) -> torch.Tensor:
        """Executed actions (B, n_action_steps, Da); extra sampler arguments are ignored."""
        chunk = self.sample_chunk(obs, generator)
        start = self.config.n_obs_steps - 1
        return chunk[:, start : start + self.config.n_action_steps]
