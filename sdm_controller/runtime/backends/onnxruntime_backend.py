"""onnxruntime over the artifact's exported graphs (``encoder.onnx`` + denoiser or generator).

On device ``cpu`` only the CPU execution provider is used. On ``cuda`` the TensorRT and CUDA
execution providers are put first when onnxruntime reports them (``onnxruntime-gpu``), with the
CPU provider as the fallback for nodes they do not take; the TensorRT provider caches its
engines under the engine cache folder. The engine's tensors stay on the CPU either way (the
sampler loop is a few element-wise operations; onnxruntime moves the inputs).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdm_controller.runtime.backends.base import Backend, BackendUnavailableError
from sdm_controller.runtime.backends.graphs import ENCODER
from sdm_controller.runtime.engine_cache import default_cache_dir

log = logging.getLogger("sdm_controller.runtime")

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def available_providers() -> list[str]:
    if not onnxruntime_installed():
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


def gpu_providers() -> list[str]:
    return [p for p in available_providers() if p in GPU_PROVIDERS]


def require_onnxruntime(device: torch.device) -> None:
    if not onnxruntime_installed():
        raise BackendUnavailableError(
            "backend 'onnxruntime' needs the package onnxruntime (pip install -r requirements.txt; "
            "onnxruntime-gpu for CUDA)"
        )
    if device.type == "cuda" and not gpu_providers():
        raise BackendUnavailableError(
            f"backend 'onnxruntime' on device '{device}' needs onnxruntime-gpu (CUDA or TensorRT execution "
            f"provider); this onnxruntime offers {available_providers()}. Use device 'cpu'"
        )


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        artifact: Path,
        manifest: dict[str, Any],
        device: torch.device,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        require_onnxruntime(device)
        import onnxruntime as ort

        self.device = torch.device("cpu")  # where the engine's tensors live (see module docstring)
        self.kind = manifest["kind"]
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            index = device.index or 0
            gpu: list[Any] = []
            for provider in gpu_providers():
                if provider == "TensorrtExecutionProvider":
                    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
                    gpu.append((provider, {"device_id": index, "trt_engine_cache_enable": True,
                                           "trt_engine_cache_path": str(root / "onnxruntime-trt")}))
                else:
                    gpu.append((provider, {"device_id": index}))
            providers = gpu + providers
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {}
        self.input_names: dict[str, list[str]] = {}
        self.output_names: dict[str, str] = {}
        for name, entry in manifest["graphs"].items():
            path = artifact / entry["file"]
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise BackendUnavailableError(f"onnxruntime could not load '{path}': {exc}") from exc
            self.sessions[name] = session
            self.input_names[name] = [t["name"] for t in entry["inputs"]]
            self.output_names[name] = entry["outputs"][0]["name"]
        used = self.sessions[ENCODER].get_providers()
        self.description = f"onnxruntime {ort.__version__} on {device} [{', '.join(used)}]"
        if device.type == "cuda" and not any(p in used for p in GPU_PROVIDERS):
            raise BackendUnavailableError(f"onnxruntime did not start a GPU provider for '{device}' (it uses {used})")
        self.providers = used
        self.graph = "denoiser" if self.kind == "teacher" else "generator"
        self._timestep = np.zeros(1, dtype=np.float32)

    def _run(self, name: str, arrays: list[np.ndarray]) -> torch.Tensor:
        feeds = dict(zip(self.input_names[name], arrays, strict=True))
        out = self.sessions[name].run([self.output_names[name]], feeds)[0]
        return torch.from_numpy(out)

    def encode(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self._run(ENCODER, [x.numpy() for x in inputs])

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.kind != "teacher":
            return super().denoise(x, t, cond)
        self._timestep[0] = float(t.reshape(-1)[0])  # static batch 1
        return self._run(self.graph, [x.contiguous().numpy(), self._timestep, cond.numpy()])

    def generate(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.kind == "teacher":
            return super().generate(z, cond)
        return self._run(self.graph, [z.contiguous().numpy(), cond.numpy()])

    def close(self) -> None:
        self.sessions.clear()
