"""How consecutive chunks are combined before they are published (parameter ``blending``).

* ``off``: each chunk is published as the policy predicted it (its first ``executed_steps``
  actions). The driver replaces the running chunk with it (latency compensation by its stamps).
* ``exponential``: temporal ensembling as in ACT. Every chunk predicts positions for a run of
  future due times; the published position for due time t is the weighted mean of every
  remembered prediction for t (older chunks' predictions are interpolated linearly in time,
  because observation stamps need not fall on a common grid). Predictions are ordered oldest
  first and weighted ``w_i = exp(-m * i)`` with ``m = blend_coefficient``, ACT's convention:
  m = 0 is the plain mean, m > 0 trusts older predictions more (smoother, slower to react),
  m < 0 trusts newer ones more. Chunks are remembered until their last point is due before the
  newest chunk's first point. The raw predictions are remembered, never the blended output.
* ``latest-only``: only the newest chunk counts, and only its points still due after the node's
  clock at publish time are sent (diffusion_policy's rule): a driver without latency
  compensation then never steers back to where the arm should have been a moment ago. A chunk
  whose points are all past is not published (counted as late).

Limits are applied after blending, so every published position respects them.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sdm_controller.control.chunk import ActionChunk

OFF = "off"
EXPONENTIAL = "exponential"
LATEST_ONLY = "latest-only"
BLENDING_MODES = (OFF, EXPONENTIAL, LATEST_ONLY)


class ChunkBlender:
    """Turns the newest prediction into the chunk to publish (before limits)."""

    def __init__(self, mode: str = OFF, coefficient: float = 0.0, max_chunks: int = 64) -> None:
        if mode not in BLENDING_MODES:
            raise ValueError(f"blending mode '{mode}' is unknown; expected one of {BLENDING_MODES}")
        self.mode = mode
        self.coefficient = float(coefficient)
        self._history: deque[ActionChunk] = deque(maxlen=max_chunks)

    def reset(self) -> None:
        self._history.clear()

    def blend(self, prediction: ActionChunk, executed_steps: int, now_ns: int) -> ActionChunk | None:
        """``prediction``: the policy's executed actions (all of them; more than ``executed_steps`` helps
        ensembling). Returns the chunk to publish, or None when nothing of it is still due."""
        published = prediction.head(executed_steps)
        if self.mode == OFF:
            return published
        if self.mode == LATEST_ONLY:
            return published.due_after(now_ns)
        return self._ensemble(prediction, published)

    def _ensemble(self, prediction: ActionChunk, published: ActionChunk) -> ActionChunk:
        first_due = int(published.due_ns[0])
        while self._history and (
            self._history[0].due_ns[-1] < first_due or self._history[0].names != prediction.names
        ):
            self._history.popleft()
        self._history.append(prediction)
        chunks = list(self._history)  # oldest first; the newest covers every published point
        positions = np.empty_like(published.positions)
        for k, t in enumerate(published.due_ns):
            predictions = [c.position_at(int(t)) for c in chunks if c.covers(int(t))]
            weights = ensemble_weights(len(predictions), self.coefficient)
            positions[k] = weights @ np.stack(predictions)
        return ActionChunk(published.stamp_ns, published.period_ns, published.names, positions)


def ensemble_weights(n: int, coefficient: float) -> np.ndarray:
    """Normalised ``exp(-m * i)`` for i = 0 (oldest) .. n-1 (newest)."""
    exponents = -coefficient * np.arange(n, dtype=np.float64)
    weights = np.exp(exponents - exponents.max())
    return weights / weights.sum()
