"""The one interface every inference backend implements, and the errors the engine raises.

A backend holds the two networks of a policy artifact and nothing else:

* ``encode(inputs) -> cond``: raw observation tensors (batch 1, in the order of
  :func:`observation_inputs`: the artifact's streams) → the UNet's global condition. The
  normalization and the uint8 → float image conversion are part of the encoder.
* ``denoise(x, t, cond) -> model output`` (teacher artifacts), called once per sampler step, or
  ``generate(z, cond) -> normalized chunk`` (one-step artifacts), one call.

Everything else (noise, the sampler loop, clipping, un-normalization, input checks, timing) lives
in :class:`~sdm_controller.runtime.engine.Engine` and runs in torch on ``backend.device``, so the
backends differ only where they must.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from sdm_controller.errors import SdmError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class BackendUnavailableError(SdmError):
    """A backend whose package, GPU or execution provider is missing on this machine."""


class EngineInputError(SdmError):
    """An observation with a missing or unknown key, or a wrong shape or dtype."""


class NonFiniteError(SdmError):
    """NaN or inf in an observation or in the actions a policy produced."""


@dataclass(frozen=True)
class InputSpec:
    """One observation array of ONE window, as the engine takes it (no batch dimension)."""

    name: str
    kind: str  # observation kind of the stream (see ``policy.observation_spec.STREAM_KINDS``)
    shape: tuple[int, ...]  # (n_obs_steps, *frame shape)
    dtype: np.dtype

    @property
    def is_float(self) -> bool:
        """Float inputs are checked for NaN and cast to the backend's float dtype; integer ones
        (uint8 images) travel as they are and are converted inside the encoder."""
        return np.issubdtype(self.dtype, np.floating)

    def describe(self) -> str:
        return f"{np.dtype(self.dtype).name} array of shape {self.shape}"


def observation_inputs(config: DiffusionConfig) -> list[InputSpec]:
    """One input per observation stream, in the spec's order (low-dim, then images, ...)."""
    return [InputSpec(s.name, s.kind, (config.n_obs_steps, *s.shape), s.dtype) for s in config.obs.streams]


class Backend(abc.ABC):
    """Encoder + denoiser (teacher) or encoder + generator (one-step) of one artifact."""

    #: "torch", "onnxruntime" or "tensorrt"
    name: str = ""
    #: where the engine keeps its tensors and runs the sampler loop
    device: torch.device = torch.device("cpu")
    #: dtype the encoder wants for low-dim inputs (float16 for a half-precision TensorRT program)
    float_dtype: torch.dtype = torch.float32
    #: one line for logs: backend, device, providers or precision
    description: str = ""

    @abc.abstractmethod
    def encode(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """(1, To, ...) raw observation tensors → (1, cond_dim) condition."""

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Teacher UNet output at integer timesteps ``t`` (1,), float32 (1, horizon, action_dim)."""
        raise NotImplementedError(f"backend '{self.name}' holds a one-step generator, not a denoiser")

    def generate(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One-step generator: noise (1, horizon, action_dim) → normalized chunk, float32, unclipped."""
        raise NotImplementedError(f"backend '{self.name}' holds a teacher denoiser, not a one-step generator")

    def synchronize(self) -> None:
        """Wait for queued GPU work, so that timings measure the work and not its launch."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions or CUDA graphs; the backend is unusable afterwards."""
