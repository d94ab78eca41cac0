"""Policy artifacts: a folder with ``policy.json`` and ``weights.safetensors``.

Loading never runs code from the folder: JSON for everything a person reads (spec, horizons,
normalizer statistics, provenance), safetensors for tensors. The JSON records the weights'
sha256 and every tensor name and shape, so a swapped, truncated or foreign weights file is
reported as such instead of surfacing as a shape error deep inside torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from sdm_controller import __version__
from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.policy.observation_spec import ObservationSpec

SCHEMA_VERSION = 2
#: Schema 1 (before observation streams): ``observation`` and ``policy.obs`` hold per-kind groups
#: (``low_dim``, ``cameras``); everything else is the same.
READABLE_SCHEMAS = (1, 2)
POLICY_JSON = "policy.json"
WEIGHTS = "weights.safetensors"
KINDS = ("teacher", "one-step")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
LIMIT_KEYS = ("lower", "upper", "velocity")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ActionSpec:
    """What the action vector is: its length, and where known the joints, space and limits."""

    dim: int
    names: tuple[str, ...] = ()  # commanded joints in vector order; empty where the data had none
    space: str | None = None  # e.g. "joint_position"
    lower: tuple[float, ...] | None = None  # per-joint bounds and velocity limits, in action units
    upper: tuple[float, ...] | None = None
    velocity: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dim": self.dim}
        if self.names:
            out["names"] = list(self.names)
        if self.space is not None:
            out["space"] = self.space
        limits = {k: list(getattr(self, k)) for k in LIMIT_KEYS if getattr(self, k) is not None}
        if limits:
            out["limits"] = limits
        return out


@dataclass(frozen=True)
class WeightsRecord:
    """The weights file an artifact names, its sha256 and every tensor's shape."""

    file: str
    sha256: str | None
    tensors: dict[str, tuple[int, ...]] | None


@dataclass(frozen=True)
class ArtifactSpec:
    """Everything ``policy.json`` says, parsed and checked once: the artifact contract in one value.

    The engine, its backends, the export and the policy node take this instead of reading the
    JSON themselves. ``fingerprint`` covers the parts that compiled graphs bake in (kind, config,
    normalizer, generator), as written, so an edit to any of them makes an export stale.
    """

    path: Path
    schema_version: int
    kind: str
    config: DiffusionConfig
    state_names: dict[str, tuple[str, ...]]  # low-dim stream -> joint names filling it (may be empty)
    action: ActionSpec
    control_period_s: float | None
    normalizer: dict[str, dict[str, list[float]]]
    generator: GeneratorSpec | None  # how a one-step network is called (None for a teacher)
    provenance: dict[str, Any]
    weights: WeightsRecord
    fingerprint: str

    @property
    def observation(self) -> ObservationSpec:
        return self.config.obs

    @property
    def policy_json(self) -> Path:
        return self.path / POLICY_JSON

    @property
    def weights_path(self) -> Path:
        return self.path / self.weights.file

    def where(self) -> str:
        return f"'{self.policy_json}'"

    @classmethod
    def from_json(cls, meta: dict[str, Any], path: str | Path = "") -> ArtifactSpec:
        """Parse the object of a ``policy.json`` (either schema); every problem is one ArtifactError."""
        return _parse(meta, Path(path))


def save_artifact(
    path: str | Path,
    policy: DiffusionPolicy,
    kind: str,
    provenance: dict[str, Any],
    action: ActionSpec | dict[str, Any] | None = None,
    control_period_s: float | None = None,
    state_names: dict[str, list[str]] | None = None,
) -> Path:
    """Write ``policy`` (its config, normalizer and weights) as an artifact folder.

    ``state_names`` (low-dim stream -> joint names, from the dataset) lets the policy node fill that
    stream from ``joint_states`` by name. A one-step policy's generator settings are written from
    the policy itself. The written ``policy.json`` is read back through the same parser that loads
    it, so an artifact that would not load is never left behind as if it were whole.
    """
    if kind not in KINDS:
        raise ArtifactError(f"artifact kind '{kind}' is unknown; expected one of {KINDS}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS))
    config = policy.config
    if isinstance(action, ActionSpec):
        action = action.to_dict()
    generator = getattr(policy, "generator_spec", None)
    if (kind == "one-step") != (generator is not None):
        needed = "OneStepPolicy" if kind == "one-step" else "DiffusionPolicy"
        raise ArtifactError(f"a {kind} artifact is written from a {needed}, got {type(policy).__name__}")
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "policy": config.to_dict(),
        "observation": {
            **config.obs.to_dict(),
            **({"state_names": {k: list(v) for k, v in state_names.items()}} if state_names else {}),
        },
        "action": {"dim": config.action_dim, **{k: v for k, v in (action or {}).items() if v is not None}},
        "horizons": {
            "n_obs_steps": config.n_obs_steps,
            "horizon": config.horizon,
            "n_action_steps": config.n_action_steps,
        },
        "control_period_s": control_period_s,
        "normalizer": policy.normalizer.stats,
        **({"generator": generator.to_dict()} if kind == "one-step" and generator is not None else {}),
        "provenance": {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "package_version": __version__, **provenance},
        "weights": {
            "file": WEIGHTS,
            "sha256": file_sha256(path / WEIGHTS),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
        },
    }
    ArtifactSpec.from_json(meta, path)
    (path / POLICY_JSON).write_text(json.dumps(meta, indent=2))
    return path


def read_spec(path: str | Path) -> ArtifactSpec:
    """Parse and check ``policy.json`` into an :class:`ArtifactSpec`; the weights are not read."""
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
    return _parse(meta, path)


def meta_fingerprint(meta: dict[str, Any]) -> str:
    """sha256 of the ``policy.json`` parts that an export bakes into its graphs, as written."""
    baked = {key: meta.get(key) for key in ("kind", "policy", "normalizer", "generator")}
    return hashlib.sha256(json.dumps(baked, sort_keys=True).encode()).hexdigest()


def _parse(meta: Any, path: Path) -> ArtifactSpec:
    where = f"'{path / POLICY_JSON}'"
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where} must hold a JSON object")
    for key in ("schema_version", "kind", "policy", "normalizer", "weights"):
        if key not in meta:
            raise ArtifactError(f"{where} lacks the key '{key}'")
    for key in ("policy", "normalizer", "weights"):
        if not isinstance(meta[key], dict):
            raise ArtifactError(f"{where} key '{key}' must be a JSON object, got {type(meta[key]).__name__}")
    if meta["schema_version"] not in READABLE_SCHEMAS:
        raise ArtifactError(
            f"{where} has schema_version {meta['schema_version']}; this package reads {list(READABLE_SCHEMAS)}"
        )
    kind = meta["kind"]
    if kind not in KINDS:
        raise ArtifactError(f"{where} has kind '{kind}'; expected one of {KINDS}")
    try:
        config = DiffusionConfig.from_dict(meta["policy"])
    except (TypeError, ValueError, ConfigError) as exc:
        raise ArtifactError(f"the policy config in {where} is invalid: {exc}") from exc
    state_names = _state_names(meta.get("observation"), config.obs, where)
    action = _action(meta.get("action"), config.action_dim, where)
    horizons = meta.get("horizons")
    if horizons is not None:
        ours = {"n_obs_steps": config.n_obs_steps, "horizon": config.horizon, "n_action_steps": config.n_action_steps}
        if not isinstance(horizons, dict) or any(horizons.get(k, v) != v for k, v in ours.items()):
            raise ArtifactError(f"{where} horizons {horizons} disagree with the policy config's {ours}")
    period = meta.get("control_period_s")
    if period is not None and (isinstance(period, bool) or not isinstance(period, int | float)
                               or not math.isfinite(period) or period <= 0):
        raise ArtifactError(f"{where} has control_period_s {period!r}; expected a positive number of seconds")
    generator = None
    if meta.get("generator") is not None:
        if not isinstance(meta["generator"], dict):
            raise ArtifactError(f"{where} key 'generator' must be a JSON object")
        try:
            generator = GeneratorSpec(**meta["generator"])
        except TypeError as exc:
            raise ArtifactError(f"the generator settings in {where} are invalid: {exc}") from exc
    weights = meta["weights"]
    tensors = weights.get("tensors")
    provenance = meta.get("provenance")
    return ArtifactSpec(
        path=path,
        schema_version=int(meta["schema_version"]),
        kind=kind,
        config=config,
        state_names=state_names,
        action=action,
        control_period_s=None if period is None else float(period),
        normalizer=meta["normalizer"],
        generator=generator,
        provenance=provenance if isinstance(provenance, dict) else {},
        weights=WeightsRecord(
            file=str(weights.get("file", WEIGHTS)),
            sha256=weights.get("sha256"),
            tensors={k: tuple(v) for k, v in tensors.items()} if isinstance(tensors, dict) else None,
        ),
        fingerprint=meta_fingerprint(meta),
    )


def _state_names(observation: Any, obs: ObservationSpec, where: str) -> dict[str, tuple[str, ...]]:
    """``observation.state_names``, checked against the config's low-dim streams (names optional)."""
    if observation is None:
        return {}
    if not isinstance(observation, dict):
        raise ArtifactError(f"{where} key 'observation' must be a JSON object")
    listed = {k: v for k, v in observation.items() if k != "state_names"}
    try:
        if listed and ObservationSpec.from_dict(listed) != obs:
            raise ArtifactError(f"{where} observation {listed} disagrees with the policy config's {obs}")
    except ConfigError as exc:
        raise ArtifactError(f"{where} observation is invalid: {exc}") from exc
    raw = observation.get("state_names")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where} observation.state_names must map low-dim streams to joint names")
    dims = obs.low_dim
    names_by_key: dict[str, tuple[str, ...]] = {}
    for key, names in raw.items():
        if key not in dims:
            raise ArtifactError(f"{where} observation.state_names names '{key}', which is not a low-dim stream "
                                f"({sorted(dims)})")
        dim = dims[key]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ArtifactError(f"{where} observation.state_names['{key}'] must be a list of {dim} joint names")
        if len(names) != dim:
            raise ArtifactError(f"{where} observation.state_names['{key}'] has {len(names)} names; stream "
                                f"'{key}' has {dim} values")
        if len(set(names)) != len(names):
            raise ArtifactError(f"{where} observation.state_names['{key}'] repeats a joint name")
        names_by_key[str(key)] = tuple(names)
    return names_by_key


def _action(action: Any, dim: int, where: str) -> ActionSpec:
    if action is None:
        return ActionSpec(dim)
    if not isinstance(action, dict):
        raise ArtifactError(f"{where} key 'action' must be a JSON object")
    if action.get("dim", dim) != dim:
        raise ArtifactError(f"{where} action.dim is {action.get('dim')}; the policy config's action_dim is {dim}")
    names = action.get("names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ArtifactError(f"{where} action.names must be the list of commanded joint names")
        if len(names) != dim:
            raise ArtifactError(f"{where} action.names has {len(names)} names; the action dimension is {dim}")
        if len(set(names)) != len(names):
            raise ArtifactError(f"{where} action.names repeats a joint name")
    space = action.get("space")
    if space is not None and not isinstance(space, str):
        raise ArtifactError(f"{where} action.space must be a string such as 'joint_position'")
    limits = action.get("limits") or {}
    if not isinstance(limits, dict):
        raise ArtifactError(f"{where} action.limits must be an object with lower, upper and velocity lists")
    bounds: dict[str, tuple[float, ...] | None] = {}
    for key in LIMIT_KEYS:
        value = limits.get(key)
        if value is None:
            bounds[key] = None
            continue
        if (not isinstance(value, list) or len(value) != dim
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            raise ArtifactError(f"{where} action.limits.{key} must list {dim} numbers (one per joint)")
        bounds[key] = tuple(float(v) for v in value)
    return ActionSpec(dim, tuple(names or ()), space, bounds["lower"], bounds["upper"], bounds["velocity"])


def read_weights(spec: ArtifactSpec) -> dict[str, torch.Tensor]:
    """Load the weights file and check it against the hash and shapes in ``policy.json``."""
    weights_path = spec.weights_path
    if not weights_path.is_file():
        raise ArtifactError(f"'{weights_path}' is missing")
    if not spec.weights.sha256:
        raise ArtifactError(f"{spec.where()} lacks weights.sha256; cannot verify '{weights_path}'")
    if file_sha256(weights_path) != spec.weights.sha256:
        raise ArtifactError(
            f"'{weights_path}' does not match {POLICY_JSON} (sha256 differs): the file is corrupt or from "
            "another policy"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"'{weights_path}' is not a readable safetensors file ({exc})") from exc
    recorded = spec.weights.tensors
    if recorded is not None:
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


def check_weights_header(spec: ArtifactSpec) -> None:
    """Check in about a millisecond that the weights file matches ``policy.json``: tensor names and
    shapes from the safetensors header, and a file size consistent with it (safetensors refuses a
    truncated file). ``ArtifactError`` if anything does not match.

    For callers that must not compete with an inference cycle (the policy node's parameter
    callback): reading the tensors (``read_weights``) holds the GIL for hundreds of milliseconds,
    and hashing a large file takes a core for as long. ``read_weights`` checks the sha256 when the
    weights are loaded; a file with the right size and header but corrupt contents is caught there.
    """
    weights = spec.weights_path
    if not weights.is_file():
        raise ArtifactError(f"'{weights}' is missing")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            found = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"'{weights}' is not a readable safetensors file ({exc})") from exc
    listed = spec.weights.tensors
    if listed is not None and found != {key: list(shape) for key, shape in listed.items()}:
        raise ArtifactError(f"the tensors in '{weights}' do not match the names and shapes {POLICY_JSON} lists")


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


def build_policy(spec: ArtifactSpec) -> DiffusionPolicy | OneStepPolicy:
    """The network an artifact holds, its weights checked and loaded, in eval mode."""
    if spec.kind == "teacher":
        policy: DiffusionPolicy | OneStepPolicy = DiffusionPolicy(spec.config, spec.normalizer)
    else:
        if spec.generator is None:
            raise ArtifactError(f"{spec.where()} lacks the 'generator' object of a one-step artifact")
        try:
            policy = OneStepPolicy(spec.config, spec.normalizer, spec.generator)
        except ConfigError as exc:
            raise ArtifactError(f"the policy config in '{spec.path}' is invalid: {exc}") from exc
    load_state(policy, read_weights(spec), str(spec.path))
    return policy.eval()


def load_teacher(path: str | Path) -> tuple[DiffusionPolicy, ArtifactSpec]:
    """A teacher artifact → (policy in eval mode, its spec)."""
    spec = read_spec(path)
    if spec.kind != "teacher":
        raise ArtifactError(f"'{path}' is a {spec.kind} artifact; a teacher artifact is needed here")
    return build_policy(spec), spec


def load_one_step(path: str | Path) -> tuple[OneStepPolicy, ArtifactSpec]:
    """A one-step artifact → (``OneStepPolicy`` in eval mode, its spec)."""
    spec = read_spec(path)
    if spec.kind != "one-step":
        raise ArtifactError(f"'{path}' is a {spec.kind} artifact; a one-step artifact is needed here")
    return build_policy(spec), spec


def load_policy(path: str | Path) -> tuple[DiffusionPolicy | OneStepPolicy, ArtifactSpec]:
    """Either kind → (policy, spec); both policies have ``predict_action``."""
    spec = read_spec(path)
    return build_policy(spec), spec
