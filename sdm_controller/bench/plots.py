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
        color = plt.cm.tab20(i % 20) if len(series) > 10 else None  # the default cycle repeats after 10
        ax.bar(x, means, width, yerr=stds, capsize=2, label=f"{method} ({prediction})", color=color)
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(tasks) < 4 else 4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_success_curves(
    panels: dict[str, dict[str, tuple[list[int], list[float]]]], path: Path, title: str, xlabel: str = "iterations",
    references: dict[str, dict[str, float]] | None = None,
) -> None:
    """Success against iterations: one panel per key of ``panels`` (a teacher type), one line per
    method (its ``(steps, success)``), ``references`` as dashed horizontal lines (a teacher's samplers)."""
    plt = _pyplot()
    names = list(panels) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method, (steps, success) in panels.get(name, {}).items():
            ax.plot(steps, success, marker="o", label=method)
        for i, (label, value) in enumerate((references or {}).get(name, {}).items()):
            ax.axhline(value, linestyle="--", color=f"C{7 + i}", linewidth=1, label=f"teacher {label}")
        if any(steps for steps, _ in panels.get(name, {}).values()):
            ax.set_xscale("log")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("success")
        ax.set_title(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sim_runs(latencies_ms: dict[str, np.ndarray], success: dict[str, float], path: Path, title: str) -> None:
    """Observation → chunk latency histograms (log x) beside closed-loop success, one colour per policy."""
    plt = _pyplot()
    fig, (hist, bars) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    values = [v for v in latencies_ms.values() if v.size]
    if values:
        low, high = max(min(v.min() for v in values), 0.1), max(v.max() for v in values)
        bins = np.geomspace(low, high * 1.01 + 1e-3, 40)
        for label, v in latencies_ms.items():
            if v.size:
                hist.hist(v, bins=bins, alpha=0.6, label=f"{label} (p50 {np.median(v):.1f} ms)")
        hist.set_xscale("log")
        hist.legend(fontsize=8)
    hist.set_xlabel("observation stamp → chunk received (ms)")
    hist.set_ylabel("chunks")
    bars.bar(list(success), list(success.values()), color="tab:green")
    bars.set_ylim(0, 1)
    bars.set_ylabel("success rate")
    bars.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_image_strip(frames: tuple[np.ndarray, ...] | list[np.ndarray], path: Path, scale: int = 2) -> None:
    """Camera frames side by side (RGB uint8, upscaled), as the policy saw one episode."""
    import cv2

    if not frames:
        raise ValueError("no frames to write an image strip from")
    strip = np.concatenate(list(frames), axis=1)
    strip = cv2.resize(strip, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
