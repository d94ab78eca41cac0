"""The exported graphs: thin modules around a policy's own modules with flat tensor signatures.

Both the ONNX export and the TensorRT compile trace these, so the two compiled backends run the
same computation:

* :class:`EncoderGraph` ``(*observations) -> cond``: normalization of low-dim inputs, uint8 HWC →
  float CHW images, centre crop and the observation encoder, one part per observation kind
  (``EXPORT_ENCODERS``).
* :class:`DenoiserGraph` ``(sample, timestep, cond) -> model_output``: the teacher UNet; the
  timestep is a float32 (1,) tensor (exact for integers up to 2^24, and it avoids int64 inputs,
  which TensorRT only emulates).
* :class:`GeneratorGraph` ``(z, cond) -> chunk``: the one-step generator at its fixed timestep
  (and interval, for a MeanFlow UNet), including the epsilon → x0 conversion and the output
  scaling (consistency, MeanFlow's z - u) of ``OneStepPolicy.generate``; the chunk is normalized
  and not yet clipped.

All graphs have a static batch of 1. :func:`half_precision` makes an fp16 copy whose float
inputs are half too (the timestep stays float32).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sdm_controller.policy.conditional_unet1d import ConditionalUnet1D, SinusoidalStepEmbedding
from sdm_controller.policy.encoders import ENCODERS, crop_images
from sdm_controller.policy.observation_spec import IMAGE, LOW_DIM, ObservationStream
from sdm_controller.policy.resnet import SpatialSoftmax
from sdm_controller.runtime.backends.base import observation_inputs

ENCODER, DENOISER, GENERATOR = "encoder", "denoiser", "generator"
COND_NAME = "global_cond"


class _DtypeProbe(nn.Module):
    """Holds a scalar buffer whose dtype follows ``.half()`` / ``.float()`` of the parent."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("probe", torch.zeros(()), persistent=False)


class _StaticSpatialSoftmax(nn.Module):
    """``SpatialSoftmax`` with its keypoint grid precomputed for one feature-map size.

    The original builds the grid from the traced map size with ``linspace``, which the legacy
    ONNX exporter turns into float64 ops on dynamic shapes (TensorRT has no float64).
    """

    def __init__(self, pool: SpatialSoftmax, height: int, width: int) -> None:
        super().__init__()
        self.proj = pool.proj
        ys = torch.linspace(-1.0, 1.0, height)
        xs = torch.linspace(-1.0, 1.0, width)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("grid", torch.stack([grid_x.flatten(), grid_y.flatten()], dim=-1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(self.proj(x).flatten(2), dim=-1)  # (B, K, H*W)
        return (attention @ self.grid).flatten(1)  # (B, 2K): x, y per keypoint


class _LowDimGraph(nn.Module):
    """Normalization and the state MLP of all low-dim streams (``LowDimEncoder``)."""

    def __init__(self, policy: nn.Module, streams: Sequence[ObservationStream]) -> None:
        super().__init__()
        self.keys = [s.name for s in streams]
        self.normalizer = policy.normalizer
        self.mlp = getattr(policy.encoder, ENCODERS[LOW_DIM].attribute)

    def forward(self, inputs: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        state = torch.cat([self.normalizer.normalize(k, x.to(dtype)) for k, x in zip(self.keys, inputs, strict=True)],
                          dim=-1)
        return self.mlp(state)


class _ImageGraph(nn.Module):
    """uint8 HWC → [0, 1] CHW, a fixed centre crop and each camera's trunk (``ImageEncoders``)."""

    def __init__(self, policy: nn.Module, streams: Sequence[ObservationStream]) -> None:
        super().__init__()
        self.trunks = getattr(policy.encoder, ENCODERS[IMAGE].attribute)
        self.n_obs_steps = policy.config.n_obs_steps
        self.crops = {}
        self.pools = nn.ModuleDict()
        for stream in streams:
            name, (h, w) = stream.name, stream.shape[:2]
            # Ask crop_images itself which pixels it keeps, so the box cannot drift from it.
            index = torch.arange(h * w).reshape(1, 1, h, w)
            kept = crop_images(index, policy.encoder.crop_fraction, random=False)
            first = int(kept[0, 0, 0, 0])
            self.crops[name] = (first // w, first % w, kept.shape[2], kept.shape[3])
            trunk = self.trunks[name]
            param = next(trunk.parameters())
            with torch.no_grad():
                probe = torch.zeros(1, 3, kept.shape[2], kept.shape[3], dtype=param.dtype, device=param.device)
                fh, fw = trunk.features(probe).shape[-2:]
            self.pools[name] = _StaticSpatialSoftmax(trunk.pool, int(fh), int(fw))

    def forward(self, inputs: Sequence[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        features = []
        for (name, trunk), images in zip(self.trunks.items(), inputs, strict=True):
            # Same as images_to_float: (1, To, H, W, 3) uint8 → (1, To, 3, H, W) in [0, 1]. (An explicit
            # permutation: the legacy exporter writes movedim(-1, -3) with a negative axis ONNX rejects.)
            flat = (images.permute(0, 1, 4, 2, 3).to(dtype) / 255.0).flatten(0, 1)
            top, left, ch, cw = self.crops[name]
            flat = flat[:, :, top : top + ch, left : left + cw]
            keypoints = self.pools[name](trunk.features(flat))
            features.append(keypoints.reshape(1, self.n_obs_steps, -1))
        return torch.cat(features, dim=-1)


#: Observation kind -> the export-friendly twin of its encoder module (every size fixed at
#: construction, see ``EncoderGraph``).
EXPORT_ENCODERS: dict[str, type[nn.Module]] = {LOW_DIM: _LowDimGraph, IMAGE: _ImageGraph}


class EncoderGraph(nn.Module):
    """Raw observation tensors (1, To, ...) in :func:`observation_inputs` order → (1, cond_dim).

    Computes what ``policy.condition`` computes (each kind's preparation and encoder, in kind
    order) with every size fixed at construction: the TorchScript tracer turns sizes into
    tensors, which ``crop_images``' Python arithmetic cannot take and which make
    ``SpatialSoftmax`` export float64 ops. The engine's parity tests compare this graph with
    ``policy.condition``.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        spec = policy.config.obs
        self.counts = [len(spec.of_kind(kind)) for kind in spec.kinds()]
        self.parts = nn.ModuleList(EXPORT_ENCODERS[kind](policy, spec.of_kind(kind)) for kind in spec.kinds())
        self.dtype_probe = _DtypeProbe()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype_probe.probe.dtype
        features, start = [], 0
        for part, count in zip(self.parts, self.counts, strict=True):
            features.append(part(inputs[start : start + count], dtype))
            start += count
        return torch.cat(features, dim=-1).flatten(1)


class DenoiserGraph(nn.Module):
    """Teacher UNet ``(sample (1, H, Da), timestep (1,) float32, cond (1, C)) -> (1, H, Da)``."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.unet = policy.unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, cond)


class GeneratorGraph(nn.Module):
    """One-step generator ``(z (1, H, Da), cond (1, C)) -> normalized chunk (1, H, Da)``.

    Mirrors ``OneStepPolicy.generate`` with its constants folded in; the engine's parity tests
    compare the two on every export.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        spec = policy.generator_spec
        self.unet = policy.unet
        self.register_buffer("timestep", torch.tensor([float(spec.timestep)]), persistent=False)
        interval = None if spec.interval is None else torch.tensor([float(spec.interval)])
        self.register_buffer("interval", interval, persistent=False)
        self.epsilon = policy.config.prediction_type == "epsilon"
        self.alpha = self.sigma = 1.0
        if self.epsilon:
            alpha, sigma = policy.schedule.alpha_sigma(torch.tensor([spec.timestep]), 1)
            self.alpha, self.sigma = float(alpha), float(sigma)
        self.consistency = bool(spec.skip_scale or spec.out_scale != 1.0)
        self.skip_scale, self.out_scale = float(spec.skip_scale), float(spec.out_scale)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.interval is None:
            out = self.unet(z, self.timestep.float(), cond)
        else:
            out = self.unet(z, self.timestep.float(), cond, self.interval.float())
        if self.epsilon:
            out = (z - self.sigma * out) / self.alpha
        if self.consistency:
            out = self.skip_scale * z + self.out_scale * out
        return out


class _CastStepEmbedding(nn.Module):
    """The sinusoidal embedding computes in float32; cast its output to the module's dtype."""

    def __init__(self, embedding: SinusoidalStepEmbedding) -> None:
        super().__init__()
        self.embedding = embedding
        self.dtype_probe = _DtypeProbe()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.embedding(t).to(self.dtype_probe.probe.dtype)


def half_precision(policy: nn.Module) -> nn.Module:
    """An fp16 copy of ``policy`` that runs end to end in half (the original is untouched)."""
    twin = copy.deepcopy(policy)
    for module in twin.modules():
        if not isinstance(module, ConditionalUnet1D):
            continue
        for encoder in (module.step_encoder, module.interval_encoder):
            if encoder is not None and isinstance(encoder[0], SinusoidalStepEmbedding):
                encoder[0] = _CastStepEmbedding(encoder[0])
    return twin.half()


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy-style name: float32, float16, uint8

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class GraphSpec:
    """One graph to export or compile: its module and its named, static-shaped inputs/outputs."""

    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def example_inputs(self, device: torch.device | str = "cpu", seed: int = 0) -> list[torch.Tensor]:
        """Random inputs of the right shapes and dtypes (timesteps inside the schedule)."""
        gen = torch.Generator().manual_seed(seed)
        tensors = []
        for spec in self.inputs:
            dtype = getattr(torch, spec.dtype)
            if dtype == torch.uint8:
                tensor = torch.randint(0, 256, spec.shape, generator=gen, dtype=torch.uint8)
            elif spec.name == "timestep":
                tensor = torch.full(spec.shape, 7.0)
            else:
                tensor = torch.randn(spec.shape, generator=gen).to(dtype)
            tensors.append(tensor.to(device))
        return tensors


def graph_specs(
    policy: nn.Module, kind: str, float_dtype: str = "float32", uint8_images: bool = True
) -> list[GraphSpec]:
    """The two graphs of an artifact: encoder + denoiser (teacher) or encoder + generator (one-step)."""
    config = policy.config
    cond_dim = policy.encoder.output_dim
    chunk = (1, config.horizon, config.action_dim)
    obs = [
        TensorSpec(s.name, (1, *s.shape), float_dtype if s.is_float or not uint8_images else s.dtype.name)
        for s in observation_inputs(config)
    ]
    cond = TensorSpec(COND_NAME, (1, cond_dim), float_dtype)
    specs = [GraphSpec(ENCODER, EncoderGraph(policy).eval(), obs, [cond])]
    if kind == "teacher":
        inputs = [TensorSpec("sample", chunk, float_dtype), TensorSpec("timestep", (1,), "float32"), cond]
        specs.append(GraphSpec(DENOISER, DenoiserGraph(policy).eval(), inputs, [TensorSpec("model_output", chunk,
                                                                                           float_dtype)]))
    else:
        inputs = [TensorSpec("z", chunk, float_dtype), cond]
        specs.append(GraphSpec(GENERATOR, GeneratorGraph(policy).eval(), inputs, [TensorSpec("chunk", chunk,
                                                                                             float_dtype)]))
    return specs
