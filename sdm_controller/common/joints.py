"""Joint states by name → the low-dim vectors a policy takes.

A ``sensor_msgs/JointState`` lists joints in whatever order its publisher chose and often more
joints than the policy uses (the second finger of the Franka hand, other arms, wheels). The
mapper therefore looks every joint up by name: the order does not matter, extra joints are
ignored, and a missing joint or a NaN/inf position in a joint the policy needs refuses the whole
message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sdm_controller.common.rejected import MALFORMED, MISSING_JOINTS, NON_FINITE, RejectedInput


class JointMapper:
    """Maps (names, positions) onto named vectors, e.g. ``{"joint_positions": fr3_joint1..7}``."""

    def __init__(self, vectors: Mapping[str, Sequence[str]]) -> None:
        self.vectors = {key: tuple(names) for key, names in vectors.items()}
        self.needed = tuple(dict.fromkeys(name for names in self.vectors.values() for name in names))
        self._slots = {key: np.array([self.needed.index(n) for n in names], dtype=np.int64)
                       for key, names in self.vectors.items()}
        self._last_names: tuple[str, ...] | None = None
        self._last_index: np.ndarray | None = None

    def _index(self, names: tuple[str, ...]) -> np.ndarray:
        """Position of each needed joint in ``names`` (cached: publishers keep their order)."""
        if names == self._last_names and self._last_index is not None:
            return self._last_index
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise RejectedInput(MALFORMED, f"joint state names repeat {duplicated}")
        lookup = {name: i for i, name in enumerate(names)}
        missing = [name for name in self.needed if name not in lookup]
        if missing:
            raise RejectedInput(
                MISSING_JOINTS, f"joint state lacks {missing}; the policy needs {list(self.needed)}"
            )
        index = np.array([lookup[name] for name in self.needed], dtype=np.int64)
        self._last_names, self._last_index = names, index
        return index

    def map(self, names: Sequence[str], positions: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
        """Named float32 vectors; raises :class:`RejectedInput` for malformed, missing or non-finite joints."""
        names = tuple(names)
        values = np.asarray(positions, dtype=np.float64).reshape(-1)
        if values.size != len(names):
            raise RejectedInput(
                MALFORMED, f"joint state has {len(names)} names but {values.size} positions"
            )
        picked = values[self._index(names)]
        if not np.isfinite(picked).all():
            bad = [name for name, v in zip(self.needed, picked, strict=True) if not np.isfinite(v)]
            raise RejectedInput(NON_FINITE, f"joint state positions of {bad} are NaN or inf")
        return {key: picked[slots].astype(np.float32) for key, slots in self._slots.items()}

    def extra_names(self, names: Sequence[str]) -> list[str]:
        """Joints in a message that the policy does not use (ignored, reported once for information)."""
        needed = set(self.needed)
        return [name for name in names if name not in needed]
