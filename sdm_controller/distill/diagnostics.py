"""What a distillation run looks like from inside, at every evaluation checkpoint.

Success alone cannot say why a generator degrades. ``DistillProbe`` measures, on one fixed probe
batch (observation windows, generator noise, forward noise and noise levels drawn once at the
start), the quantities that separate the usual suspects:

* ``drift``: RMS distance of G's output from G's output before any update, same noise (how far
  the updates moved the generator, in normalized action units);
* ``teacher_gap``: RMS distance of G's output from the teacher's deterministic multi-step sample
  (DDIM-10) from the same noise, and ``teacher_gap_initial`` for G before any update;
* ``dm_grad_norm`` and ``dm_cos_teacher``: the size of the distribution-matching gradient g on G's
  sample and the cosine of the step it asks for (``-g``) with the direction toward that teacher
  sample (≈ 0: the gradient is noise; < 0: it pushes away from the teacher);
* ``fake_dsm`` vs ``real_dsm``: the denoising loss of the fake score F and of the teacher R on G's
  noised samples (F tracks G when its loss is clearly below R's);
* ``out_of_range``: the share of G's action values outside [-1, 1];
* ``mean_gap`` / ``std_gap``: per action dimension (gripper included), the distance of the mean and
  standard deviation of G's actions from the demonstrations', in normalized units, with the
  worst dimension named (``worst_dim``).

The DM and F quantities are computed where the method has them (a distribution-matching method
with a learned F); other methods get ``None`` there.
"""

from __future__ import annotations

from typing import Any

import torch

from sdm_controller.data.windows import WindowSampler
from sdm_controller.distill.distribution_matching import DistributionMatching
from sdm_controller.policy.modeling_diffusion import ACTION_KEY, DiffusionPolicy
from sdm_controller.policy.modeling_one_step import OneStepPolicy
from sdm_controller.policy.noise_schedule import NoiseSchedule

PROBE_SIZE = 256
TEACHER_STEPS = 10


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


class DistillProbe:
    """Fixed probe batch + the generator's starting point; call it with G (or its EMA) and the method."""

    def __init__(self, teacher: DiffusionPolicy, generator: OneStepPolicy, sampler: WindowSampler,
                 seed: int = 12345, size: int = PROBE_SIZE) -> None:
        """``sampler``: a window sampler of the run's dataset that the probe may draw from (not the
        training loop's, whose random sequence it would change)."""
        rng = torch.Generator().manual_seed(seed)
        batch = sampler.batch(size)
        config = teacher.config
        self.teacher = teacher
        self.obs = batch["obs"]
        self.actions = teacher.normalizer.normalize(ACTION_KEY, batch[ACTION_KEY].float())
        shape = (size, config.horizon, config.action_dim)
        self.z = torch.randn(shape, generator=rng)
        self.eps = torch.randn(shape, generator=rng)
        self.t = torch.randint(0, config.num_train_timesteps, (size,), generator=rng)
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.prediction_type, clip_sample=False)
        with torch.no_grad():
            self.cond = teacher.condition(self.obs)
            self.initial = self._generate(generator)
            self.teacher_sample = self._teacher_sample()
        self.teacher_gap_initial = _rms(self.initial - self.teacher_sample)

    def _generate(self, generator: OneStepPolicy) -> torch.Tensor:
        z = self.z if generator.generator_spec.noise_input else torch.zeros_like(self.z)
        cond = generator.condition(self.obs) if any(p.requires_grad for p in generator.encoder.parameters()) \
            else self.cond
        return generator.generate(z, cond)

    def _teacher_sample(self) -> torch.Tensor:
        """The teacher's DDIM sample started from the generator's noise (normalized, clipped as it acts)."""
        teacher = self.teacher
        return teacher.schedule.sample(lambda x, t: teacher.unet(x, t, self.cond), tuple(self.z.shape),
                                       TEACHER_STEPS, "ddim", initial_noise=self.z)

    @torch.no_grad()
    def __call__(self, generator: OneStepPolicy, method: Any) -> dict[str, Any]:
        was_training = generator.training
        generator.eval()
        a = self._generate(generator)
        generator.train(was_training)
        clipped = a.clamp(-1.0, 1.0)
        out: dict[str, Any] = {
            "drift": _rms(a - self.initial),
            "teacher_gap": _rms(clipped - self.teacher_sample),
            "teacher_gap_initial": self.teacher_gap_initial,
            "out_of_range": float((a.abs() > 1.0).float().mean()),
        }
        dims = a.shape[-1]
        mean_gap = (clipped.reshape(-1, dims).mean(0) - self.actions.reshape(-1, dims).mean(0)).abs()
        std_gap = (clipped.reshape(-1, dims).std(0) - self.actions.reshape(-1, dims).std(0)).abs()
        out.update(mean_gap=float(mean_gap.mean()), std_gap=float(std_gap.mean()),
                   worst_dim=int(torch.argmax(mean_gap + std_gap)),
                   mean_gap_per_dim=[round(float(v), 4) for v in mean_gap],
                   std_gap_per_dim=[round(float(v), 4) for v in std_gap])
        out.update(self._score_terms(clipped, method))
        return out

    def _score_terms(self, a: torch.Tensor, method: Any) -> dict[str, Any]:
        core, fake = getattr(method, "core", None), getattr(method, "fake", None)
        if not isinstance(core, DistributionMatching):
            return {"dm_grad_norm": None, "dm_cos_teacher": None, "fake_dsm": None, "real_dsm": None}
        alpha, sigma = self.schedule.alpha_sigma(self.t, a.dim())
        x_t = alpha * a + sigma * self.eps
        real_out = self.teacher.unet(x_t, self.t, self.cond)
        x0_real, _ = self.schedule.to_x0_eps(x_t, self.t, real_out)
        if fake is None:  # a point-mass fake score (OneDP-D)
            x0_fake, fake_dsm = a, None
        else:
            fake_out = fake.unet(x_t, self.t, fake.condition(self.obs))
            x0_fake, _ = self.schedule.to_x0_eps(x_t, self.t, fake_out)
            fake_dsm = float((fake_out - self.schedule.training_target(a, self.eps)).pow(2).mean())
        g = core.score_gradient(a, x_t, self.t, x0_real, x0_fake)
        toward = (self.teacher_sample - a).flatten(1)
        step = (-g).flatten(1)
        cos = torch.nn.functional.cosine_similarity(step, toward, dim=1, eps=1e-12)
        real_dsm = float((real_out - self.schedule.training_target(a, self.eps)).pow(2).mean())
        return {"dm_grad_norm": float(g.abs().mean()), "dm_cos_teacher": float(cos.mean()),
                "fake_dsm": fake_dsm, "real_dsm": real_dsm}
