"""Distillation benchmark: every method on the teacher benchmark's teachers, same protocol.

For the epsilon-prediction teachers: CD, OneDP-S, OneDP-D, SDM (clean) and SDM (literal); for the
x0 teachers: SDM (clean). The teachers' own samplers are re-timed here (batch 1, same run); their
success is reused from the teacher benchmark's rows, which used the same envs and episodes.
Resumable like the teacher benchmark: one row file per (task, prediction, seed, method).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from sdm_controller.bench import teacher_benchmark as tb

METHODS = {"epsilon": ["cd", "onedp-s", "onedp-d", "sdm", "sdm-literal"], "sample": ["sdm"]}
DEFAULTS = {"steps": 100, "batch_size": 128, "jobs": 2}  # 100 iterations = 10 % of the 1000 teacher steps


def row_file(work: Path, task: str, prediction: str, seed: int, method: str) -> Path:
    return work / "distill_rows" / f"{task}__{prediction}__seed{seed}__{method}.json"


def run_one(task: str, prediction: str, seed: int, method: str, work: str, episodes: int, steps: int,
            batch_size: int) -> str:
    import torch

    torch.set_num_threads(1)
    from sdm_controller.bench.metaworld_eval import policy_act
    from sdm_controller.distill.configuration_distill import DistillConfig
    from sdm_controller.distill.trainer import distill
    from sdm_controller.runtime.artifact import load_one_step

    work_dir = Path(work)
    teacher = tb.teacher_dir(work_dir, task, prediction, seed)
    dataset = work_dir / "data" / f"{task}.zarr"
    out = work_dir / "students" / task / prediction / f"seed{seed}" / method
    if not (out / "policy.json").exists():
        config = DistillConfig.for_method(method, steps=steps, batch_size=batch_size, seed=seed)
        distill(teacher, dataset, out, config, progress=False)
    policy, meta = load_one_step(out)
    suite = tb.suite_for(task, episodes)
    probe = tb.probe_observation(dataset, policy.config.n_obs_steps)
    result = suite.evaluate(policy_act(policy, seed=seed), episodes, policy.config.n_obs_steps)
    provenance = meta["provenance"]
    row = {
        "task": task,
        "method": method,
        "prediction": prediction,
        "seed": seed,
        "episodes": result.episodes,
        "success": result.success,
        "ms_per_chunk": tb.batch1_latency_ms(policy, probe, 1, "one-step"),
        "ms_per_chunk_batched": result.ms_per_chunk,
        "mean_success_steps": result.mean_success_steps,
        "distill_steps": provenance["steps"],
        "steps_fraction_of_teacher": provenance["steps_fraction_of_teacher"],
        "distill_seconds": provenance["distill_seconds"],
        "eval_wall_s": round(result.wall_s, 1),
    }
    path = row_file(work_dir, task, prediction, seed, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([row], indent=1))
    return path.name


def retime_teacher(task: str, prediction: str, seed: int, work: str) -> str:
    """Teacher rows with success from the teacher benchmark and time per chunk measured now."""
    import torch

    torch.set_num_threads(1)
    from sdm_controller.runtime.artifact import load_teacher

    work_dir = Path(work)
    teacher_rows = json.loads(tb.run_file(work_dir, task, prediction, seed).read_text())
    policy, _ = load_teacher(tb.teacher_dir(work_dir, task, prediction, seed))
    probe = tb.probe_observation(work_dir / "data" / f"{task}.zarr", policy.config.n_obs_steps)
    rows = []
    for row in teacher_rows:
        method, steps = row["method"].removeprefix("teacher-")[:4], int(row["method"].removeprefix("teacher-")[4:])
        rows.append({**row, "ms_per_chunk": tb.batch1_latency_ms(policy, probe, steps, method),
                     "success_from": "teacher benchmark"})
    path = row_file(work_dir, task, prediction, seed, "teacher")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path.name


def collect_rows(work: Path) -> list[dict]:
    rows = []
    for path in sorted((work / "distill_rows").glob("*.json")):
        rows.extend(json.loads(path.read_text()))
    return rows


def main(args: argparse.Namespace) -> int:
    tasks = args.tasks or tb.TASKS
    seeds = args.seeds if args.seeds is not None else tb.SEEDS
    predictions = args.predictions or tb.PREDICTIONS
    episodes = args.episodes or tb.DEFAULTS["episodes"]
    steps = args.steps or DEFAULTS["steps"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    jobs = args.jobs or DEFAULTS["jobs"]
    work = Path(args.work) if args.work else tb.default_work_dir()
    # A teacher is ready once its teacher-benchmark row exists; the others' runs wait for a later
    # call, so this benchmark can run beside the teacher benchmark and pick up where it left off.
    units = [(t, p, s) for t in tasks for p in predictions for s in seeds]
    ready = [u for u in units if tb.run_file(work, *u).exists()]
    if len(ready) < len(units):
        print(f"{len(units) - len(ready)} of {len(units)} teachers are not benchmarked yet (first: "
              f"{next(u for u in units if u not in ready)}); their runs wait for a later call after "
              "`python -m sdm_controller bench teacher` (both are resumable)", file=sys.stderr)
    jobs_list = [("teacher", t, p, s) for t, p, s in ready if not row_file(work, t, p, s, "teacher").exists()]
    jobs_list += [(m, t, p, s) for t, p, s in ready for m in METHODS[p] if not row_file(work, t, p, s, m).exists()]
    print(f"distillation benchmark: {len(jobs_list)} runs to do in {work}")
    settings = {"tasks": tasks, "seeds": seeds, "predictions": predictions, "episodes": episodes,
                "distill_steps": steps, "batch_size": batch_size, "methods": METHODS, "work": str(work)}
    command = "python -m sdm_controller " + " ".join(sys.argv[1:])
    out = Path(args.out)
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = []
        for method, t, p, s in jobs_list:
            if method == "teacher":
                futures.append(pool.submit(retime_teacher, t, p, s, str(work)))
            else:
                futures.append(pool.submit(run_one, t, p, s, method, str(work), episodes, steps, batch_size))
        for future in tqdm(as_completed(futures), total=len(futures), desc="distill runs"):
            future.result()
            tb.write_results(collect_rows(work), out, command, settings,
                             title="One-step distillation vs teacher samplers on MetaWorld v3")
    rows = collect_rows(work)
    tb.write_results(rows, out, command, settings, title="One-step distillation vs teacher samplers on MetaWorld v3")
    for item in tb.summarize(rows):
        print(f"{item['prediction']:<8}{item['method']:<18} success {item['success']:.3f} over {item['runs']:>2} "
              f"runs, {item['ms_per_chunk']:.1f} ms/chunk (batch 1)")
    return 0

