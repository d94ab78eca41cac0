"""Training-curve PNGs (losses on a log scale, simulator success on a second axis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SMOOTHING = 20  # steps in the running mean drawn over each raw loss curve


def plot_curves(history: dict[str, list], losses: list[str], path: Path, title: str, xlabel: str = "step") -> None:
    """``history`` has ``step``, each key in ``losses`` (None where a loss was not computed),
    ``eval_step`` and ``eval_success``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.asarray(history["step"])
    for key in losses:
        values = np.array([np.nan if v is None else v for v in history[key]], dtype=float)
        if not np.isfinite(values).any():
            continue
        line = ax.plot(steps, values, alpha=0.3, label=key)[0]
        if np.isfinite(values).all() and len(values) >= SMOOTHING:
            mean = np.convolve(values, np.ones(SMOOTHING) / SMOOTHING, mode="valid")
            ax.plot(steps[SMOOTHING - 1 :], mean, color=line.get_color(), label=f"{key} ({SMOOTHING}-step mean)")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    if history["eval_step"]:
        twin = ax.twinx()
        twin.plot(history["eval_step"], history["eval_success"], "o-", color="tab:green", label="success")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("success")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
