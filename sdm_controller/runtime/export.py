"""Export a policy artifact to ONNX (and, on a CUDA machine, build its TensorRT programs).

``python -m sdm_controller export --artifact DIR [--opset 17] [--tensorrt]``

File names: DESIGN.md speaks of one ``policy.onnx``. The export writes TWO graphs instead, so that
the engine can run the encoder once and the UNet ``steps`` times with the sampler loop in torch:

* ``encoder.onnx``: raw observations → global condition. Inputs are named as the observation
  keys in ``policy.json`` (low-dim float32 ``(1, n_obs_steps, dim)``, cameras uint8
  ``(1, n_obs_steps, H, W, 3)``); the output is ``global_cond`` ``(1, cond_dim)``. Normalization,
  image conversion and the centre crop are inside the graph.
* ``denoiser.onnx`` (teacher): ``sample (1, horizon, action_dim)``, ``timestep (1,)`` float32,
  ``global_cond`` → ``model_output`` (epsilon or x0, as the teacher predicts).
* ``generator.onnx`` (one-step): ``z``, ``global_cond`` → ``chunk``, the normalized, unclipped
  action chunk (epsilon → x0 conversion and consistency scaling included).
* ``onnx.json``: file names, input/output names, shapes and dtypes, opset, the sha256 of each
  graph file, the sha256 of ``weights.safetensors`` and a fingerprint of the ``policy.json``
  parts baked into the graphs (config, normalizer, generator). A loader refuses an export whose
  weights or fingerprint no longer match (re-run ``export``) or whose graph files changed.

All graphs have a static batch of 1 and use the legacy TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``), opset 17 or newer. ``export_onnx`` checks every
graph against torch on random inputs through onnxruntime before writing ``onnx.json``.

TensorRT programs are specific to a GPU and a TensorRT version, so they are never stored in the
artifact: ``--tensorrt`` builds them into the engine cache (``engine_cache.py``), where
``Engine.load(..., backend="tensorrt")`` finds them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.runtime.artifact import POLICY_JSON, ArtifactSpec, build_policy, file_sha256, read_spec
from sdm_controller.runtime.backends.graphs import COND_NAME, ENCODER, graph_specs

log = logging.getLogger("sdm_controller.runtime")

ONNX_JSON = "onnx.json"
MANIFEST_VERSION = 1
MIN_OPSET = 17
DEFAULT_OPSET = 17
#: export-time check of each ONNX graph against torch (fp32, random inputs)
VERIFY_TOLERANCE = 1e-3


def export_hint(artifact: str | Path) -> str:
    return f"python -m sdm_controller export --artifact {artifact}"


def graph_file(name: str) -> str:
    return f"{name}.onnx"


def export_onnx(artifact: str | Path, opset: int = DEFAULT_OPSET, verify: bool = True) -> dict[str, Any]:
    """Write the artifact's ONNX graphs and ``onnx.json``; returns the manifest."""
    import onnx  # noqa: F401 - the exporter needs it; fail here with a clear message if absent

    artifact = Path(artifact)
    if opset < MIN_OPSET:
        raise ConfigError(f"ONNX opset {opset} is too old; use {MIN_OPSET} or newer (GroupNorm, TensorRT fp16)")
    spec = read_spec(artifact)
    policy = build_policy(spec)  # verifies the weights against policy.json
    if COND_NAME in spec.observation.names:
        raise ArtifactError(f"observation key '{COND_NAME}' clashes with the encoder output name; rename it")
    specs = graph_specs(policy, spec.kind)
    started = time.perf_counter()
    manifest: dict[str, Any] = {
        "format_version": MANIFEST_VERSION,
        "kind": spec.kind,
        "opset": opset,
        "weights_sha256": file_sha256(spec.weights_path),
        "meta_sha256": spec.fingerprint,
        "exporter": f"torch.onnx legacy (dynamo=False), torch {torch.__version__}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "graphs": {},
    }
    (artifact / ONNX_JSON).unlink(missing_ok=True)  # a half-finished export must read as "no export"
    with tempfile.TemporaryDirectory(dir=artifact, prefix=".onnx-export-") as tmp:
        for spec in specs:
            path = Path(tmp) / graph_file(spec.name)
            example = spec.example_inputs()
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    spec.module,
                    tuple(example),
                    str(path),
                    input_names=[t.name for t in spec.inputs],
                    output_names=[t.name for t in spec.outputs],
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
            entry = {
                "file": graph_file(spec.name),
                "sha256": file_sha256(path),
                "inputs": [t.to_dict() for t in spec.inputs],
                "outputs": [t.to_dict() for t in spec.outputs],
            }
            if verify:
                entry["verified_max_abs_diff"] = _verify(spec, path)
            manifest["graphs"][spec.name] = entry
        for spec in specs:
            os.replace(Path(tmp) / graph_file(spec.name), artifact / graph_file(spec.name))
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    tmp_json = artifact / f".{ONNX_JSON}.tmp"
    tmp_json.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp_json, artifact / ONNX_JSON)
    log.info("exported %s to ONNX (opset %d) in %.1f s", artifact, opset, manifest["export_seconds"])
    return manifest


def _verify(spec, path: Path) -> float:
    """Run the exported graph in onnxruntime (CPU) and compare with torch; returns max |diff|."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    example = spec.example_inputs(seed=1)
    with torch.inference_mode():
        expected = spec.module(*example).float().numpy()
    got = session.run(None, {t.name: x.numpy() for t, x in zip(spec.inputs, example, strict=True)})[0]
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    if not diff <= VERIFY_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
        raise ArtifactError(
            f"the exported {spec.name} graph differs from torch by {diff:.3g} (shape {got.shape} vs "
            f"{expected.shape}); the ONNX export of this model is wrong, do not use it"
        )
    return diff


def read_manifest(spec: ArtifactSpec, check_files: bool = True) -> dict:
    """``onnx.json`` of an artifact, checked to be current; ArtifactError says how to fix it."""
    artifact = spec.path
    path = artifact / ONNX_JSON
    hint = export_hint(artifact)
    if not path.is_file():
        raise ArtifactError(f"'{artifact}' has no ONNX export ({ONNX_JSON} is missing); run `{hint}` first")
    try:
        manifest = json.loads(path.read_text())
        graphs = manifest["graphs"]
        recorded_weights = manifest["weights_sha256"]
        recorded_meta = manifest["meta_sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ArtifactError(f"'{path}' is unreadable ({exc!r}); run `{hint}` again") from exc
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ArtifactError(f"'{path}' has format_version {manifest.get('format_version')}; "
                            f"this package reads {MANIFEST_VERSION}; run `{hint}` again")
    weights = spec.weights_path
    if not weights.is_file():
        raise ArtifactError(f"'{weights}' is missing")
    if file_sha256(weights) != recorded_weights or spec.fingerprint != recorded_meta:
        raise ArtifactError(
            f"the ONNX export in '{artifact}' is stale: it was made from other weights or another "
            f"{POLICY_JSON} than the artifact holds now; run `{hint}` again"
        )
    expected = {ENCODER, "denoiser" if spec.kind == "teacher" else "generator"}
    if set(graphs) != expected:
        raise ArtifactError(f"'{path}' lists graphs {sorted(graphs)}, a {spec.kind} artifact needs "
                            f"{sorted(expected)}; run `{hint}` again")
    if check_files:
        for name, entry in graphs.items():
            file = artifact / entry["file"]
            if not file.is_file():
                raise ArtifactError(f"'{file}' ({name} graph) is missing; run `{hint}` again")
            if file_sha256(file) != entry["sha256"]:
                raise ArtifactError(f"'{file}' does not match {ONNX_JSON} (sha256 differs): it is corrupt or was "
                                    f"replaced; run `{hint}` again")
    return manifest


def remove_export(artifact: str | Path) -> None:
    """Delete the ONNX files and ``onnx.json`` of an artifact (nothing else)."""
    artifact = Path(artifact)
    for name in (ONNX_JSON, "encoder.onnx", "denoiser.onnx", "generator.onnx"):
        (artifact / name).unlink(missing_ok=True)
    for tmp in artifact.glob(".onnx-export-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def build_tensorrt(
    artifact: str | Path, device: str = "cuda", fp16: bool = True, cache_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Build (or find) the artifact's TensorRT programs in the engine cache; one row per graph."""
    from sdm_controller.runtime.backends.tensorrt_backend import TensorRTBackend, require_tensorrt

    require_tensorrt(torch.device(device))
    spec = read_spec(artifact)
    backend = TensorRTBackend(build_policy(spec), spec, torch.device(device), fp16=fp16, cache_dir=cache_dir)
    rows = backend.cache_report
    backend.close()
    return rows
