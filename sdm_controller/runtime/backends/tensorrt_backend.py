"""TensorRT through torch-tensorrt: the exported graphs compiled AOT (``ir="dynamo"``), batch 1.

``torch_tensorrt`` is imported lazily (it exists only on CUDA machines, with a TensorRT runtime
that pip pulls in; see ``requirements-gpu.txt``). Precision: fp16 by casting the modules and
their float inputs to half (torch-tensorrt >= 2.13 removed ``enabled_precisions``; TensorRT is
strongly typed), fp32 otherwise. The sampler loop stays in fp32 torch on the GPU; only network
inputs and outputs are cast.

Programs are built on first use and kept in the :class:`EngineCache`, keyed by the artifact's
weights sha256 and ``policy.json`` fingerprint, the GPU name and compute capability, and the
TensorRT / torch-tensorrt / torch versions; an entry that fails to load is rebuilt once.
Camera images enter the compiled encoder as floats in [0, 255] (converted from uint8 in
preallocated GPU buffers): TensorRT's uint8 network inputs are restricted to casts and are not
worth the risk for one element-wise conversion.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sdm_controller.runtime.artifact import ArtifactSpec
from sdm_controller.runtime.backends.base import Backend, BackendUnavailableError, observation_inputs
from sdm_controller.runtime.backends.graphs import ENCODER, GraphSpec, graph_specs, half_precision
from sdm_controller.runtime.engine_cache import CacheResult, EngineCache

log = logging.getLogger("sdm_controller.runtime")

NEEDS = "backend 'tensorrt' needs the package torch_tensorrt (pip install -r requirements-gpu.txt) and a CUDA GPU"


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("torch_tensorrt") is not None


def require_tensorrt(device: torch.device) -> None:
    """Raise BackendUnavailableError naming what is missing; import torch_tensorrt when present."""
    if not tensorrt_installed():
        raise BackendUnavailableError(f"{NEEDS}; torch_tensorrt is not installed")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"{NEEDS}; this torch ({torch.__version__}) sees no CUDA device")
    if device.type != "cuda":
        raise BackendUnavailableError(f"backend 'tensorrt' runs on a CUDA GPU, not on device '{device}'; "
                                      "pass device='cuda'")
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as exc:  # undefined symbols when torch and torch-tensorrt versions differ
        raise BackendUnavailableError(
            f"torch_tensorrt failed to import ({exc}); torch-tensorrt X.Y needs torch X.Y (torch is "
            f"{torch.__version__}): pip install -r requirements-gpu.txt"
        ) from exc


def _versions() -> dict[str, str]:
    import torch_tensorrt

    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except Exception:  # noqa: BLE001 - the version is only a cache key
        trt_version = "unknown"
    return {"tensorrt": trt_version, "torch_tensorrt": torch_tensorrt.__version__, "torch": torch.__version__}


def _gpu_keys(device: torch.device) -> dict[str, str]:
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, list | tuple) else output


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(
        self,
        policy: nn.Module,
        artifact: ArtifactSpec,
        device: torch.device,
        fp16: bool = True,
        cuda_graphs: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        require_tensorrt(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.kind = artifact.kind
        self.fp16 = fp16
        self.float_dtype = torch.float16 if fp16 else torch.float32
        precision = "float16" if fp16 else "float32"
        source = (half_precision(policy) if fp16 else policy).to(device).eval()
        specs = graph_specs(source, self.kind, float_dtype=precision, uint8_images=False)
        for spec in specs:  # buffers the graph wrappers add (dtype probe, timestep) follow too
            spec.module.to(device=device, dtype=self.float_dtype)
        self.camera_slots = [i for i, t in enumerate(observation_inputs(policy.config)) if not t.is_float]
        self.cache = EngineCache(cache_dir)
        self.base_keys = {
            "artifact_weights_sha256": artifact.weights.sha256,
            "artifact_meta_sha256": artifact.fingerprint,
            **_gpu_keys(device),
            "precision": precision,
            **_versions(),
        }
        self.label = artifact.path.resolve().name or "policy"
        self.modules: dict[str, Any] = {}
        self.cache_report: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        for spec in specs:
            module = self._program(spec)
            if cuda_graphs:
                import torch_tensorrt

                module = self._stack.enter_context(torch_tensorrt.runtime.enable_cudagraphs(module))
            self.modules[spec.name] = module
        self.cuda_graphs = cuda_graphs
        # Preallocated float copies of the uint8 camera buffers.
        self._images = {i: torch.empty(specs[0].inputs[i].shape, dtype=self.float_dtype, device=device)
                        for i in self.camera_slots}
        self._timestep = torch.zeros(1, dtype=torch.float32, device=device)
        self.graph = "denoiser" if self.kind == "teacher" else "generator"
        self.description = (f"tensorrt {self.base_keys['tensorrt']} (torch_tensorrt "
                            f"{self.base_keys['torch_tensorrt']}) on {device} ({self.base_keys['gpu']}), {precision}"
                            + (", CUDA graphs" if cuda_graphs else ""))

    # -- build / cache -----------------------------------------------------------------------
    def _program(self, spec: GraphSpec) -> Any:
        keys = {**self.base_keys, "graph": spec.name, "inputs": json.dumps([t.to_dict() for t in spec.inputs])}
        name = f"{self.label}-{spec.name}"
        example = spec.example_inputs(self.device)
        built: dict[str, Any] = {}

        def build() -> bytes:
            import torch_tensorrt

            log.info("building the TensorRT program for the %s graph (this takes a while once per GPU)", spec.name)
            module = torch_tensorrt.compile(spec.module, ir="dynamo", arg_inputs=example, min_block_size=1)
            built["module"] = module
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "program.ep"
                torch_tensorrt.save(module, str(path), arg_inputs=example)
                return path.read_bytes()

        result = self.cache.get_or_build(name, keys, build, suffix=".ep")
        module = built.get("module")
        if module is None:
            try:
                module = self._load(result.path)
            except Exception as exc:  # noqa: BLE001 - a stale program of any kind is rebuilt
                log.warning("cached TensorRT program %s failed to load (%s); rebuilding", result.path, exc)
                self.cache.invalidate(name, keys, suffix=".ep")
                result = self.cache.get_or_build(name, keys, build, suffix=".ep")
                module = built.get("module") or self._load(result.path)
        self._record(spec.name, result)
        return module

    @staticmethod
    def _load(path: Path) -> Any:
        import torch_tensorrt

        loaded = torch_tensorrt.load(str(path))
        return loaded.module() if hasattr(loaded, "module") else loaded

    def _record(self, graph: str, result: CacheResult) -> None:
        self.cache_report.append({"graph": graph, "path": str(result.path), "built": result.built,
                                  "reason": result.reason})

    # -- inference ---------------------------------------------------------------------------
    def _out(self, output: Any) -> torch.Tensor:
        out = _first(output)
        return out.clone() if self.cuda_graphs else out  # CUDA-graph outputs are reused buffers

    def encode(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        args = list(inputs)
        for i in self.camera_slots:
            args[i] = self._images[i].copy_(inputs[i])
        return self._out(self.modules[ENCODER](*args))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.kind != "teacher":
            return super().denoise(x, t, cond)
        self._timestep.copy_(t.reshape(-1)[:1])
        out = self.modules[self.graph](x.to(self.float_dtype), self._timestep, cond)
        return self._out(out).float()

    def generate(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.kind == "teacher":
            return super().generate(z, cond)
        return self._out(self.modules[self.graph](z.to(self.float_dtype), cond)).float()

    def close(self) -> None:
        self._stack.close()
        self.modules.clear()
