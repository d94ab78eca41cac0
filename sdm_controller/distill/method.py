"""What a distillation method is to the trainer, and the registry that names the methods.

A method is a ``DistillMethod`` subclass, registered under its ``name`` (the ``--method`` value
and the artifact's ``provenance.algorithm``). The trainer owns the loop, the data, the noise, the
optimisers, G's EMA and the artifact; a method says only what differs between methods:

* ``uses_teacher``: whether it distils a teacher (G starts from the teacher's weights) or trains
  G from scratch on the demonstrations alone (``TeacherFreeMethod``: a cheap baseline in place of
  the teacher, with the network a teacher on that dataset would have);
* ``preset``: its ``DistillConfig`` defaults (``DistillConfig.for_method`` starts from them);
* ``own_settings`` and ``check_config``: the ``DistillConfig`` fields only it reads, and their
  checks (run before anything loads or trains);
* ``generator_spec``: how G is called (timestep, noise input, output scalings);
* ``__init__``: builds the networks it needs besides G, and lists in ``trained`` the ones the
  trainer should optimise (each with its learning rate);
* ``losses``: one iteration's objective and its named losses for the log;
* ``after_generator_step``: bookkeeping after each update of G (a target network's EMA).

The built-in methods register themselves when ``sdm_controller.distill`` is imported. A new method
is one class in a module of this package, decorated with ``@register_method`` and imported by the
package's ``__init__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sdm_controller.data.episodes import EpisodeSet
from sdm_controller.errors import ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.training.teacher import TrainConfig, policy_config_for

if TYPE_CHECKING:  # configuration_distill reads the registry
    from sdm_controller.distill.configuration_distill import DistillConfig

#: Generator timestep for epsilon teachers, counted back from T: beta_{T-1} is clipped to 0.999 in
#: squaredcos_cap_v2, so alpha_{T-1} ~ 5e-4 (eps -> x0 amplifies errors 2000x) while alpha_{T-2} ~ 0.016.
#: Measured on drawer-open (epsilon teacher, 25 episodes, before any distillation): the teacher read
#: at t = 65 (OneDP's choice, kept in its preset) succeeds 0.00, at t = 98 0.40, at t = 99 0.28.
EPSILON_GENERATOR_OFFSET = 2


def generator_timestep(teacher: DiffusionPolicy, config: DistillConfig) -> int:
    """The configured timestep, else T - 2 for epsilon teachers and T (pure noise) for x0 teachers."""
    if config.generator_timestep is not None:
        t = config.generator_timestep
        limit = teacher.config.num_train_timesteps - (1 if teacher.config.prediction_type == "epsilon" else 0)
        if not 0 <= t <= limit:
            raise ConfigError(f"generator_timestep {t} must lie in [0, {limit}] for this teacher")
        return t
    if teacher.config.prediction_type == "epsilon":
        return teacher.config.num_train_timesteps - EPSILON_GENERATOR_OFFSET
    return teacher.config.num_train_timesteps  # SDM: pure noise in, one past the training range


@dataclass
class Step:
    """What one iteration hands a method: this rank's share of the global batch and noise.

    ``z`` and ``eps`` are drawn by the trainer for every method, in that order; a method draws
    anything further from ``rng`` (global ``global_count``-sized draws, cut with ``share``) so that
    data-parallel ranks stay in step with a one-process run.
    """

    obs: dict[str, torch.Tensor]
    actions: torch.Tensor  # (B, horizon, action_dim) demo chunks, normalized like the teacher's outputs
    z: torch.Tensor  # (B, horizon, action_dim) generator input (zeros without noise input)
    eps: torch.Tensor  # (B, horizon, action_dim) forward-process noise
    cond_real: torch.Tensor | None  # the teacher's conditioning (no gradient); None without a teacher
    cond_gen: torch.Tensor  # G's conditioning: its own encoder's when trainable, else ``cond_real``
    train_generator: bool  # G is updated after this iteration (not during F warm-up / between ratios)
    rng: torch.Generator
    share: Callable[[torch.Tensor], torch.Tensor]  # this rank's slice of a global draw
    global_count: int  # the global batch size: losses are sums divided by it
    device: torch.device


@dataclass
class StepLosses:
    """One iteration's result: what to back-propagate, and the named values to log."""

    objective: torch.Tensor | float  # a float (0.0) when nothing is back-propagated
    logged: dict[str, torch.Tensor | None]  # keys from the method's ``loss_names``; None: not computed


@dataclass
class TrainedNetwork:
    """A network besides G that the trainer optimises every iteration (G only on generator steps)."""

    name: str
    module: torch.nn.Module
    lr: float


class DistillMethod(ABC):
    """One way of turning a teacher into a one-step generator G; one instance per run."""

    name: ClassVar[str]
    #: False: G is trained from scratch on the demonstrations, and a teacher is refused.
    uses_teacher: ClassVar[bool] = True
    preset: ClassVar[dict[str, Any]] = {}
    #: ``DistillConfig`` fields that only this method (and its subclasses) reads; any other method
    #: refuses a value other than the field's default.
    own_settings: ClassVar[tuple[str, ...]] = ()
    #: Logged every iteration as ``loss_<name>``; "generator" (G's loss) is shown in the progress bar.
    loss_names: ClassVar[tuple[str, ...]] = ("generator",)

    def __init__(
        self, teacher: DiffusionPolicy | None, generator: OneStepPolicy, config: DistillConfig, distributed: bool
    ) -> None:
        self.teacher = teacher  # frozen, on the run's device (None for a teacher-free method)
        self.generator = generator
        self.config = config
        self.distributed = distributed
        self.trained: list[TrainedNetwork] = []  # in the order their optimisers are created, after G's

    @classmethod  # noqa: B027 (a hook: most methods check nothing)
    def check_config(cls, config: DistillConfig) -> None:
        """Raises ``ConfigError`` for settings this method cannot work with (called by ``DistillConfig``)."""

    @classmethod
    def generator_spec(cls, teacher: DiffusionPolicy | None, config: DistillConfig) -> GeneratorSpec:
        """How G is called; by default the teacher read once at ``generator_timestep``, no output scaling."""
        return GeneratorSpec(timestep=generator_timestep(teacher, config), noise_input=config.noise_input)

    @abstractmethod
    def losses(self, step: Step) -> StepLosses:
        """The objective of one iteration; the trainer back-propagates it and steps the optimisers."""

    def after_generator_step(self) -> None:  # noqa: B027 (a hook: most methods have nothing to do here)
        """Called after each update of G and of its EMA."""


#: The teacher training defaults a teacher-free method takes its budget from.
TEACHER_DEFAULTS = TrainConfig()


class TeacherFreeMethod(DistillMethod):
    """A one-step policy trained on the demonstrations alone, as a cheap alternative to a teacher.

    G has the network a teacher trained on the dataset would have (``policy_config_for`` with the
    ``policy`` overrides, e.g. ``unet_preset``) and its normalizer (the dataset's min-max), starts
    from a seeded random initialisation and trains its encoder too. It replaces the teacher, so
    its budget is the teacher's: steps, batch size, AdamW at the teacher's learning rate with
    warm-up and cosine decay, no gradient clipping, the teacher's EMA.
    """

    uses_teacher = False
    preset = {
        "steps": TEACHER_DEFAULTS.steps,
        "batch_size": TEACHER_DEFAULTS.batch_size,
        "lr_generator": TEACHER_DEFAULTS.lr,
        "optimizer": "adamw",
        "betas": TEACHER_DEFAULTS.betas,
        "weight_decay": TEACHER_DEFAULTS.weight_decay,
        "warmup_steps": TEACHER_DEFAULTS.warmup_steps,
        "lr_schedule": "cosine",
        "grad_clip": 0.0,
        "generator_ema": TEACHER_DEFAULTS.ema_max_decay,
        "encoder_trainable": True,
    }
    own_settings = ("policy",)

    @classmethod
    def check_config(cls, config: DistillConfig) -> None:
        if not config.encoder_trainable:
            raise ConfigError(
                f"method '{cls.name}' trains G from scratch, encoder included; encoder_trainable must be True"
            )

    @classmethod
    def policy_config(cls, episodes: EpisodeSet, config: DistillConfig) -> DiffusionConfig:
        """G's network: the dataset's observations and actions, the ``policy`` overrides, the UNet
        output read as is (``prediction_type`` 'sample')."""
        return policy_config_for(episodes, {**config.policy, "prediction_type": "sample"})


_REGISTRY: dict[str, type[DistillMethod]] = {}


def register_method(method: type[DistillMethod]) -> type[DistillMethod]:
    """Makes ``method`` available under ``method.name``; usable as a class decorator."""
    existing = _REGISTRY.get(method.name)
    if existing is not None and existing is not method:
        raise ConfigError(
            f"distillation method '{method.name}' is already registered by "
            f"{existing.__module__}.{existing.__qualname__}"
        )
    if "generator" not in method.loss_names:
        raise ConfigError(f"distillation method '{method.name}' must log a 'generator' loss, got {method.loss_names}")
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Removes a method registered for a while (a test's, an experiment's)."""
    get_method(name)
    del _REGISTRY[name]


def get_method(name: str) -> type[DistillMethod]:
    if name not in _REGISTRY:
        raise ConfigError(
            f"distillation method '{name}' does not exist; expected one of the registered methods: "
            f"{', '.join(method_names())}"
        )
    return _REGISTRY[name]


def method_names() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)
