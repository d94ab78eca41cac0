"""The reference backend: the policy's own modules in eager PyTorch (CPU or CUDA), fp32."""

from __future__ import annotations

import torch
from torch import nn

from sdm_controller.runtime.backends.base import Backend, BackendUnavailableError


def check_cuda(device: torch.device, backend: str) -> None:
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"backend '{backend}' on device '{device}' needs a CUDA GPU and a CUDA build of torch "
            f"(this torch is {torch.__version__} and torch.cuda.is_available() is False); use device 'cpu'"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"device '{device}' does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


class TorchBackend(Backend):
    """``policy.condition`` + ``policy.unet`` / ``policy.generate`` under the engine's inference mode."""

    name = "torch"

    def __init__(self, policy: nn.Module, kind: str, device: torch.device) -> None:
        check_cuda(device, self.name)
        self.policy = policy.to(device).eval()
        self.kind = kind
        self.device = device
        self.keys = policy.config.obs.names
        self.description = f"torch {torch.__version__} on {device}" + (
            f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
        )

    def encode(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.policy.condition(dict(zip(self.keys, inputs, strict=True)))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.kind != "teacher":
            return super().denoise(x, t, cond)
        return self.policy.unet(x, t, cond)

    def generate(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.kind == "teacher":
            return super().generate(z, cond)
        return self.policy.generate(z, cond)
