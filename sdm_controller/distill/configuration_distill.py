"""Settings of one-step distillation: one dataclass for every method.

``DistillConfig.for_method(name)`` fills in the registered method's ``preset`` (SDM from the
released configuration with its defects fixed, OneDP from the paper, CD in the LCM style, the
teacher-free baselines with a teacher's training budget; see ``method.py``); any field can then be
overridden. Every check runs before training starts: a setting the chosen method does not read is
refused rather than ignored (teacher settings for a teacher-free method, another method's own
settings).
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from sdm_controller.distill.method import get_method, method_names
from sdm_controller.errors import ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig

T_SAMPLERS = ("grid", "uniform")
WEIGHTINGS = ("sdm", "sigma2")
SCORE_NORMALIZERS = ("batch", "sample", "none")
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("constant", "cosine")
ANCHORS = ("none", "teacher", "demos")
#: Settings that only distillation from a teacher reads: a teacher-free method refuses them.
TEACHER_SETTINGS = (
    "lr_fake", "update_ratio", "fake_warmup_steps", "generator_timestep", "t_sampler", "t_range", "weighting",
    "score_normalizer", "literal", "sample_clamp", "noise_input", "cd_ema", "cd_sigma_data", "generator_ema_warmup",
)
#: Policy config fields that come from the dataset (or are fixed by the method), never from ``policy``.
POLICY_FROM_DATA = ("obs", "action_dim", "prediction_type")


@dataclass
class DistillConfig:
    """Hyperparameters of a distillation run (see ``for_method`` for each method's defaults)."""

    method: str = "sdm"  # a registered method (``method_names()``)
    steps: int = 2000  # iterations (each updates the fake score network F; G every ``update_ratio``)
    batch_size: int = 128
    update_ratio: int = 1  # F updates per G update (SDM released: G steps in 1 of 5 epochs)
    fake_warmup_steps: int = 0  # F-only iterations first: at init F equals R, so g is noise until F tracks G
    lr_generator: float = 5e-5
    lr_fake: float = 5e-5
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    warmup_steps: int = 100  # linear warm-up of both learning rates, then constant
    grad_clip: float = 1.0  # max gradient norm of G and F (0 disables)
    generator_timestep: int | None = None  # timestep fed to G; None: T for x0 teachers, 65 for epsilon
    t_sampler: str = "grid"  # noise levels of the DM / DSM terms: the 10-point DDIM grid or uniform
    t_range: tuple[int, int] = (2, 95)  # inclusive range of the uniform sampler
    weighting: str = "sdm"  # per-level weight of (x0_fake - x0_real): "sdm" alpha/sigma^2, "sigma2" alpha^2
    score_normalizer: str = "batch"  # divide g by mean |x_t - alpha x0_real| / sigma^2 over the batch / sample
    literal: bool = False  # SDM as released: F's loss does not detach the generator sample
    sample_clamp: bool = False  # DM/DSM see G's sample clamped to [-1, 1] (what acts), gradient passed straight
    noise_input: bool = True  # OneDP-D feeds zeros instead of noise
    encoder_trainable: bool = False  # OneDP trains copies of the encoder in G and F
    generator_ema: float = 0.999  # EMA decay of G's weights (the EMA is what is saved and evaluated)
    generator_ema_warmup: bool = True  # Diffusion Policy's EMA warm-up; False: decay generator_ema from the start
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to 0 at ``steps`` (teacher's)
    cd_ema: float = 0.95  # consistency distillation: EMA decay of the target network
    cd_sigma_data: float = 0.5  # consistency boundary scalings c_skip / c_out
    anchor: str = "none"  # DM methods: also regress G's sample onto "teacher" (DDIM from G's noise) or "demos"
    anchor_weight: float = 1.0  # weight of that regression against the DM surrogate
    anchor_steps: int = 10  # DDIM steps of the teacher sample the "teacher" anchor regresses onto
    policy: dict[str, Any] = field(default_factory=dict)  # teacher-free: network overrides, e.g. unet_preset
    meanflow_ratio: float = 0.5  # MeanFlow: share of samples with r != t (the rest are flow matching, r = t)
    meanflow_t_sampler: str = "logit-normal"  # MeanFlow: t, r = max, min of two "logit-normal" or "uniform" draws
    meanflow_t_mean: float = -0.4  # MeanFlow: logit-normal location (MP1)
    meanflow_t_std: float = 1.0  # MeanFlow: logit-normal scale (MP1)
    meanflow_power: float = 0.5  # MeanFlow: adaptive loss weight 1 / (mean error^2 + c)^p
    seed: int = 0
    eval_every: int = 0  # iterations between simulator evaluations (0: end only, if a simulator is given)
    eval_episodes: int = 25
    device: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)  # free-form notes copied into provenance

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.t_range = tuple(self.t_range)
        method = get_method(self.method)
        choices = [
            ("t_sampler", T_SAMPLERS),
            ("weighting", WEIGHTINGS),
            ("score_normalizer", SCORE_NORMALIZERS),
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
            ("anchor", ANCHORS),
        ]
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} '{getattr(self, name)}' is unknown; expected one of {list(allowed)}")
        positive = ("steps", "batch_size", "update_ratio", "lr_generator", "lr_fake", "eval_episodes", "anchor_steps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "eval_every", "fake_warmup_steps", "anchor_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must lie in [0, 1), got {self.betas}")
        for name in ("generator_ema", "cd_ema"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        lo, hi = self.t_range
        if not 0 <= lo <= hi:
            raise ConfigError(f"t_range must be 0 <= low <= high, got {self.t_range}")
        unread = [name for name in self._settings_not_read_by(self.method) if getattr(self, name) != _default(name)]
        if unread:
            raise ConfigError(_not_read(self.method, unread[0]))
        self._check_policy()
        method.check_config(self)

    def _check_policy(self) -> None:
        if not isinstance(self.policy, dict):
            raise ConfigError(f"policy must be a dict of policy config fields, got {type(self.policy).__name__}")
        fixed = sorted(set(self.policy) & set(POLICY_FROM_DATA))
        if fixed:
            raise ConfigError(f"policy.{fixed[0]} cannot be set: observations and actions come from the dataset, "
                              "and a teacher-free UNet's output is read as is")
        try:
            DiffusionConfig.from_dict(self.policy)
        except (TypeError, ValueError, ConfigError) as exc:
            raise ConfigError(f"the policy overrides {self.policy} are invalid: {exc}") from exc

    @staticmethod
    def _settings_not_read_by(name: str) -> list[str]:
        """Fields ``name``'s method never reads: a teacher's, without one; other methods' own settings."""
        method = get_method(name)
        unread = [] if method.uses_teacher else list(TEACHER_SETTINGS)
        for other in method_names():
            unread += [s for s in get_method(other).own_settings if s not in method.own_settings and s not in unread]
        return unread

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> DistillConfig:
        """The method's preset with ``overrides``; an override the method does not read is refused,
        whatever its value (here the caller's intent is known, unlike in the constructor)."""
        given = [name for name in overrides if name in cls._settings_not_read_by(method)]
        if given:
            raise ConfigError(_not_read(method, given[0]))
        return cls(**{**get_method(method).preset, **overrides, "method": method})

    def with_overrides(self, **overrides: Any) -> DistillConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default(name: str) -> Any:
    spec = next(f for f in fields(DistillConfig) if f.name == name)
    return spec.default_factory() if spec.default is MISSING else spec.default


def _not_read(method: str, setting: str) -> str:
    if setting in TEACHER_SETTINGS and not get_method(method).uses_teacher:
        return (f"setting '{setting}' is one of distillation from a teacher; method '{method}' trains without a "
                "teacher and does not read it")
    owners = [m for m in method_names() if setting in get_method(m).own_settings]
    return f"setting '{setting}' is read only by method {' / '.join(owners)}; method '{method}' does not read it"
