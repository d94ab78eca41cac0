"""Teacher benchmark: 8 MetaWorld tasks x {epsilon, x0} x 3 seeds x 4 samplers.

Resumable: every finished piece is a file in the work folder (datasets, teacher artifacts, one
JSON of rows per run), and a restart skips what exists. The teachers stay there for the
distillation benchmark. The committed result is assembled from all run files at the end of
every run, so a partial table is visible while it goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

TASKS = [
    "drawer-open",
    "sweep-into",
    "coffee-push",
    "hammer",
    "peg-insert-side",
    "push",
    "assembly",
    "stick-push",
]
PREDICTIONS = ["epsilon", "sample"]
SEEDS = [0, 1, 2]
SAMPLERS = [("ddpm", 100), ("ddim", 10), ("ddim", 4), ("ddim", 1)]
#: Budget chosen to fit 48 runs in under 3 h of a 2-core AVX2 machine (see README, benchmarks).
DEFAULTS = {"episodes": 50, "steps": 1000, "batch_size": 128, "jobs": 2, "unet": "tiny"}
DEMO_SEED = 0
EVAL_SEED = 1  # env seeds 1000.. for evaluation, disjoint from the demo env seed 0
LATENCY_CALLS = {100: 5, 10: 20, 4: 30, 1: 50}


def default_work_dir() -> Path:
    root = Path(os.environ.get("SDM_CACHE", Path.home() / ".cache" / "sdm_controller"))
    return root / "bench" / "teacher_metaworld"


def run_file(work: Path, task: str, prediction: str, seed: int) -> Path:
    return work / "rows" / f"{task}__{prediction}__seed{seed}.json"


def teacher_dir(work: Path, task: str, prediction: str, seed: int) -> Path:
    return work / "teachers" / task / prediction / f"seed{seed}"


def batch1_latency_ms(policy: Any, obs: dict, steps: int, method: str) -> float:
    """Median wall time of one batch-1 chunk, as a robot would call the policy.

    One-step policies ignore ``steps`` and ``method`` (one network call per chunk).
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    policy.predict_action(obs, steps=steps, method=method, generator=generator)  # warm-up
    times = []
    for _ in range(LATENCY_CALLS.get(steps, 10)):
        start = time.perf_counter()
        policy.predict_action(obs, steps=steps, method=method, generator=generator)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


_SUITE: dict[str, Any] = {}  # per worker process: the env suite of the task it ran last


def suite_for(task: str, episodes: int) -> Any:
    """Reuse the worker's suite while it stays on one task (building 50 envs takes ~40 s)."""
    from sdm_controller.bench.metaworld_eval import EvalSuite

    if task not in _SUITE:
        for old in _SUITE.values():
            old.close()
        _SUITE.clear()
        _SUITE[task] = EvalSuite(task, num_envs=min(episodes, 50), seed=EVAL_SEED)
    return _SUITE[task]


def ensure_dataset(work: Path, task: str) -> Path:
    from sdm_controller.data.metaworld_demos import collect_metaworld

    dataset = work / "data" / f"{task}.zarr"
    if not (dataset / "zarr.json").exists():
        collect_metaworld(task, dataset, num_demos=10, seed=DEMO_SEED, progress=False)
    return dataset


def build_teacher(work: Path, task: str, prediction: str, seed: int, steps: int, batch_size: int, unet: str) -> Path:
    """Train one benchmark teacher unless it exists; the one recipe both benchmarks rely on.

    Training is seeded and runs on one thread, so the same machine type rebuilds the same teacher:
    the distillation benchmark uses that on a machine whose work folder is gone.
    """
    from sdm_controller.training.teacher import TrainConfig, train_teacher

    artifact = teacher_dir(work, task, prediction, seed)
    if not (artifact / "policy.json").exists():
        policy = {"prediction_type": prediction, "unet_preset": unet}
        config = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, policy=policy)
        train_teacher(ensure_dataset(work, task), artifact, config, progress=False)
    return artifact


def run_one(
    task: str, prediction: str, seed: int, work: str, episodes: int, steps: int, batch_size: int, unet: str
) -> str:
    """Worker: train (unless the teacher exists) and evaluate one (task, prediction, seed)."""
    import torch

    torch.set_num_threads(1)
    from sdm_controller.bench.metaworld_eval import teacher_act
    from sdm_controller.runtime.artifact import load_teacher

    work_dir = Path(work)
    dataset = work_dir / "data" / f"{task}.zarr"
    artifact = build_teacher(work_dir, task, prediction, seed, steps, batch_size, unet)
    policy, spec = load_teacher(artifact)
    suite = suite_for(task, episodes)
    probe = probe_observation(dataset, policy.config.n_obs_steps)
    rows = []
    for method, n in SAMPLERS:
        result = suite.evaluate(teacher_act(policy, n, method, seed=seed), episodes, policy.config.n_obs_steps)
        rows.append(
            {
                "task": task,
                "method": f"teacher-{method}{n}",
                "prediction": prediction,
                "seed": seed,
                "episodes": result.episodes,
                "success": result.success,
                "ms_per_chunk": batch1_latency_ms(policy, probe, n, method),
                "ms_per_chunk_batched": result.ms_per_chunk,
                "mean_success_steps": result.mean_success_steps,
                "train_steps": spec.provenance["steps"],
                "train_seconds": spec.provenance["train_seconds"],
                "final_loss": spec.provenance["final_loss"],
                "eval_wall_s": round(result.wall_s, 1),
            }
        )
    out = run_file(work_dir, task, prediction, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return out.name


def probe_observation(dataset: Path, n_obs_steps: int) -> dict:
    """A batch-1 observation window from the dataset, for latency timing."""
    import torch

    from sdm_controller.data.episodes import load_episodes

    episodes = load_episodes(dataset)
    return {k: torch.from_numpy(v[:n_obs_steps][None].copy()) for k, v in episodes.obs.items()}


def collect_rows(work: Path) -> list[dict]:
    rows = []
    for path in sorted((work / "rows").glob("*.json")):
        rows.extend(json.loads(path.read_text()))
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean success and median time per (prediction, method) over tasks and seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["prediction"], row["method"]), []).append(row)
    return [
        {
            "prediction": prediction,
            "method": method,
            "runs": len(items),
            "success": float(np.mean([r["success"] for r in items])),
            "ms_per_chunk": float(np.median([r["ms_per_chunk"] for r in items])),
        }
        for (prediction, method), items in sorted(groups.items())
    ]


def print_table(rows: list[dict]) -> None:
    methods = [f"teacher-{m}{n}" for m, n in SAMPLERS]
    print(f"{'task':<18}{'pred':<9}" + "".join(f"{m.removeprefix('teacher-'):>10}" for m in methods) + "  seeds")
    keys = sorted({(r["task"], r["prediction"]) for r in rows}, key=lambda k: (TASKS.index(k[0]), k[1]))
    for task, prediction in keys:
        cells, seeds = [], set()
        for method in methods:
            key = (task, prediction, method)
            vals = [r["success"] for r in rows if (r["task"], r["prediction"], r["method"]) == key]
            seeds |= {r["seed"] for r in rows if (r["task"], r["prediction"]) == (task, prediction)}
            cells.append(f"{np.mean(vals):>10.2f}" if vals else f"{'-':>10}")
        print(f"{task:<18}{prediction:<9}" + "".join(cells) + f"  {len(seeds)}")
    for item in summarize(rows):
        print(f"mean {item['prediction']:<8}{item['method']:<18} success {item['success']:.3f} over {item['runs']:>2} "
              f"runs, {item['ms_per_chunk']:.1f} ms/chunk (batch 1)")


def write_results(
    rows: list[dict], out: Path, command: str, settings: dict,
    title: str = "Teacher success on MetaWorld v3 (mean over seeds)", extra: dict | None = None,
) -> None:
    """Write the JSON + PNG; ``extra`` replaces or adds top-level entries (a benchmark's own summary)."""
    from sdm_controller.bench.machine import describe_machine
    from sdm_controller.bench.plots import plot_success_bars

    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": describe_machine(),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "summary": summarize(rows),
        "rows": rows,
        **(extra or {}),
    }
    out.write_text(json.dumps(result, indent=1))
    plot_success_bars(rows, out.with_suffix(".png"), title=title)


def main(args: argparse.Namespace) -> int:
    tasks = args.tasks or TASKS
    seeds = args.seeds if args.seeds is not None else SEEDS
    predictions = args.predictions or PREDICTIONS
    episodes = args.episodes or DEFAULTS["episodes"]
    steps = args.steps or DEFAULTS["steps"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    jobs = args.jobs or DEFAULTS["jobs"]
    unet = args.unet or DEFAULTS["unet"]
    work = Path(args.work) if args.work else default_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    command = "python -m sdm_controller " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py") else (
        "python -m sdm_controller bench teacher"
    )
    settings = {"tasks": tasks, "seeds": seeds, "predictions": predictions, "episodes": episodes,
                "train_steps": steps, "batch_size": batch_size, "unet": unet, "jobs": jobs, "work": str(work)}
    from sdm_controller.sim.metaworld import resolve_task

    for task in tasks:
        resolve_task(task)
    pending = [(t, p, s) for t in tasks for p in predictions for s in seeds if not run_file(work, t, p, s).exists()]
    print(f"teacher benchmark: {len(pending)} runs to do in {work}")
    for task in sorted({t for t, _, _ in pending}):
        ensure_dataset(work, task)
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_one, t, p, s, str(work), episodes, steps, batch_size, unet) for t, p, s in pending]
        for future in tqdm(as_completed(futures), total=len(futures), desc="teacher runs"):
            future.result()
            write_results(collect_rows(work), out, command, settings)
    rows = collect_rows(work)
    write_results(rows, out, command, settings)
    print_table(rows)
    return 0
