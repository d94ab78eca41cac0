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


def check_backend(settings: NodeSettings, meta: Mapping[str, Any]) -> None:
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
        read_manifest(settings.artifact, dict(meta))


def verify_artifact(artifact: str, meta: Mapping[str, Any]) -> None:
    """Check in about a millisecond that the policy config parses and that the weights file matches
    policy.json: tensor names and shapes from the safetensors header, and a file size consistent
    with it (safetensors refuses a truncated file). ``ArtifactError`` if anything does not match.

    The node runs this in its parameter callback, beside the running engine, so it must not
    compete with an inference cycle: reading the tensors (``artifact.read_weights``) holds the GIL
    for hundreds of milliseconds, and hashing a large file takes a core for as long. The loader
    checks the sha256 when it reads the weights; a file with the right size and header but
    corrupt contents is therefore caught there (the change is then reverted), not here.
    """
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    from sdm_controller.errors import ArtifactError, ConfigError
    from sdm_controller.policy.configuration_diffusion import DiffusionConfig
    from sdm_controller.runtime.artifact import POLICY_JSON, WEIGHTS

    try:
        DiffusionConfig.from_dict(dict(meta["policy"]))
    except (TypeError, ConfigError) as exc:
        raise ArtifactError(f"the policy config in '{artifact}' is invalid: {exc}") from exc
    weights = Path(artifact) / meta["weights"].get("file", WEIGHTS)
    if not weights.is_file():
        raise ArtifactError(f"'{weights}' is missing")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            found = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"'{weights}' is not a readable safetensors file ({exc})") from exc
    listed = meta["weights"].get("tensors")
    if isinstance(listed, dict) and found != {key: list(shape) for key, shape in listed.items()}:
        raise ArtifactError(f"the tensors in '{weights}' do not match the names and shapes {POLICY_JSON} lists")
