"""Run a policy artifact on one observation window: ``Engine.load(path)(obs) -> actions``.

    engine = Engine.load("models/drawer", backend="auto", device="cpu", steps=10, method="ddim")
    engine.warmup()
    actions = engine({"state": window})   # (n_action_steps, action_dim) float32, raw units
    engine.last_timing                     # {"encoder_ms": ..., "generator_ms": ..., "total_ms": ...}

The engine is the same for every backend (see ``backends/``) and both artifact kinds:

1. check the observation (keys, shapes and dtypes exactly as in ``policy.json``; no NaN/inf) and
   copy it into preallocated buffers (pinned host + GPU buffers on CUDA);
2. ``backend.encode`` once;
3. teacher: ``NoiseSchedule.sample`` with ``steps`` / ``method``, whose denoiser calls
   ``backend.denoise`` (``steps`` UNet calls); one-step: ``backend.generate(z, cond)`` once,
   clipped to [-1, 1] as ``OneStepPolicy`` does;
4. un-normalize the executed actions (those starting at the newest observation) into a
   preallocated output buffer, and refuse NaN/inf there.

Noise comes from the engine's own ``torch.Generator`` seeded with ``seed``, so two engines with
the same seed produce the same actions on the same observations, whatever the backend; with the
torch backend they equal ``policy.predict_action`` with a generator of that seed.

An engine is not thread-safe (its buffers are shared between calls): call it from one thread,
or guard it with a lock.

Errors: :class:`EngineInputError` and :class:`NonFiniteError` for bad observations (or NaN
actions), :class:`BackendUnavailableError` for a backend this machine cannot run, and
``ArtifactError`` for artifacts (including a missing or stale ONNX export); all are ``SdmError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from sdm_controller.errors import ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import ACTION_KEY
from sdm_controller.policy.noise_schedule import SAMPLERS, NoiseSchedule, spaced_timesteps
from sdm_controller.policy.normalizer import Normalizer
from sdm_controller.runtime.artifact import ArtifactSpec, read_spec
from sdm_controller.runtime.backends import (
    BACKENDS,
    Backend,
    BackendUnavailableError,
    EngineInputError,
    InputSpec,
    NonFiniteError,
    observation_inputs,
    select_backend,
)

__all__ = ["BackendUnavailableError", "Engine", "EngineInputError", "NonFiniteError"]

log = logging.getLogger("sdm_controller.runtime")


def parse_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device '{device}' is not a torch device; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from exc
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{device}' is not supported; use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return parsed


class Engine:
    """One loaded artifact on one backend; call it with one observation window."""

    def __init__(
        self,
        backend: Backend,
        spec: ArtifactSpec,
        steps: int = 10,
        method: str = "ddim",
        seed: int = 0,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.artifact = spec.path
        self.kind: str = spec.kind
        self.config = spec.config
        self.steps, self.method = _check_sampler(self.kind, self.config, steps, method)
        self.seed = seed
        self.device = backend.device
        self.inputs: list[InputSpec] = observation_inputs(self.config)
        self.input_names = [spec.name for spec in self.inputs]
        self.action_shape = (self.config.n_action_steps, self.config.action_dim)
        self.control_period_s = spec.control_period_s
        self._start = self.config.n_obs_steps - 1
        self._chunk_shape = (1, self.config.horizon, self.config.action_dim)
        self._noise_input = self.kind == "teacher" or spec.generator is None or spec.generator.noise_input
        self._schedule = NoiseSchedule(self.config.num_train_timesteps, self.config.prediction_type,
                                       self.config.clip_sample)
        self._normalizer = Normalizer(spec.normalizer).to(self.device)
        self._generator = torch.Generator(device=self.device)
        self.reseed(seed)
        self._allocate()
        self.last_timing: dict[str, float] = {"encoder_ms": 0.0, "generator_ms": 0.0, "total_ms": 0.0}
        self.calls = 0

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        artifact: str | Path | ArtifactSpec,
        backend: str = "auto",
        device: str | torch.device = "cpu",
        steps: int = 10,
        method: str = "ddim",
        seed: int = 0,
        *,
        fp16: bool = True,
        cuda_graphs: bool = False,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> Engine:
        """Load ``artifact`` (a folder or its parsed spec; teacher or one-step) on ``backend``
        ('auto', 'torch', 'onnxruntime', 'tensorrt') and ``device`` ('cpu', 'cuda', 'cuda:N', 'auto').

        ``steps`` / ``method`` choose the teacher's sampler (ignored for one-step artifacts);
        ``fp16`` and ``cuda_graphs`` apply to TensorRT; ``threads`` to onnxruntime's CPU provider
        (default: torch's thread count); ``cache_dir`` is the engine cache folder (default
        ``$SDM_CACHE`` or ``~/.cache/sdm_controller/engines``).
        """
        spec = artifact if isinstance(artifact, ArtifactSpec) else read_spec(artifact)
        _check_sampler(spec.kind, spec.config, steps, method)  # before any expensive build
        if backend != "auto" and backend not in BACKENDS:
            raise ConfigError(f"backend '{backend}' is unknown; expected 'auto' or one of {BACKENDS}")
        chosen = select_backend(backend, spec, parse_device(device), fp16=fp16, cuda_graphs=cuda_graphs,
                                threads=threads, cache_dir=cache_dir)
        engine = cls(chosen, spec, steps=steps, method=method, seed=seed)
        log.info("engine: %s artifact '%s' on %s%s", engine.kind, spec.path, chosen.description,
                 f", {method} {steps} steps" if engine.kind == "teacher" else "")
        return engine

    def _allocate(self) -> None:
        """Host buffers (batch 1) the observation is copied into, their device twins, the output."""
        cuda = self.device.type == "cuda"
        self._host: list[torch.Tensor] = []
        self._dev: list[torch.Tensor] = []
        for spec in self.inputs:
            dtype = torch.from_numpy(np.zeros(0, dtype=spec.dtype)).dtype
            host = torch.zeros((1, *spec.shape), dtype=dtype, pin_memory=cuda)
            self._host.append(host)
            dev_dtype = self.backend.float_dtype if spec.is_float else dtype
            if cuda or dev_dtype != dtype:
                self._dev.append(torch.zeros(host.shape, dtype=dev_dtype, device=self.device))
            else:
                self._dev.append(host)  # CPU, same dtype: the backend reads the host buffer itself
        self._copies = [(h, d) for h, d in zip(self._host, self._dev, strict=True) if d is not h]
        self._host_np = [t.numpy() for t in self._host]
        self._out = torch.zeros(self.action_shape, dtype=torch.float32, pin_memory=cuda)
        self._out_np = self._out.numpy()
        self._z = torch.zeros(self._chunk_shape, dtype=torch.float32, device=self.device)

    # -- public API --------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    def reseed(self, seed: int) -> None:
        """Restart the noise sequence (the next call draws what a fresh engine would)."""
        self.seed = int(seed)
        self._generator.manual_seed(self.seed)

    def __call__(self, obs: Mapping[str, np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """One observation window → executed actions (n_action_steps, action_dim) float32.

        The result is a new array, or ``out`` (float32, that shape) filled in place.
        """
        start = time.perf_counter()
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != self.action_shape
                                or out.dtype != np.float32):
            raise EngineInputError(f"out must be a float32 numpy array of shape {self.action_shape}")
        self._load(obs)
        loaded = time.perf_counter()
        backend = self.backend
        with torch.inference_mode():
            for host, dev in self._copies:
                dev.copy_(host, non_blocking=True)
            cond = backend.encode(self._dev)
            backend.synchronize()
            encoded = time.perf_counter()
            if self.kind == "teacher":
                chunk = self._schedule.sample(
                    lambda x, t: backend.denoise(x, t, cond), self._chunk_shape, self.steps, self.method,
                    generator=self._generator, device=self.device,
                )
            else:
                if self._noise_input:
                    self._z.normal_(generator=self._generator)
                chunk = backend.generate(self._z, cond).clamp(-1.0, 1.0)
            executed = chunk[0, self._start : self._start + self.action_shape[0]]
            self._out.copy_(self._normalizer.unnormalize(ACTION_KEY, executed.float()))
            backend.synchronize()
        generated = time.perf_counter()
        if not np.isfinite(self._out_np).all():
            raise NonFiniteError(
                f"the policy produced NaN or inf actions ({backend.description}); nothing was returned. "
                "The weights or the observation are broken"
            )
        result = self._out_np.copy() if out is None else out
        if out is not None:
            np.copyto(out, self._out_np)
        self.calls += 1
        self.last_timing = {
            "encoder_ms": (encoded - loaded) * 1e3,
            "generator_ms": (generated - encoded) * 1e3,
            "total_ms": (time.perf_counter() - start) * 1e3,
        }
        return result

    def warmup(self, n: int = 3) -> list[float]:
        """``n`` calls on a neutral observation (zeros); the noise sequence is left where it was.

        Returns the total milliseconds of each call (the first ones include lazy initialisation).
        """
        obs = {spec.name: np.zeros(spec.shape, dtype=spec.dtype) for spec in self.inputs}
        state = self._generator.get_state()
        times = []
        try:
            for _ in range(n):
                self(obs)
                times.append(self.last_timing["total_ms"])
        finally:
            self._generator.set_state(state)
            self.calls -= len(times)
        return times

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        sampler = f", {self.method} {self.steps} steps" if self.kind == "teacher" else ""
        return f"Engine({self.kind} '{self.artifact}', {self.backend.description}{sampler})"

    def describe_inputs(self) -> str:
        return ", ".join(f"'{s.name}': {s.describe()}" for s in self.inputs)

    # -- input checks ------------------------------------------------------------------------
    def _load(self, obs: Mapping[str, np.ndarray]) -> None:
        if not isinstance(obs, Mapping):
            raise EngineInputError(
                f"the observation must be a dict of numpy arrays ({self.describe_inputs()}), got {type(obs).__name__}"
            )
        missing = [name for name in self.input_names if name not in obs]
        if missing:
            spec = self.inputs[self.input_names.index(missing[0])]
            raise EngineInputError(f"observation key '{spec.name}' is missing; expected a {spec.describe()} "
                                   f"(the policy takes {self.describe_inputs()})")
        unknown = sorted(str(k) for k in obs if k not in self.input_names)
        if unknown:
            raise EngineInputError(f"observation key '{unknown[0]}' is not an input of this policy; it takes "
                                   f"{self.describe_inputs()}")
        for spec, buffer in zip(self.inputs, self._host_np, strict=True):
            value = obs[spec.name]
            if not isinstance(value, np.ndarray):
                raise EngineInputError(f"observation '{spec.name}' must be a numpy {spec.describe()}, "
                                       f"got {type(value).__name__}")
            if value.dtype != spec.dtype:
                raise EngineInputError(f"observation '{spec.name}' has dtype {value.dtype}; expected a "
                                       f"{spec.describe()}")
            if value.shape != spec.shape:
                raise EngineInputError(f"observation '{spec.name}' has shape {value.shape}; expected a "
                                       f"{spec.describe()}")
            if spec.is_float and not np.isfinite(value).all():
                raise NonFiniteError(f"observation '{spec.name}' contains NaN or inf; refusing to run the policy")
            np.copyto(buffer[0], value)


def _check_sampler(kind: str, config: DiffusionConfig, steps: int, method: str) -> tuple[int, str]:
    if kind != "teacher":
        return 1, "one-step"
    if method not in SAMPLERS:
        raise ConfigError(f"sampler '{method}' is unknown; expected one of {SAMPLERS}")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ConfigError(f"sampler steps must be an integer, got {steps!r}")
    spaced_timesteps(config.num_train_timesteps, steps)  # raises ConfigError outside [1, T]
    return steps, method
