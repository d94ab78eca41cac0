"""The engine interface the controller calls, and loading an engine for a set of node settings.

``PolicyRunner`` is the part of :class:`sdm_controller.runtime.engine.Engine` the controller
uses; tests substitute small fakes (a runner returning NaN, a slow runner) through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from sdm_controller.control.settings import NodeSettings
from sdm_controller.errors import SdmError
from sdm_controller.runtime.artifact import ArtifactSpec


class PolicyRunner(Protocol):
    """``runner(obs) -> (n_action_steps, action_dim)`` float32 actions in raw units."""

    backend_name: str
    last_timing: dict[str, float]  # at least "total_ms"

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None: ...


def load_runner(settings: NodeSettings) -> Any:
    """Load the artifact on the requested backend and warm it up (several seconds for TensorRT)."""
    from sdm_controller.runtime.engine import Engine

    engine = Engine.load(settings.artifact, backend=settings.backend, device=settings.device,
                         steps=settings.sampler_steps, method=settings.sampler)
    try:
        engine.warmup()
    except BaseException:
        engine.close()
        raise
    return engine


def check_backend(settings: NodeSettings, spec: ArtifactSpec) -> None:
    """Fail fast (``SdmError``) when the requested backend cannot run here, before a slow load.

    Only the cheap checks: packages, GPU, and for onnxruntime a current ONNX export. Whatever this
    does not catch surfaces when the engine loads.
    """
    import torch

    from sdm_controller.runtime.engine import parse_device

    device = parse_device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SdmError(f"parameter 'device' is '{settings.device}' but this machine has no usable CUDA device")
    if settings.backend == "tensorrt":
        from sdm_controller.runtime.backends.tensorrt_backend import require_tensorrt

        require_tensorrt(device)
    elif settings.backend == "onnxruntime":
        from sdm_controller.runtime.backends.onnxruntime_backend import require_onnxruntime
        from sdm_controller.runtime.export import read_manifest

        require_onnxruntime(device)
        read_manifest(spec)
