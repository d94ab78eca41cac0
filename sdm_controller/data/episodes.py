"""Episodes on disk: a zarr group with observations per key, actions and episode ends.

Layout (all arrays share the frame axis N)::

    <name>.zarr/
      data/action            (N, Da) float32
      data/obs/<key>         (N, d) float32   low-dim observation
      data/obs/<camera>      (N, H, W, 3) uint8   camera image, upright RGB
      meta/episode_ends      (E,) int64   exclusive end frame of each episode
      attrs: format, obs_spec (streams grouped by kind: "low_dim" {key: d}, "cameras" {name: [3, H, W]}),
             action names, control period, source

The content hash covers every array and the spec, so a policy artifact can name exactly which
data it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from sdm_controller.errors import ConfigError, DatasetError
from sdm_controller.policy.observation_spec import IMAGE, LOW_DIM, ObservationSpec

FORMAT = "sdm_controller.episodes/1"


@dataclass
class EpisodeSet:
    """All episodes of a dataset in memory: frames concatenated, split by ``episode_ends``."""

    obs: dict[str, np.ndarray]
    action: np.ndarray
    episode_ends: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.action)
        for key, value in self.obs.items():
            if len(value) != n:
                raise DatasetError(f"observation '{key}' has {len(value)} frames but there are {n} actions")
        ends = np.asarray(self.episode_ends, dtype=np.int64)
        if len(ends) == 0 or ends[-1] != n or np.any(np.diff(np.concatenate([[0], ends])) <= 0):
            raise DatasetError(f"episode_ends {ends.tolist()[:5]}... must increase strictly and end at {n} frames")
        self.episode_ends = ends

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]])

    @property
    def observation_spec(self) -> ObservationSpec:
        """The streams the dataset declares in ``attrs['obs_spec']`` (each with its kind), checked
        against the arrays: the kind of an array is what the dataset says, never guessed from it."""
        spec = self.attrs.get("obs_spec")
        if spec is None:
            raise DatasetError("dataset attrs lack 'obs_spec' (the observation keys and shapes)")
        try:
            obs_spec = ObservationSpec.from_dict(spec)
        except ConfigError as exc:
            raise DatasetError(f"dataset attrs 'obs_spec' is invalid: {exc}") from exc
        missing = [s.name for s in obs_spec.streams if s.name not in self.obs]
        if missing:
            raise DatasetError(f"dataset lacks observation keys {missing}; it has {sorted(self.obs)}")
        for stream in obs_spec.streams:
            array = self.obs[stream.name]
            if array.shape[1:] != stream.shape or array.dtype != stream.dtype:
                raise DatasetError(f"dataset key '{stream.name}' holds {array.dtype} frames of shape "
                                   f"{array.shape[1:]}; its obs_spec says {stream.kind} {stream.dtype} {stream.shape}")
        return obs_spec

    def keys_of_kind(self, kind: str) -> list[str]:
        return [s.name for s in self.observation_spec.of_kind(kind)]

    @property
    def camera_keys(self) -> list[str]:
        return self.keys_of_kind(IMAGE)

    @property
    def low_dim_keys(self) -> list[str]:
        return self.keys_of_kind(LOW_DIM)

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        spec = {k: [str(v.dtype), list(v.shape)] for k, v in sorted(self.obs.items())}
        digest.update(json.dumps(spec, sort_keys=True).encode())
        for key in sorted(self.obs):
            digest.update(np.ascontiguousarray(self.obs[key]).tobytes())
        digest.update(np.ascontiguousarray(self.action, dtype=np.float32).tobytes())
        digest.update(self.episode_ends.tobytes())
        return "sha256:" + digest.hexdigest()

    @classmethod
    def from_episodes(cls, episodes: list[dict[str, np.ndarray]], attrs: dict[str, Any]) -> EpisodeSet:
        """Each episode: ``{"action": (L, Da), "obs/<key>": (L, ...)}``."""
        if not episodes:
            raise DatasetError("no episodes to store")
        keys = [k[4:] for k in episodes[0] if k.startswith("obs/")]
        obs = {k: np.concatenate([ep[f"obs/{k}"] for ep in episodes]) for k in keys}
        action = np.concatenate([ep["action"] for ep in episodes]).astype(np.float32)
        ends = np.cumsum([len(ep["action"]) for ep in episodes])
        return cls(obs=obs, action=action, episode_ends=ends, attrs=attrs)


def save_episodes(episodes: EpisodeSet, path: str | Path) -> str:
    """Write ``episodes`` to a zarr folder (replacing it); returns the content hash.

    A declared ``obs_spec`` is checked against the arrays first, so a dataset never says one thing
    about a stream and holds another.
    """
    if "obs_spec" in episodes.attrs:
        episodes.observation_spec  # noqa: B018 - raises DatasetError on a mismatch
    root = zarr.open_group(str(path), mode="w")
    data = root.create_group("data")
    data.create_array("action", data=episodes.action.astype(np.float32))
    obs_group = data.create_group("obs")
    for key, value in episodes.obs.items():
        chunks = (min(len(value), 256), *value.shape[1:]) if value.ndim == 4 else None
        obs_group.create_array(key, data=value, chunks=chunks) if chunks else obs_group.create_array(key, data=value)
    root.create_group("meta").create_array("episode_ends", data=episodes.episode_ends)
    content_hash = episodes.content_hash()
    root.attrs.update({"format": FORMAT, "content_hash": content_hash, **episodes.attrs})
    return content_hash


def load_episodes(path: str | Path) -> EpisodeSet:
    """Read a dataset written by ``save_episodes``; every problem is one ``DatasetError``."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"dataset '{path}' does not exist")
    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
    except Exception as exc:  # zarr raises many types for a broken store
        raise DatasetError(f"dataset '{path}' is not a readable zarr group ({type(exc).__name__}: {exc})") from exc
    if attrs.get("format") != FORMAT:
        raise DatasetError(f"dataset '{path}' has format {attrs.get('format')!r}; expected {FORMAT!r}")
    try:
        obs_group = root["data/obs"]
        obs = {key: np.asarray(obs_group[key][...]) for key in sorted(obs_group.array_keys())}
        action = np.asarray(root["data/action"][...], dtype=np.float32)
        ends = np.asarray(root["meta/episode_ends"][...], dtype=np.int64)
    except KeyError as exc:
        raise DatasetError(f"dataset '{path}' lacks the array {exc}; expected data/action, data/obs/*, "
                           "meta/episode_ends") from exc
    except Exception as exc:
        raise DatasetError(f"dataset '{path}' could not be read ({type(exc).__name__}: {exc})") from exc
    attrs = {k: v for k, v in attrs.items() if k not in ("format", "content_hash")}
    return EpisodeSet(obs=obs, action=action, episode_ends=ends, attrs=attrs)
