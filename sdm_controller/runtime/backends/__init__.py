"""Inference backends behind one interface (:class:`~.base.Backend`) and the ``auto`` choice.

``auto`` tries, in order, tensorrt > onnxruntime on the GPU > torch on the GPU > onnxruntime on
the CPU > torch on the CPU, skipping GPU candidates when the engine's device is ``cpu``, and
logs (logger ``sdm_controller.runtime``) what it picked and why each better one was skipped.
A backend named explicitly either works or raises a :class:`BackendUnavailableError` (missing
package, GPU or provider) or an ``ArtifactError`` (e.g. no current ONNX export).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.runtime.artifact import ArtifactSpec, build_policy
from sdm_controller.runtime.backends.base import (
    BACKENDS,
    Backend,
    BackendUnavailableError,
    EngineInputError,
    InputSpec,
    NonFiniteError,
    observation_inputs,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "EngineInputError",
    "InputSpec",
    "NonFiniteError",
    "create_backend",
    "observation_inputs",
    "select_backend",
]

log = logging.getLogger("sdm_controller.runtime")


class _Policy:
    """Builds the torch policy at most once, for whichever candidates need it."""

    def __init__(self, spec: ArtifactSpec) -> None:
        self.spec = spec
        self._built: nn.Module | None = None

    def __call__(self) -> nn.Module:
        if self._built is None:
            self._built = build_policy(self.spec)
        return self._built


def create_backend(
    name: str,
    spec: ArtifactSpec,
    device: torch.device,
    *,
    fp16: bool = True,
    cuda_graphs: bool = False,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    policy: Callable[[], nn.Module] | None = None,
) -> Backend:
    """One named backend on ``device``, or a clear error saying why it cannot run here."""
    policy = policy or _Policy(spec)
    artifact = spec.path
    if name == "torch":
        from sdm_controller.runtime.backends.torch_backend import TorchBackend, check_cuda

        check_cuda(device, name)  # before loading weights
        return TorchBackend(policy(), spec.kind, device)
    if name == "onnxruntime":
        from sdm_controller.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, require_onnxruntime
        from sdm_controller.runtime.export import read_manifest

        require_onnxruntime(device)
        manifest = read_manifest(spec)
        return OnnxRuntimeBackend(artifact, manifest, device, threads=threads,
                                  cache_dir=Path(cache_dir) if cache_dir else None)
    if name == "tensorrt":
        from sdm_controller.runtime.backends.tensorrt_backend import TensorRTBackend, require_tensorrt

        require_tensorrt(device)
        try:
            return TensorRTBackend(policy(), spec, device, fp16=fp16, cuda_graphs=cuda_graphs, cache_dir=cache_dir)
        except (BackendUnavailableError, ArtifactError):
            raise
        except Exception as exc:  # noqa: BLE001 - torch-tensorrt's failures have no common base class
            raise BackendUnavailableError(f"TensorRT could not compile '{artifact}': {exc}") from exc
    raise ConfigError(f"backend '{name}' is unknown; expected 'auto' or one of {BACKENDS}")


def select_backend(
    requested: str,
    spec: ArtifactSpec,
    device: torch.device,
    **options: Any,
) -> Backend:
    """``requested`` itself, or for ``auto`` the best candidate that works (see module docstring)."""
    policy = _Policy(spec)
    if requested != "auto":
        return create_backend(requested, spec, device, policy=policy, **options)
    cpu = torch.device("cpu")
    candidates: list[tuple[str, torch.device]] = []
    if device.type == "cuda":
        candidates += [("tensorrt", device), ("onnxruntime", device), ("torch", device)]
    candidates += [("onnxruntime", cpu), ("torch", cpu)]
    skipped: list[str] = []
    if device.type != "cuda":
        skipped.append("GPU backends not considered: the device is 'cpu' (pass device='cuda' or 'auto' for them)")
    last_error: Exception | None = None
    for name, where in candidates:
        try:
            backend = create_backend(name, spec, where, policy=policy, **options)
        except (BackendUnavailableError, ArtifactError) as exc:
            if name == "torch" and isinstance(exc, ArtifactError):
                raise  # the weights themselves are bad: no backend can help
            skipped.append(f"skipped {name} on {where}: {exc}")
            last_error = exc
            continue
        for reason in skipped:
            log.info("backend auto: %s", reason)
        if where.type != device.type:  # asked for a GPU, runs on the CPU: worth more than an info line
            log.warning("backend auto: no GPU backend works here; picked %s", backend.description)
        else:
            log.info("backend auto: picked %s", backend.description)
        return backend
    raise BackendUnavailableError(f"no backend can run '{spec.path}': " + "; ".join(skipped)) from last_error
