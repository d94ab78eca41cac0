"""Distillation benchmark: every one-step method beside its teacher's samplers, same protocol.

A *unit* is one (task, teacher type, seed): one teacher, trained here by the teacher benchmark's
recipe (``teacher_benchmark.build_teacher``) at ``--teacher-steps``, and every method run on it:

* the teacher's own samplers (DDPM-100, DDIM-10, DDIM-4, DDIM-2, DDIM-1);
* the distillation methods (``DISTILLED``: G starts from the teacher, ``--distill-steps``);
* the teacher-free baselines (``TEACHER_FREE``: trained on the demos alone, with the teacher's
  UNet preset and training budget), the price a teacher has to beat.

Every distilled or teacher-free run is evaluated on the same 50 episodes at every ``--eval-every``
of its iterations (a teacher-free run, 10x longer at the default budgets, as often on its own
budget: the same number of points), so each row holds a success-vs-iterations curve beside its
final success, its training time and its teacher's.

Resumable per run: every finished run is one row file in the work folder, and a restart skips it.
The work folder is keyed by the budget (teachers by ``--teacher-steps``, students and rows by the
rest of it), so two budgets never mix. Runs go depth first, one unit at a time, and only whole
units enter a mean or are resumed from a committed table: a unit's rows always share one teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sdm_controller.bench import teacher_benchmark as tb
from sdm_controller.errors import ConfigError

Unit = tuple[str, str, int]  # (task, prediction, seed): one teacher and all its students
#: Teacher training steps. The budget study (bench/budget_study.py ->
#: benchmarks/results/budget_study.json) decides this budget; 1000 (the teacher benchmark's) until it has.
TEACHER_STEPS = 1000
DISTILL_FRACTION = 0.10  # distillation iterations per teacher step: the cost ceiling
DISTILL_STEPS = round(TEACHER_STEPS * DISTILL_FRACTION)
CURVE_POINTS = 5  # evaluations per run when --eval-every is not given
SAMPLERS = [("ddpm", 100), ("ddim", 10), ("ddim", 4), ("ddim", 2), ("ddim", 1)]
DISTILLED = ["sdm", "sdm-literal", "onedp-s", "onedp-d", "cd"]
TEACHER_FREE = ["regression", "meanflow"]
#: Which registered methods run per teacher type (``check_methods`` holds them to the registry).
METHODS = {"epsilon": DISTILLED + TEACHER_FREE, "sample": DISTILLED + TEACHER_FREE}
DEFAULTS = {"predictions": ["sample"], "batch_size": 128, "jobs": 2}
#: The goals: SDM at least each of these (DDPM-100 less ``DDPM_SLACK``); no curve falls more than
#: ``FALL_LIMIT`` from its best to its last point; distillation at most ``COST_CEILING`` of the teacher's time.
GOAL_BASELINES = ["teacher-ddpm100", "teacher-ddim1", "regression", "meanflow", "onedp-s", "onedp-d", "cd"]
DDPM_SLACK = 0.02
FALL_LIMIT = 0.10
COST_CEILING = 0.10
TOLERANCE = 1e-9  # a goal met exactly is met


@dataclass(frozen=True)
class Budget:
    """Everything a row depends on besides its unit and method: two budgets share no folder or table."""

    teacher_steps: int = TEACHER_STEPS
    distill_steps: int = DISTILL_STEPS
    eval_every: int = DISTILL_STEPS // CURVE_POINTS  # distillation iterations between evaluations
    episodes: int = tb.DEFAULTS["episodes"]
    batch_size: int = DEFAULTS["batch_size"]  # distillation batch
    teacher_batch_size: int = tb.DEFAULTS["batch_size"]  # teachers and teacher-free baselines
    unet: str = tb.DEFAULTS["unet"]  # teachers and teacher-free baselines

    def __post_init__(self) -> None:
        for name in ("teacher_steps", "distill_steps", "eval_every", "episodes", "batch_size", "teacher_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"bench distill: {name.replace('_', '-')} must be positive, "
                                  f"got {getattr(self, name)}")

    @property
    def free_eval_every(self) -> int:
        """A teacher-free run's evaluation interval: as many points over its (teacher's) budget."""
        return max(1, round(self.eval_every * self.teacher_steps / self.distill_steps))

    def settings(self) -> dict:
        return {**asdict(self), "teacher_free_eval_every": self.free_eval_every,
                "samplers": [f"{m}{n}" for m, n in SAMPLERS]}

    def teacher_work(self, root: Path) -> Path:
        """Data and teachers of this teacher budget (the teacher benchmark's layout)."""
        return root / f"teachers_{self.unet}_batch{self.teacher_batch_size}_steps{self.teacher_steps}"

    def run_dir(self, root: Path) -> Path:
        """Students and row files of this whole budget."""
        return self.teacher_work(root) / "runs" / (f"distill{self.distill_steps}_every{self.eval_every}_batch"
                                                   f"{self.batch_size}_episodes{self.episodes}")


def default_work_dir() -> Path:
    root = Path(os.environ.get("SDM_CACHE", Path.home() / ".cache" / "sdm_controller"))
    return root / "bench" / "distill_metaworld"


def check_methods(methods: dict[str, list[str]] | None = None) -> None:
    """Every method the benchmark runs is registered, and of its kind: fail at the start, not after the teachers."""
    from sdm_controller.distill.method import get_method

    for names in (methods or METHODS).values():
        for name in names:
            uses_teacher = get_method(name).uses_teacher
            if uses_teacher != (name not in TEACHER_FREE):
                kind = "distils a teacher" if uses_teacher else "trains without a teacher"
                raise ConfigError(f"bench distill: method '{name}' {kind}; move it between DISTILLED and TEACHER_FREE")


def row_file(run: Path, task: str, prediction: str, seed: int, method: str) -> Path:
    return run / "rows" / f"{task}__{prediction}__seed{seed}__{method}.json"


def student_dir(run: Path, task: str, prediction: str, seed: int, method: str) -> Path:
    return run / "students" / task / prediction / f"seed{seed}" / method


def kind_of(method: str) -> str:
    if method.startswith("teacher-"):
        return "teacher"
    return "teacher-free" if method in TEACHER_FREE else "distilled"


def _write_rows(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path.name


def run_teacher(task: str, prediction: str, seed: int, root: str, budget: Budget) -> str:
    """Train the unit's teacher unless it exists, then evaluate and time every sampler.

    A teacher trained here replaces one that is gone: the unit's runs of that one are dropped,
    so the unit's rows always describe one teacher.
    """
    import torch

    torch.set_num_threads(1)
    from sdm_controller.bench.metaworld_eval import teacher_act
    from sdm_controller.runtime.artifact import load_teacher

    work, run = budget.teacher_work(Path(root)), budget.run_dir(Path(root))
    if not (tb.teacher_dir(work, task, prediction, seed) / "policy.json").exists():
        for path in (run / "rows").glob(f"{task}__{prediction}__seed{seed}__*.json"):
            path.unlink()
        shutil.rmtree(run / "students" / task / prediction / f"seed{seed}", ignore_errors=True)
    artifact = tb.build_teacher(work, task, prediction, seed, budget.teacher_steps, budget.teacher_batch_size,
                                budget.unet)
    policy, spec = load_teacher(artifact)
    suite = tb.suite_for(task, budget.episodes)
    probe = tb.probe_observation(work / "data" / f"{task}.zarr", policy.config.n_obs_steps)
    rows = []
    for method, n in SAMPLERS:
        result = suite.evaluate(teacher_act(policy, n, method, seed=seed), budget.episodes, policy.config.n_obs_steps)
        rows.append({
            "task": task, "method": f"teacher-{method}{n}", "kind": "teacher", "prediction": prediction, "seed": seed,
            "episodes": result.episodes, "success": result.success,
            "ms_per_chunk": tb.batch1_latency_ms(policy, probe, n, method),
            "ms_per_chunk_batched": result.ms_per_chunk, "mean_success_steps": result.mean_success_steps,
            "train_steps": spec.provenance["steps"], "train_seconds": spec.provenance["train_seconds"],
            "teacher_train_seconds": spec.provenance["train_seconds"], "final_loss": spec.provenance["final_loss"],
            "eval_wall_s": round(result.wall_s, 1),
        })
    return _write_rows(row_file(run, task, prediction, seed, "teacher"), rows)


def run_method(task: str, prediction: str, seed: int, method: str, root: str, budget: Budget) -> str:
    """Distil the unit's teacher with ``method`` (or train the teacher-free ``method`` on its demos),
    evaluating at every checkpoint on the same episodes; one row with the curve."""
    import torch

    torch.set_num_threads(1)
    from sdm_controller.bench.metaworld_eval import policy_act
    from sdm_controller.distill.configuration_distill import DistillConfig
    from sdm_controller.distill.trainer import distill
    from sdm_controller.runtime.artifact import load_one_step, read_spec

    work, run = budget.teacher_work(Path(root)), budget.run_dir(Path(root))
    teacher = tb.teacher_dir(work, task, prediction, seed)
    dataset = work / "data" / f"{task}.zarr"
    out = student_dir(run, task, prediction, seed, method)
    shutil.rmtree(out, ignore_errors=True)  # a run stopped half-way starts again
    suite = tb.suite_for(task, budget.episodes)  # built before the clock starts
    evaluations: list = []
    eval_seconds = 0.0

    def evaluate(policy) -> float:
        nonlocal eval_seconds
        start = time.perf_counter()
        result = suite.evaluate(policy_act(policy, seed=seed), budget.episodes, policy.config.n_obs_steps)
        evaluations.append(result)
        eval_seconds += time.perf_counter() - start
        return result.success

    if method in TEACHER_FREE:
        config = DistillConfig.for_method(method, steps=budget.teacher_steps, batch_size=budget.teacher_batch_size,
                                          seed=seed, eval_every=budget.free_eval_every,
                                          policy={"unet_preset": budget.unet})
        history = distill(None, dataset, out, config, evaluate=evaluate, progress=False)
    else:
        config = DistillConfig.for_method(method, steps=budget.distill_steps, batch_size=budget.batch_size, seed=seed,
                                          eval_every=budget.eval_every)
        history = distill(teacher, dataset, out, config, evaluate=evaluate, progress=False)
    policy, _ = load_one_step(out)
    probe = tb.probe_observation(dataset, policy.config.n_obs_steps)
    final = evaluations[-1]  # the last checkpoint is the saved artifact
    row = {
        "task": task, "method": method, "kind": kind_of(method), "prediction": prediction, "seed": seed,
        "episodes": final.episodes, "success": final.success,
        "ms_per_chunk": tb.batch1_latency_ms(policy, probe, 1, "one-step"),
        "ms_per_chunk_batched": final.ms_per_chunk, "mean_success_steps": final.mean_success_steps,
        "train_steps": config.steps,
        # Wall time of the run less its evaluations (checkpoint writes and diagnostics stay in).
        "train_seconds": round(history["seconds"] - eval_seconds, 1),
        "teacher_train_seconds": read_spec(teacher).provenance["train_seconds"],
        "eval_seconds": round(eval_seconds, 1),
        "curve_steps": history["eval_step"], "curve_success": history["eval_success"],
        "eval_wall_s": round(final.wall_s, 1),
    }
    if history.get("diagnostics"):
        row["diagnostics"] = history["diagnostics"]
    return _write_rows(row_file(run, task, prediction, seed, method), [row])


def collect_rows(run: Path) -> list[dict]:
    return [row for path in sorted((run / "rows").glob("*.json")) for row in json.loads(path.read_text())]


def unit_of(row: dict) -> Unit:
    return row["task"], row["prediction"], row["seed"]


def is_whole(unit_rows: list[dict], methods: list[str]) -> bool:
    """A unit with one row per teacher sampler and per method, nothing more."""
    counts: dict[str, int] = {}
    for row in unit_rows:
        counts[row["method"]] = counts.get(row["method"], 0) + 1
    return counts == {**{f"teacher-{m}{n}": 1 for m, n in SAMPLERS}, **{m: 1 for m in methods}}


def whole_unit_rows(rows: list[dict], methods: dict[str, list[str]]) -> list[dict]:
    """The rows of whole units only, so every mean compares methods over the same teachers."""
    units: dict[Unit, list[dict]] = {}
    for row in rows:
        units.setdefault(unit_of(row), []).append(row)
    return [row for unit, items in units.items() if is_whole(items, methods.get(unit[1], [])) for row in items]


def by_task(rows: list[dict]) -> list[dict]:
    """Mean success per (task, prediction, method) over seeds: where a method wins or loses."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["prediction"], row["method"]), []).append(row["success"])
    order = {task: i for i, task in enumerate(tb.TASKS)}
    return [{"task": t, "prediction": p, "method": m, "seeds": len(v), "success": sum(v) / len(v)}
            for (t, p, m), v in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1:]))]


def mean_curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    """Success at each evaluated iteration, mean over the rows evaluated there."""
    points: dict[int, list[float]] = {}
    for row in rows:
        for step, success in zip(row.get("curve_steps") or [], row.get("curve_success") or [], strict=True):
            points.setdefault(step, []).append(success)
    steps = sorted(points)
    return steps, [float(np.mean(points[s])) for s in steps]


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(rows: list[dict]) -> list[dict]:
    """Per (prediction, method) over tasks x seeds: mean success, median ms per chunk (batch 1),
    mean train steps and seconds, the teacher's mean seconds and their ratio, the mean curve."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["prediction"], row["method"]), []).append(row)
    summary = []
    for (prediction, method), items in sorted(groups.items()):
        seconds = _mean([r.get("train_seconds") for r in items])
        teacher_seconds = _mean([r.get("teacher_train_seconds") for r in items])
        steps, success = mean_curve(items)
        summary.append({
            "prediction": prediction, "method": method, "kind": kind_of(method), "runs": len(items),
            "success": float(np.mean([r["success"] for r in items])),
            "ms_per_chunk": float(np.median([r["ms_per_chunk"] for r in items])),
            "train_steps": _mean([r.get("train_steps") for r in items]),
            "train_seconds": seconds, "teacher_train_seconds": teacher_seconds,
            "cost_ratio": seconds / teacher_seconds if seconds is not None and teacher_seconds else None,
            "curve_steps": steps, "curve_success": success,
        })
    return summary


def goals(summary: list[dict]) -> dict[str, dict]:
    """The issue's goals per teacher type, from the whole-unit means.

    ``met``: SDM's success within 2 points of the teacher's DDPM-100 or above it, and at or above
    DDIM-1, the teacher-free baselines and every other distillation method; ``margins`` is SDM
    minus each other method (negative: the other one is better). ``stable``: no method's mean
    curve falls more than 0.10 from its best to its last evaluation. ``cost``: each distillation
    method's mean training time at most 10 % of its teacher's.
    """
    out: dict[str, dict] = {}
    for prediction in sorted({item["prediction"] for item in summary}):
        items = {item["method"]: item for item in summary if item["prediction"] == prediction}
        sdm = items["sdm"]["success"] if "sdm" in items else None
        margins = {m: sdm - i["success"] for m, i in items.items() if m != "sdm"} if sdm is not None else {}
        met = {b: bool(margins[b] >= -(DDPM_SLACK if b == "teacher-ddpm100" else 0.0) - TOLERANCE)
               for b in GOAL_BASELINES if b in margins}
        stable = {}
        for method, item in items.items():
            if item["curve_success"]:
                best, last = max(item["curve_success"]), item["curve_success"][-1]
                stable[method] = {"best": best, "last": last, "fall": best - last,
                                  "met": bool(best - last <= FALL_LIMIT + TOLERANCE)}
        cost = {m: {"ratio": i["cost_ratio"], "met": bool(i["cost_ratio"] <= COST_CEILING + TOLERANCE)}
                for m, i in items.items() if i["kind"] == "distilled" and i["cost_ratio"] is not None}
        verdicts = list(met.values()) + [g["met"] for g in stable.values()] + [g["met"] for g in cost.values()]
        out[prediction] = {"sdm": sdm, "margins": margins, "met": met, "stable": stable, "cost": cost,
                           "all_met": sdm is not None and all(verdicts)}
    return out


def curves_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_curves.png")


def write(rows: list[dict], out: Path, command: str, settings: dict) -> list[dict]:
    """JSON + success bars + curves, means and goals over whole units only; returns the whole-unit rows."""
    from sdm_controller.bench.plots import plot_success_curves

    whole = whole_unit_rows(rows, settings["methods"])
    summary = summarize(whole)
    extra = {"units_whole": len({unit_of(r) for r in whole}), "summary": summary, "goals": goals(summary),
             "by_task": by_task(whole)}
    tb.write_results(rows, out, command, settings, extra=extra,
                     title="One-step methods vs teacher samplers on MetaWorld v3")
    panels = {item["prediction"]: {} for item in summary}
    references = {item["prediction"]: {} for item in summary}
    for item in summary:
        if item["curve_steps"]:
            panels[item["prediction"]][item["method"]] = (item["curve_steps"], item["curve_success"])
        elif item["method"] in ("teacher-ddpm100", "teacher-ddim1"):
            references[item["prediction"]][item["method"].removeprefix("teacher-")] = item["success"]
    plot_success_curves(panels, curves_path(out), title="Success against training iterations\n(mean over tasks "
                        "and seeds, whole units)", xlabel="iterations (log)", references=references)
    return whole


#: Settings that a row's value depends on: a table written with others is never resumed from.
BUDGET_KEYS = ("teacher_steps", "distill_steps", "eval_every", "teacher_free_eval_every", "episodes", "batch_size",
               "teacher_batch_size", "unet", "samplers")


def resume_from_results(out: Path, run: Path, settings: dict) -> int:
    """Row files for the whole units a committed result of the same budget already holds.

    The work folder lives on one machine; the committed JSON travels with the repository, so a
    benchmark stopped on one machine goes on from its last written table on another. A table of
    another budget (or of the previous benchmark, without one) is left out, with a printed line.
    """
    if not out.exists():
        return 0
    previous = json.loads(out.read_text())
    other = {k: previous["settings"].get(k) for k in BUDGET_KEYS if previous["settings"].get(k) != settings[k]}
    if other:
        print(f"{out} holds results of another budget ({', '.join(f'{k} {v}' for k, v in other.items())}): starting "
              "fresh, none of its rows are taken")
        return 0
    units: dict[Unit, dict[str, list[dict]]] = {}
    for row in whole_unit_rows(previous["rows"], previous["settings"]["methods"]):
        method = "teacher" if row["method"].startswith("teacher-") else row["method"]
        units.setdefault(unit_of(row), {}).setdefault(method, []).append(row)
    for unit, by_method in units.items():
        for method, rows in by_method.items():
            path = row_file(run, *unit, method)
            if not path.exists():
                _write_rows(path, rows)
    return len(units)


def selected_methods(predictions: list[str], names: list[str] | None) -> dict[str, list[str]]:
    """The methods per teacher type, limited to ``names`` (in the benchmark's order) when given."""
    known = sorted({m for p in predictions for m in METHODS[p]})
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ConfigError(f"bench distill: method '{unknown[0]}' is not one the benchmark runs; "
                          f"expected some of {known}")
    return {p: [m for m in METHODS[p] if names is None or m in names] for p in predictions}


def main(args: argparse.Namespace) -> int:
    teacher_steps = args.teacher_steps or TEACHER_STEPS
    distill_steps = args.distill_steps or round(teacher_steps * DISTILL_FRACTION)
    budget = Budget(teacher_steps=teacher_steps, distill_steps=distill_steps,
                    eval_every=args.eval_every or max(1, distill_steps // CURVE_POINTS),
                    episodes=args.episodes or tb.DEFAULTS["episodes"],
                    batch_size=args.batch_size or DEFAULTS["batch_size"])
    tasks = args.tasks or tb.TASKS
    seeds = args.seeds if args.seeds is not None else tb.SEEDS
    predictions = args.predictions or DEFAULTS["predictions"]
    unknown = [p for p in predictions if p not in METHODS]
    if unknown:
        raise ConfigError(f"bench distill: prediction '{unknown[0]}' is unknown; expected some of {list(METHODS)}")
    methods = selected_methods(predictions, args.methods)
    check_methods(methods)
    jobs = args.jobs or DEFAULTS["jobs"]
    root = Path(args.work) if args.work else default_work_dir()
    run = budget.run_dir(root)
    from sdm_controller.sim.metaworld import resolve_task

    for task in tasks:
        resolve_task(task)
    units = [(t, p, s) for t in tasks for p in predictions for s in seeds]
    settings = {"tasks": tasks, "seeds": seeds, "predictions": predictions, **budget.settings(), "methods": methods,
                "jobs": jobs, "work": str(root)}
    out = Path(args.out)
    resumed = resume_from_results(out, run, settings)
    if resumed:
        print(f"resumed {resumed} finished units from {out}")

    def pending(unit: Unit) -> list[str]:
        """The unit's runs not done yet, the teacher's first when its row or its artifact is missing."""
        todo = [m for m in methods[unit[1]] if not row_file(run, *unit, m).exists()]
        teacher_row = row_file(run, *unit, "teacher").exists()
        teacher_here = (tb.teacher_dir(budget.teacher_work(root), *unit) / "policy.json").exists()
        if (todo or not teacher_row) and not teacher_here:
            return ["teacher", *methods[unit[1]]]  # a new teacher: the unit's runs of the lost one are dropped
        return todo if teacher_row else ["teacher", *todo]

    runs = {u: pending(u) for u in units}
    total = sum(len(v) for v in runs.values())
    print(f"distillation benchmark: {total} runs to do in {run}")
    command = ("python -m sdm_controller " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py")
               else "python -m sdm_controller bench distill")
    for task in sorted({t for (t, _, _), todo in runs.items() if todo}):
        tb.ensure_dataset(budget.teacher_work(root), task)  # before the workers, which must not build one twice

    def submit(pool: ProcessPoolExecutor, unit: Unit, method: str) -> Future:
        if method == "teacher":  # trains a missing teacher, so it runs before the unit's methods
            return pool.submit(run_teacher, *unit, str(root), budget)
        return pool.submit(run_method, *unit, method, str(root), budget)

    # Depth first: a unit's runs go ahead of the next teacher, so a stopped run leaves whole
    # units behind rather than 24 teachers and no students.
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

    def selected(rows: list[dict]) -> list[dict]:
        return [r for r in rows
                if r["method"].startswith("teacher-") or r["method"] in methods.get(r["prediction"], [])]

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
            write(selected(collect_rows(run)), out, command, settings)
    whole = write(selected(collect_rows(run)), out, command, settings)
    print_table(whole, methods)
    return 0


def print_table(whole: list[dict], methods: dict[str, list[str]]) -> None:
    """Per-task means, the overall means with cost, and the goals, for whole units."""
    for prediction in [p for p in methods if any(r["prediction"] == p for r in whole)]:
        columns = [f"teacher-{m}{n}" for m, n in SAMPLERS] + methods[prediction]
        print(f"\n{prediction}: mean success over seeds (whole units)")
        print(f"{'task':<18}" + "".join(f"{m.removeprefix('teacher-'):>12}" for m in columns))
        cells = {(i["task"], i["method"]): i["success"] for i in by_task(whole) if i["prediction"] == prediction}
        for task in dict.fromkeys(t for t, _ in cells):
            print(f"{task:<18}" + "".join(f"{cells[(task, m)]:>12.2f}" if (task, m) in cells else f"{'-':>12}"
                                          for m in columns))
    summary = summarize(whole)
    for item in summary:
        cost = f", {item['train_seconds']:.1f} s training ({item['cost_ratio']:.2f} of the teacher's)" \
            if item["cost_ratio"] is not None else ""
        print(f"mean {item['prediction']:<8}{item['method']:<18} success {item['success']:.3f} over "
              f"{item['runs']:>2} units, {item['ms_per_chunk']:.1f} ms/chunk (batch 1){cost}")
    for prediction, goal in goals(summary).items():
        verdict = ", ".join(f"{'>=' if ok else '<'} {name}" for name, ok in goal["met"].items())
        falls = [m for m, g in goal["stable"].items() if not g["met"]]
        costly = [m for m, g in goal["cost"].items() if not g["met"]]
        sdm = f"SDM {goal['sdm']:.3f}: {verdict}" if goal["sdm"] is not None else "no SDM rows"
        print(f"goals {prediction}: {sdm}; curves falling > {FALL_LIMIT:.2f}: {falls or 'none'}; "
              f"over {COST_CEILING:.0%} of the teacher's time: {costly or 'none'}")
