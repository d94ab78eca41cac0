"""Distillation benchmark: every method on the teacher benchmark's teachers, same protocol.

For the epsilon-prediction teachers: CD, OneDP-S, OneDP-D, SDM (clean) and SDM (literal); for the
x0 teachers: SDM (clean). The teachers' own samplers are re-timed here (batch 1, same run); their
success is reused from the teacher benchmark's rows, which used the same envs and episodes.
Resumable like the teacher benchmark: one row file per (task, prediction, seed, method).

The teachers are the teacher benchmark's, from its work folder. Where that folder is gone (a
fresh machine), a unit's teacher is trained and evaluated there again by the teacher benchmark's
own run before its students: its rows then describe the teacher the students came from. Teacher
training is seeded but not bit-identical across machines, so a lost teacher is never taken for
the recorded one.

Runs go depth first, one (task, prediction, seed) unit at a time, and only whole units are
resumed from a committed table: a unit's students and teacher rows always share one teacher.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from sdm_controller.bench import teacher_benchmark as tb

Unit = tuple[str, str, int]  # (task, prediction, seed): one teacher and all its students
#: Which registered methods run per teacher type (``check_methods`` holds them to the registry).
METHODS = {"epsilon": ["cd", "onedp-s", "onedp-d", "sdm", "sdm-literal"], "sample": ["sdm"]}
DEFAULTS = {"steps": 100, "batch_size": 128, "jobs": 2}  # 100 iterations = 10 % of the 1000 teacher steps


def check_methods() -> None:
    """Every method the benchmark runs is registered: fail at the start, not after the teachers."""
    from sdm_controller.distill.method import get_method

    for names in METHODS.values():
        for name in names:
            get_method(name)


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
    policy, spec = load_one_step(out)
    suite = tb.suite_for(task, episodes)
    probe = tb.probe_observation(dataset, policy.config.n_obs_steps)
    result = suite.evaluate(policy_act(policy, seed=seed), episodes, policy.config.n_obs_steps)
    provenance = spec.provenance
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


def retime_teacher(task: str, prediction: str, seed: int, work: str, episodes: int) -> str:
    """Teacher rows: success from the teacher benchmark's run of this teacher, time per chunk measured now.

    A teacher missing from the work folder, or one without its run, gets the teacher benchmark's
    run here (train, then evaluate every sampler), so its students and its rows share one teacher.
    """
    import torch

    torch.set_num_threads(1)
    from sdm_controller.runtime.artifact import load_teacher

    work_dir = Path(work)
    artifact = tb.teacher_dir(work_dir, task, prediction, seed)
    if not (artifact / "policy.json").exists() or not tb.run_file(work_dir, task, prediction, seed).exists():
        tb.run_one(task, prediction, seed, work, episodes, tb.DEFAULTS["steps"], tb.DEFAULTS["batch_size"],
                   tb.DEFAULTS["unet"])  # also times every sampler, now: nothing to re-time
        rows = json.loads(tb.run_file(work_dir, task, prediction, seed).read_text())
    else:
        rows = []
        policy, _ = load_teacher(artifact)
        probe = tb.probe_observation(work_dir / "data" / f"{task}.zarr", policy.config.n_obs_steps)
        for row in json.loads(tb.run_file(work_dir, task, prediction, seed).read_text()):
            method, steps = row["method"].removeprefix("teacher-")[:4], int(row["method"].removeprefix("teacher-")[4:])
            rows.append({**row, "ms_per_chunk": tb.batch1_latency_ms(policy, probe, steps, method)})
    rows = [{**row, "success_from": "teacher benchmark"} for row in rows]
    path = row_file(work_dir, task, prediction, seed, "teacher")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path.name


def collect_rows(work: Path) -> list[dict]:
    rows = []
    for path in sorted((work / "distill_rows").glob("*.json")):
        rows.extend(json.loads(path.read_text()))
    return rows


GOAL_BASELINES = {
    "epsilon": ["teacher-ddpm100", "teacher-ddim1", "onedp-s", "cd"],
    "sample": ["teacher-ddpm100", "teacher-ddim1"],
}
DDPM_SLACK = 0.02  # "within 2 points of its teacher's DDPM-100"


def unit_of(row: dict) -> Unit:
    return row["task"], row["prediction"], row["seed"]


def is_whole(unit_rows: list[dict], prediction: str) -> bool:
    """A unit with all its teacher's samplers and one row per method, nothing more."""
    counts: dict[str, int] = {}
    for row in unit_rows:
        method = "teacher" if row["method"].startswith("teacher-") else row["method"]
        counts[method] = counts.get(method, 0) + 1
    return counts == {"teacher": len(tb.SAMPLERS), **{m: 1 for m in METHODS[prediction]}}


def whole_unit_rows(rows: list[dict]) -> list[dict]:
    """The rows of whole units only, so every mean compares methods over the same teachers."""
    units: dict[Unit, list[dict]] = {}
    for row in rows:
        units.setdefault(unit_of(row), []).append(row)
    return [row for unit, items in units.items() if is_whole(items, unit[1]) for row in items]


def by_task(rows: list[dict]) -> list[dict]:
    """Mean success per (task, prediction, method) over seeds: where a method wins or loses."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["prediction"], row["method"]), []).append(row["success"])
    order = {task: i for i, task in enumerate(tb.TASKS)}
    return [{"task": t, "prediction": p, "method": m, "seeds": len(v), "success": sum(v) / len(v)}
            for (t, p, m), v in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:]))]


def goals(summary: list[dict]) -> dict[str, dict]:
    """The issue's goals per teacher type, from the whole-unit means.

    SDM 1-step within 2 points of the teacher's DDPM-100 or better, at or above its own DDIM-1,
    and for ε teachers at or above OneDP-S and CD. ``margins`` is SDM minus each other method, so
    a baseline that beats SDM (OneDP-D included) shows as a negative margin.
    """
    mean = {(item["prediction"], item["method"]): item["success"] for item in summary}
    out: dict[str, dict] = {}
    for prediction in sorted({p for p, _ in mean}):
        if (prediction, "sdm") not in mean:
            continue
        sdm = mean[(prediction, "sdm")]
        margins = {m: sdm - v for (p, m), v in mean.items() if p == prediction and m != "sdm"}
        met = {}
        for baseline in GOAL_BASELINES[prediction]:
            if baseline in margins:
                slack = DDPM_SLACK if baseline == "teacher-ddpm100" else 0.0
                met[baseline] = bool(margins[baseline] >= -slack - 1e-9)
        out[prediction] = {"sdm": sdm, "margins": margins, "met": met, "all_met": all(met.values())}
    return out


def write(rows: list[dict], out: Path, command: str, settings: dict) -> list[dict]:
    """JSON + PNG with every row, means and goals over whole units only; returns the whole-unit rows."""
    whole = whole_unit_rows(rows)
    summary = tb.summarize(whole)
    extra = {"units_whole": len({unit_of(r) for r in whole}), "summary": summary,
             "goals": goals(summary), "by_task": by_task(whole)}
    tb.write_results(rows, out, command, settings, extra=extra,
                     title="One-step distillation vs teacher samplers on MetaWorld v3")
    return whole


def resume_from_results(out: Path, work: Path, settings: dict) -> int:
    """Row files for the whole units a committed result of the same settings already holds.

    The work folder lives on one machine; the committed JSON travels with the repository, so a
    benchmark stopped on one machine goes on from its last written table on another. A unit with
    some methods missing is run again from its teacher: the teacher it had may be gone.
    """
    if not out.exists():
        return 0
    previous = json.loads(out.read_text())
    same = ("episodes", "distill_steps", "batch_size", "methods")
    if any(previous["settings"].get(k) != settings[k] for k in same):
        return 0
    units: dict[Unit, dict[str, list[dict]]] = {}
    for row in whole_unit_rows(previous["rows"]):
        method = "teacher" if row["method"].startswith("teacher-") else row["method"]
        units.setdefault(unit_of(row), {}).setdefault(method, []).append(row)
    for unit, by_method in units.items():
        for method, rows in by_method.items():
            path = row_file(work, *unit, method)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rows, indent=1))
    return len(units)


def main(args: argparse.Namespace) -> int:
    check_methods()
    tasks = args.tasks or tb.TASKS
    seeds = args.seeds if args.seeds is not None else tb.SEEDS
    predictions = args.predictions or tb.PREDICTIONS
    episodes = args.episodes or tb.DEFAULTS["episodes"]
    steps = args.steps or DEFAULTS["steps"]
    batch_size = args.batch_size or DEFAULTS["batch_size"]
    jobs = args.jobs or DEFAULTS["jobs"]
    work = Path(args.work) if args.work else tb.default_work_dir()
    units = [(t, p, s) for t in tasks for p in predictions for s in seeds]
    settings = {"tasks": tasks, "seeds": seeds, "predictions": predictions, "episodes": episodes,
                "distill_steps": steps, "batch_size": batch_size, "methods": METHODS, "work": str(work)}
    out = Path(args.out)
    resumed = resume_from_results(out, work, settings)
    if resumed:
        print(f"resumed {resumed} finished units from {out}")

    def pending(unit: Unit) -> list[str]:
        """The unit's runs not done yet; the teacher's first when it or its artifact is missing."""
        todo = [m for m in METHODS[unit[1]] if not row_file(work, *unit, m).exists()]
        teacher_here = (tb.teacher_dir(work, *unit) / "policy.json").exists()
        if not row_file(work, *unit, "teacher").exists() or (todo and not teacher_here):
            todo.insert(0, "teacher")
        return todo

    runs = {u: pending(u) for u in units}
    total = sum(len(v) for v in runs.values())
    print(f"distillation benchmark: {total} runs to do in {work}")
    command = "python -m sdm_controller " + " ".join(sys.argv[1:])
    for task in sorted({t for (t, _, _), todo in runs.items() if todo}):
        tb.ensure_dataset(work, task)  # before the workers, which must not build one twice

    def submit(pool: ProcessPoolExecutor, unit: Unit, method: str) -> Future:
        if method == "teacher":  # also trains and evaluates a missing teacher, so it runs before the unit's methods
            return pool.submit(retime_teacher, *unit, str(work), episodes)
        return pool.submit(run_one, *unit, method, str(work), episodes, steps, batch_size)

    # Depth first: a unit's distillation runs go ahead of the next teacher, so a stopped run leaves
    # whole units behind rather than 48 teachers and no students.
    queue = [u for u in units if runs[u]]
    from tqdm import tqdm

    ready: list[tuple[Unit, str]] = []

    def next_run() -> tuple[Unit, str]:
        if ready:
            return ready.pop(0)
        unit = queue.pop(0)
        first, *rest = runs[unit]
        if first != "teacher":
            ready.extend((unit, m) for m in rest)
        return unit, first  # a teacher's methods are queued once it is done

    with ProcessPoolExecutor(max_workers=jobs) as pool, tqdm(total=total, desc="distill runs") as bar:
        in_flight: dict[Future, tuple[Unit, str]] = {}
        while queue or ready or in_flight:
            while len(in_flight) < jobs and (ready or queue):
                unit, method = next_run()
                in_flight[submit(pool, unit, method)] = (unit, method)
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                unit, method = in_flight.pop(future)
                future.result()
                if method == "teacher":
                    ready.extend((unit, m) for m in runs[unit][1:])
                bar.update(1)
            write(collect_rows(work), out, command, settings)
    whole = write(collect_rows(work), out, command, settings)
    print_table(whole)
    return 0


def print_table(whole: list[dict]) -> None:
    """Per-task means, the overall means and the goals, for whole units."""
    for prediction in [p for p in tb.PREDICTIONS if any(r["prediction"] == p for r in whole)]:
        methods = [f"teacher-{m}{n}" for m, n in tb.SAMPLERS] + METHODS[prediction]
        print(f"\n{prediction}: mean success over seeds (whole units)")
        print(f"{'task':<18}" + "".join(f"{m.removeprefix('teacher-'):>12}" for m in methods))
        cells = {(i["task"], i["method"]): i["success"] for i in by_task(whole) if i["prediction"] == prediction}
        for task in dict.fromkeys(t for t, _ in cells):
            print(f"{task:<18}" + "".join(f"{cells[(task, m)]:>12.2f}" if (task, m) in cells else f"{'-':>12}"
                                          for m in methods))
    summary = tb.summarize(whole)
    for item in summary:
        print(f"mean {item['prediction']:<8}{item['method']:<18} success {item['success']:.3f} over "
              f"{item['runs']:>2} units, {item['ms_per_chunk']:.1f} ms/chunk (batch 1)")
    for prediction, goal in goals(summary).items():
        verdict = ", ".join(f"{'>=' if ok else '<'} {name}" for name, ok in goal["met"].items())
        print(f"goals {prediction}: SDM {goal['sdm']:.3f}: {verdict}")
