"""Teacher budget study: success against training steps, to choose the budget of the benchmarks.

For each (task, prediction, UNet preset, seed) one teacher trains to the largest budget and is
saved at every smaller one on the way (``TrainConfig.checkpoints``); each saved teacher is then
evaluated with DDIM-10 and DDIM-1 on the teacher benchmark's 50 fixed episodes. One curve per
task and prediction shows where more training stops paying.

Resumable: a run's teacher folder and one row file per evaluated checkpoint live in the work
folder (default ``$SDM_CACHE/bench/budget_study``); a restart trains only the runs whose teacher
is missing and evaluates only the checkpoints without rows. The teachers stay there for the
distillation study, which needs converged teachers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from sdm_controller.bench import teacher_benchmark as tb

TASKS = ["push", "hammer", "assembly"]  # three dev tasks with room above the 1000-step teachers
PREDICTIONS = ["sample", "epsilon"]
CHECKPOINTS = [1000, 2000, 4000, 8000]
SAMPLERS = [("ddim", 10), ("ddim", 1)]
DEFAULTS = {"episodes": 50, "batch_size": 128, "unet": "tiny", "seeds": [0]}


def default_work_dir() -> Path:
    root = Path(os.environ.get("SDM_CACHE", Path.home() / ".cache" / "sdm_controller"))
    return root / "bench" / "budget_study"


def run_dir(work: Path, task: str, prediction: str, unet: str, seed: int) -> Path:
    return work / "teachers" / task / prediction / unet / f"seed{seed}"


def checkpoint_dir(run: Path, steps: int, final: int) -> Path:
    return run if steps == final else run / "checkpoints" / f"step{steps}"


def row_file(work: Path, task: str, prediction: str, unet: str, seed: int, steps: int) -> Path:
    return work / "rows" / f"{task}__{prediction}__{unet}__seed{seed}__step{steps}.json"


def train_run(work: Path, task: str, prediction: str, unet: str, seed: int, checkpoints: list[int],
              batch_size: int) -> Path:
    """Train one teacher to the largest budget, saved at every checkpoint (unless it exists)."""
    from sdm_controller.training.teacher import TrainConfig, train_teacher

    run = run_dir(work, task, prediction, unet, seed)
    if not (run / "policy.json").exists():
        config = TrainConfig(steps=max(checkpoints), batch_size=batch_size, seed=seed, checkpoints=tuple(checkpoints),
                             policy={"prediction_type": prediction, "unet_preset": unet})
        train_teacher(tb.ensure_dataset(work, task), run, config, progress=True)
    return run


def evaluate_checkpoint(work: Path, task: str, prediction: str, unet: str, seed: int, steps: int, final: int,
                        episodes: int) -> list[dict]:
    from sdm_controller.bench.metaworld_eval import teacher_act
    from sdm_controller.runtime.artifact import load_teacher

    policy, spec = load_teacher(checkpoint_dir(run_dir(work, task, prediction, unet, seed), steps, final))
    suite = tb.suite_for(task, episodes)
    rows = []
    for method, n in SAMPLERS:
        result = suite.evaluate(teacher_act(policy, n, method, seed=seed), episodes, policy.config.n_obs_steps)
        rows.append({
            "task": task, "method": f"teacher-{method}{n}", "prediction": prediction, "unet": unet, "seed": seed,
            "train_steps": steps, "train_seconds": spec.provenance["train_seconds"], "episodes": result.episodes,
            "success": result.success, "ms_per_chunk": result.ms_per_chunk, "eval_wall_s": round(result.wall_s, 1),
        })
    return rows


def collect_rows(work: Path) -> list[dict]:
    return [row for path in sorted((work / "rows").glob("*.json")) for row in json.loads(path.read_text())]


def plot_curves(rows: list[dict], path: Path) -> None:
    """Success against training steps: one panel per task, one line per (prediction, sampler)."""
    from sdm_controller.bench.plots import _pyplot

    plt = _pyplot()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        series = sorted({(r["prediction"], r["unet"], r["method"]) for r in rows if r["task"] == task})
        for prediction, unet, method in series:
            points: dict[int, list[float]] = {}
            for r in rows:
                if (r["task"], r["prediction"], r["unet"], r["method"]) == (task, prediction, unet, method):
                    points.setdefault(r["train_steps"], []).append(r["success"])
            steps = sorted(points)
            ax.plot(steps, [np.mean(points[s]) for s in steps], marker="o",
                    label=f"{prediction} {unet} {method.removeprefix('teacher-')}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("teacher training steps (batch 128)")
        ax.set_ylabel("success (50 episodes)")
        ax.set_title(task)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(rows: list[dict], out: Path, command: str, settings: dict) -> None:
    from sdm_controller.bench.machine import describe_machine

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": describe_machine(), "command": command,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings,
                               "rows": rows}, indent=1))
    if rows:
        plot_curves(rows, out.with_suffix(".png"))


def print_table(rows: list[dict]) -> None:
    keys = sorted({(r["task"], r["prediction"], r["unet"], r["method"]) for r in rows})
    steps = sorted({r["train_steps"] for r in rows})
    print(f"{'task':<12}{'pred':<9}{'unet':<6}{'sampler':<9}" + "".join(f"{s:>8}" for s in steps))
    for key in keys:
        cells = []
        for s in steps:
            vals = [r["success"] for r in rows if (r["task"], r["prediction"], r["unet"], r["method"]) == key
                    and r["train_steps"] == s]
            cells.append(f"{np.mean(vals):>8.2f}" if vals else f"{'-':>8}")
        print(f"{key[0]:<12}{key[1]:<9}{key[2]:<6}{key[3].removeprefix('teacher-'):<9}" + "".join(cells))


def main(args: argparse.Namespace) -> int:
    import torch

    from sdm_controller.sim.metaworld import resolve_task

    torch.set_num_threads(1)
    tasks = args.tasks or TASKS
    predictions = args.predictions or PREDICTIONS
    checkpoints = sorted(args.checkpoints or CHECKPOINTS)
    seeds = args.seeds if args.seeds is not None else DEFAULTS["seeds"]
    unet = args.unet or DEFAULTS["unet"]
    episodes = args.episodes or DEFAULTS["episodes"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    for task in tasks:
        resolve_task(task)
    work = Path(args.work) if args.work else default_work_dir()
    out = Path(args.out)
    command = "python -m sdm_controller " + " ".join(sys.argv[1:])
    settings = {"tasks": tasks, "predictions": predictions, "checkpoints": checkpoints, "seeds": seeds,
                "unet": unet, "episodes": episodes, "batch_size": batch_size, "samplers": SAMPLERS,
                "work": str(work)}
    final = max(checkpoints)
    # x0 teachers first: they are the ones the distillation benchmark keeps at the 1000-step budget.
    for prediction in predictions:
        for task in tasks:
            for seed in seeds:
                todo = [s for s in checkpoints if not row_file(work, task, prediction, unet, seed, s).exists()]
                if not todo:
                    continue
                print(f"budget study: {task} {prediction} {unet} seed {seed}: checkpoints {todo}", flush=True)
                train_run(work, task, prediction, unet, seed, checkpoints, batch_size)
                for steps in todo:
                    rows = evaluate_checkpoint(work, task, prediction, unet, seed, steps, final, episodes)
                    path = row_file(work, task, prediction, unet, seed, steps)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(rows, indent=1))
                    print("  " + ", ".join(f"{r['method']} {r['success']:.2f}" for r in rows) + f" at {steps}",
                          flush=True)
                    write_results(collect_rows(work), out, command, settings)
    rows = collect_rows(work)
    write_results(rows, out, command, settings)
    print_table(rows)
    return 0
