"""Observation streams: what a policy sees per observation step, each stream with a kind.

A stream is one named array per frame (``joint_positions`` (8,) float32, ``wrist`` (96, 96, 3)
uint8, ...). Its *kind* says how every part of the stack treats it: how a dataset groups it, which
encoder reads it (``encoders.ENCODERS``), how it is prepared for the network
(``modeling_diffusion.PREPARE``), and how the policy node fills it from ROS messages
(``ros.observation_sources``). ``STREAM_KINDS`` below is the table of kinds; adding one means a
row here, an encoder, a preparation function and a ROS converter, one line in each table.

Frame shapes are those of the raw frame as the engine and the dataset hold it: low-dim ``(d,)``
float32, images ``(H, W, 3)`` uint8 RGB. The network input of an image is CHW in [0, 1]; the
``cameras`` view keeps that ``(3, H, W)`` form for readers of earlier files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdm_controller.errors import ConfigError

LOW_DIM = "low_dim"
IMAGE = "image"


@dataclass(frozen=True)
class StreamKind:
    """One row of the kind table: the frame's dtype and rank, and how datasets write it."""

    name: str
    dtype: str  # numpy dtype name of one raw frame
    rank: int  # dimensions of one raw frame
    meaning: str  # one line, for error messages
    group: str  # key of this kind in a dataset's ``obs_spec`` (and in schema-1 artifacts)
    to_group: Callable[[tuple[int, ...]], Any]  # frame shape -> its entry in the group
    from_group: Callable[[str, Any], tuple[int, ...]]  # (name, entry) -> frame shape; ConfigError if bad
    always_grouped: bool = False  # written even when empty (the two groups datasets had from the start)


def _low_dim_shape(name: str, dim: Any) -> tuple[int, ...]:
    if int(dim) <= 0:
        raise ConfigError(f"observation key '{name}' has dimension {dim}; expected a positive integer")
    return (int(dim),)


def _camera_shape(name: str, chw: Any) -> tuple[int, ...]:
    shape = tuple(int(x) for x in chw)
    if len(shape) != 3 or shape[0] != 3 or min(shape) <= 0:
        raise ConfigError(f"camera '{name}' has shape {shape}; expected (3, height, width)")
    return (shape[1], shape[2], 3)


#: Every observation kind, in the order the encoder concatenates their features and the engine
#: takes their arrays.
STREAM_KINDS: dict[str, StreamKind] = {
    LOW_DIM: StreamKind(LOW_DIM, "float32", 1, "a float32 vector (d,)", "low_dim",
                        to_group=lambda shape: shape[0], from_group=_low_dim_shape, always_grouped=True),
    IMAGE: StreamKind(IMAGE, "uint8", 3, "a uint8 RGB image (H, W, 3)", "cameras",
                      to_group=lambda shape: [3, shape[0], shape[1]], from_group=_camera_shape, always_grouped=True),
}


@dataclass(frozen=True)
class ObservationStream:
    """One observation stream: its name, kind and the shape and dtype of one raw frame."""

    name: str
    kind: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(x) for x in self.shape))
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"observation stream name {self.name!r} must be a non-empty string")
        kind = STREAM_KINDS.get(self.kind)
        if kind is None:
            raise ConfigError(
                f"observation stream '{self.name}' has kind {self.kind!r}; expected one of {sorted(STREAM_KINDS)}"
            )
        if len(self.shape) != kind.rank or min(self.shape, default=0) <= 0:
            raise ConfigError(f"observation stream '{self.name}' has shape {self.shape}; a {self.kind} stream is "
                              f"{kind.meaning} with positive sizes")
        if self.kind == IMAGE and self.shape[2] != 3:
            raise ConfigError(f"camera '{self.name}' has shape {self.shape}; expected (height, width, 3) RGB")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STREAM_KINDS[self.kind].dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype.name}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationStream:
        if not isinstance(data, Mapping) or not {"name", "kind", "shape"} <= set(data):
            raise ConfigError(f"observation stream {data!r} must be an object with name, kind and shape")
        stream = cls(str(data["name"]), str(data["kind"]), tuple(data["shape"]))
        if "dtype" in data and data["dtype"] != stream.dtype.name:
            raise ConfigError(f"observation stream '{stream.name}' has dtype {data['dtype']!r}; a {stream.kind} "
                              f"stream is {stream.dtype.name}")
        return stream


class ObservationSpec:
    """The ordered observation streams of a policy (grouped by kind, in ``STREAM_KINDS`` order).

    Built from streams, or from the per-kind groups that datasets and schema-1 artifacts hold:
    ``ObservationSpec(low_dim={"state": 39}, cameras={"front": (3, 96, 96)})``.
    """

    def __init__(
        self,
        streams: Iterable[ObservationStream] = (),
        *,
        low_dim: Mapping[str, int] | None = None,
        cameras: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        given = list(streams)
        given += _from_group(LOW_DIM, low_dim or {}) + _from_group(IMAGE, cameras or {})
        if not given:
            raise ConfigError("observation spec is empty: give at least one low-dim key or one camera")
        names = [s.name for s in given]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"observation stream '{repeated[0]}' is given twice")
        order = list(STREAM_KINDS)
        self.streams: tuple[ObservationStream, ...] = tuple(sorted(given, key=lambda s: order.index(s.kind)))

    # -- views -----------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams)

    def of_kind(self, kind: str) -> tuple[ObservationStream, ...]:
        return tuple(s for s in self.streams if s.kind == kind)

    def kinds(self) -> tuple[str, ...]:
        """The kinds present, in table order."""
        return tuple(k for k in STREAM_KINDS if self.of_kind(k))

    @property
    def low_dim(self) -> dict[str, int]:
        """Low-dim stream name -> vector length."""
        return {s.name: s.shape[0] for s in self.of_kind(LOW_DIM)}

    @property
    def cameras(self) -> dict[str, tuple[int, int, int]]:
        """Camera name -> (3, height, width), the network's input form."""
        return {s.name: (3, s.shape[0], s.shape[1]) for s in self.of_kind(IMAGE)}

    @property
    def low_dim_total(self) -> int:
        return sum(self.low_dim.values())

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The form in ``policy.json`` (schema 2): the streams in order."""
        return {"streams": [s.to_dict() for s in self.streams]}

    def groups(self) -> dict[str, dict[str, Any]]:
        """The per-kind form of datasets' ``obs_spec`` (and schema-1 artifacts)."""
        return {
            kind.group: {s.name: kind.to_group(s.shape) for s in self.of_kind(name)}
            for name, kind in STREAM_KINDS.items()
            if kind.always_grouped or self.of_kind(name)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObservationSpec:
        """Either form: ``{"streams": [...]}`` or the per-kind groups ``{"low_dim": ..., "cameras": ...}``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"observation spec must be an object, got {type(data).__name__}")
        if "streams" in data:
            if set(data) != {"streams"} or not isinstance(data["streams"], list):
                raise ConfigError("observation spec with 'streams' must hold only that list")
            return cls(ObservationStream.from_dict(s) for s in data["streams"])
        kinds = {kind.group: name for name, kind in STREAM_KINDS.items()}
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise ConfigError(f"observation spec has unknown groups {unknown}; expected 'streams' or {sorted(kinds)}")
        return cls([s for group, entries in data.items() for s in _from_group(kinds[group], entries or {})])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObservationSpec) and self.streams == other.streams

    def __hash__(self) -> int:
        return hash(self.streams)

    def __repr__(self) -> str:
        return "ObservationSpec(" + ", ".join(f"{s.name}: {s.kind} {s.shape}" for s in self.streams) + ")"


def _from_group(kind: str, entries: Mapping[str, Any]) -> list[ObservationStream]:
    """The streams of one kind's group (``{name: entry}``), in the group's order."""
    convert = STREAM_KINDS[kind].from_group
    return [ObservationStream(str(name), kind, convert(str(name), entry)) for name, entry in entries.items()]
