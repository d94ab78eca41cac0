"""PNG figures beside benchmark JSON files, for people to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_success_bars(rows: list[dict], path: Path, title: str) -> None:
    """Grouped bars: one group per task, one bar per (prediction, method), mean over seeds +- std."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    series = list(dict.fromkeys((r["prediction"], r["method"]) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) + 2), 5.5))
    width = 0.8 / max(1, len(series))
    for i, (prediction, method) in enumerate(series):
        means, stds = [], []
        for task in tasks:
            key = (task, prediction, method)
            vals = [r["success"] for r in rows if (r["task"], r["prediction"], r["method"]) == key]
            means.append(np.mean(vals) if vals else np.nan)
            stds.append(np.std(vals) if vals else 0.0)
        x = np.arange(len(tasks)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=2, label=f"{method} ({prediction})")
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(tasks) < 4 else 4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
