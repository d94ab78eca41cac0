"""Settings of one-step distillation: one dataclass for every method.

``DistillConfig.for_method(name)`` fills in the registered method's ``preset`` (SDM from the
released configuration with its defects fixed, OneDP from the paper, CD in the LCM style; see
``method.py``); any field can then be overridden. Every check runs before training starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sdm_controller.distill.method import get_method
from sdm_controller.errors import ConfigError

T_SAMPLERS = ("grid", "uniform")
WEIGHTINGS = ("sdm", "sigma2")
SCORE_NORMALIZERS = ("batch", "sample", "none")
OPTIMIZERS = ("adamw", "adam")


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
    cd_ema: float = 0.95  # consistency distillation: EMA decay of the target network
    cd_sigma_data: float = 0.5  # consistency boundary scalings c_skip / c_out
    seed: int = 0
    eval_every: int = 0  # iterations between simulator evaluations (0: end only, if a simulator is given)
    eval_episodes: int = 25
    device: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)  # free-form notes copied into provenance

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.t_range = tuple(self.t_range)
        get_method(self.method)
        choices = [
            ("t_sampler", T_SAMPLERS),
            ("weighting", WEIGHTINGS),
            ("score_normalizer", SCORE_NORMALIZERS),
            ("optimizer", OPTIMIZERS),
        ]
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} '{getattr(self, name)}' is unknown; expected one of {list(allowed)}")
        positive = ("steps", "batch_size", "update_ratio", "lr_generator", "lr_fake", "eval_episodes")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "eval_every", "fake_warmup_steps"):
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

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> DistillConfig:
        return cls(**{**get_method(method).preset, **overrides, "method": method})

    def with_overrides(self, **overrides: Any) -> DistillConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
