"""Policy artifacts: a folder with ``policy.json`` and ``weights.safetensors``.

Loading never runs code from the folder: JSON for everything a person reads (spec, horizons,
normalizer statistics, provenance), safetensors for tensors. The JSON records the weights'
sha256 and every tensor name and shape, so a swapped, truncated or foreign weights file is
reported as such instead of surfacing as a shape error deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sdm_controller import __version__
from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy

SCHEMA_VERSION = 1
POLICY_JSON = "policy.json"
WEIGHTS = "weights.safetensors"
KINDS = ("teacher", "one-step")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(
    path: str | Path,
    policy: DiffusionPolicy,
    kind: str,
    provenance: dict[str, Any],
    action: dict[str, Any] | None = None,
    control_period_s: float | None = None,
    extra: dict[str, Any] | None = None,
    state_names: dict[str, list[str]] | None = None,
) -> Path:
    """Write ``policy`` (its config, normalizer and weights) as an artifact folder.

    ``state_names`` (low-dim key -> joint names, from the dataset) lets the policy node fill that
    key from ``joint_states`` by name.
    """
    if kind not in KINDS:
        raise ArtifactError(f"artifact kind '{kind}' is unknown; expected one of {KINDS}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS))
    config = policy.config
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "policy": config.to_dict(),
        "observation": {
            "low_dim": config.obs.low_dim,
            "cameras": {name: list(shape) for name, shape in config.obs.cameras.items()},
            **({"state_names": state_names} if state_names else {}),
        },
        "action": {"dim": config.action_dim, **(action or {})},
        "horizons": {
            "n_obs_steps": config.n_obs_steps,
            "horizon": config.horizon,
            "n_action_steps": config.n_action_steps,
        },
        "control_period_s": control_period_s,
        "normalizer": policy.normalizer.stats,
        "provenance": {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "package_version": __version__, **provenance},
        "weights": {
            "file": WEIGHTS,
            "sha256": file_sha256(path / WEIGHTS),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
        },
        **(extra or {}),
    }
    (path / POLICY_JSON).write_text(json.dumps(meta, indent=2))
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """Parse and check ``policy.json``; the weights are not read."""
    path = Path(path)
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        raise ArtifactError(
            f"'{path}' looks like a pickle checkpoint; pickles can run code and are never loaded. "
            f"Give an artifact folder with {POLICY_JSON} and {WEIGHTS}"
        )
    if path.is_file():
        raise ArtifactError(f"'{path}' is a file; a policy artifact is a folder with {POLICY_JSON} and {WEIGHTS}")
    if not path.is_dir():
        raise ArtifactError(f"policy artifact '{path}' does not exist (expected a folder with {POLICY_JSON})")
    meta_path = path / POLICY_JSON
    if not meta_path.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f"; it holds {pickles}, which are pickles and are never loaded" if pickles else ""
        raise ArtifactError(f"'{path}' has no {POLICY_JSON}{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"'{meta_path}' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{meta_path}' must hold a JSON object")
    for key in ("schema_version", "kind", "policy", "normalizer", "weights"):
        if key not in meta:
            raise ArtifactError(f"'{meta_path}' lacks the key '{key}'")
    for key in ("policy", "normalizer", "weights"):
        if not isinstance(meta[key], dict):
            raise ArtifactError(f"'{meta_path}' key '{key}' must be a JSON object, got {type(meta[key]).__name__}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise ArtifactError(
            f"'{meta_path}' has schema_version {meta['schema_version']}; this package reads {SCHEMA_VERSION}"
        )
    if meta["kind"] not in KINDS:
        raise ArtifactError(f"'{meta_path}' has kind '{meta['kind']}'; expected one of {KINDS}")
    return meta


def read_weights(path: str | Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Load ``weights.safetensors`` and check it against the hash and shapes in ``meta``."""
    weights_path = Path(path) / meta["weights"].get("file", WEIGHTS)
    if not weights_path.is_file():
        raise ArtifactError(f"'{weights_path}' is missing")
    expected_hash = meta["weights"].get("sha256")
    if not expected_hash:
        raise ArtifactError(f"'{Path(path) / POLICY_JSON}' lacks weights.sha256; cannot verify '{weights_path}'")
    if file_sha256(weights_path) != expected_hash:
        raise ArtifactError(
            f"'{weights_path}' does not match {POLICY_JSON} (sha256 differs): the file is corrupt or from "
            "another policy"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"'{weights_path}' is not a readable safetensors file ({exc})") from exc
    recorded = meta["weights"].get("tensors")
    if isinstance(recorded, dict):
        found = {k: list(v.shape) for k, v in tensors.items()}
        listed = {k: list(v) for k, v in recorded.items()}
        if found != listed:
            extra = sorted(set(found) ^ set(listed))
            if extra:
                detail = f"tensor '{extra[0]}' is in only one of them"
            else:
                k = sorted(k for k in found if found[k] != listed[k])[0]
                detail = f"shape of '{k}' is {tuple(found[k])}, {POLICY_JSON} lists {tuple(listed[k])}"
            raise ArtifactError(f"weights in '{weights_path}' do not match {POLICY_JSON}: {detail}")
    return tensors


def build_policy(meta: dict[str, Any]) -> DiffusionPolicy:
    try:
        config = DiffusionConfig.from_dict(meta["policy"])
    except (TypeError, ConfigError) as exc:
        raise ArtifactError(f"the policy config in {POLICY_JSON} is invalid: {exc}") from exc
    return DiffusionPolicy(config, meta["normalizer"])


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Strict load with a message that names the mismatching tensors."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of '{k}' is {found[k]}, config expects {expected[k]}")
        raise ArtifactError(f"weights in '{where}' do not match {POLICY_JSON}: " + "; ".join(parts))
    module.load_state_dict(tensors, strict=True)


def load_teacher(path: str | Path) -> tuple[DiffusionPolicy, dict[str, Any]]:
    """A teacher artifact → (policy in eval mode, its metadata)."""
    meta = read_meta(path)
    if meta["kind"] != "teacher":
        raise ArtifactError(f"'{path}' is a {meta['kind']} artifact; a teacher artifact is needed here")
    policy = build_policy(meta)
    load_state(policy, read_weights(path, meta), str(path))
    return policy.eval(), meta


def load_one_step(path: str | Path):
    """A one-step artifact → (``OneStepPolicy`` in eval mode, its metadata)."""
    from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy

    meta = read_meta(path)
    if meta["kind"] != "one-step":
        raise ArtifactError(f"'{path}' is a {meta['kind']} artifact; a one-step artifact is needed here")
    if not isinstance(meta.get("generator"), dict):
        raise ArtifactError(f"'{Path(path) / POLICY_JSON}' lacks the 'generator' object of a one-step artifact")
    try:
        config = DiffusionConfig.from_dict(meta["policy"])
        policy = OneStepPolicy(config, meta["normalizer"], GeneratorSpec(**meta["generator"]))
    except (TypeError, ConfigError) as exc:
        raise ArtifactError(f"the policy config in '{path}' is invalid: {exc}") from exc
    load_state(policy, read_weights(path, meta), str(path))
    return policy.eval(), meta


def load_policy(path: str | Path):
    """Either kind → (policy, metadata); both have ``predict_action``."""
    meta = read_meta(path)
    return load_teacher(path) if meta["kind"] == "teacher" else load_one_step(path)
