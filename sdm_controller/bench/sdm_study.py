"""Why SDM degrades, one suspect at a time: distillation variants with per-checkpoint diagnostics.

Each variant is the ``sdm`` method at the settings it had before the study (``BASELINE``) with
one suspect changed (``CHANGES``). Every run
distills the same teacher on the same data, evaluates its EMA generator every ``--eval-every``
iterations on the teacher benchmark's 50 fixed episodes, and logs the diagnostics of
``distill/diagnostics.py`` at the same checkpoints. The generator before any update (the teacher
read once, as G starts) and the teacher's own DDIM-1 and DDIM-10 are evaluated once per teacher,
as the reference lines.

Resumable: one row file per (teacher, variant) in the work folder; a restart runs what is missing.
Writes ``benchmarks/results/sdm_ablation.json`` and a PNG of success and diagnostics against
iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sdm_controller.bench import teacher_benchmark as tb

#: The ``sdm`` settings the study starts from: the preset before it (G at 5e-5, half F's rate).
#: Written out, so that the variants mean the same runs whatever the preset is now.
BASELINE: dict[str, Any] = {"lr_generator": 5e-5, "lr_fake": 1e-4, "fake_warmup_steps": 50, "sample_clamp": True}
#: variant -> its change to ``BASELINE``; each tests one suspect.
CHANGES: dict[str, dict[str, Any]] = {
    "baseline": {},
    "t_gen_99": {"generator_timestep": 99},  # x0 teachers get t = T = 100, one past their training range
    "f_leads_5": {"update_ratio": 5},  # F lagging G: five F updates per G update (the release's ratio)
    "lr_g_5e-6": {"lr_generator": 5e-6},  # Adam turning a noisy gradient into full-size steps (the new preset)
    "beta1_0": {"betas": (0.0, 0.999)},  # no momentum on a noisy gradient (OneDP's choice)
    "lr_g_5e-6_beta1_0": {"lr_generator": 5e-6, "betas": (0.0, 0.999)},  # the two that helped, together
    "clip_0.1": {"grad_clip": 0.1},
    "normalizer_sample": {"score_normalizer": "sample"},  # DMD's per-sample normaliser
    "t_uniform": {"t_sampler": "uniform"},  # every noise level in [2, 95] instead of the 10-point grid
    "ema_0.99": {"generator_ema": 0.99},  # EMA decay against run length
    "ema_flat_0.99": {"generator_ema": 0.99, "generator_ema_warmup": False},  # no warm-up: G starts good
    "warmup_200": {"fake_warmup_steps": 200},  # a longer F-only warm-up
    "lr_f_1e-5": {"lr_fake": 1e-5},  # F as a raw Adam iterate at 1e-4 denoises G's samples worse than R does
    "lr_both_1e-5": {"lr_fake": 1e-5, "lr_generator": 1e-5},
    "anchor_teacher": {"anchor": "teacher"},  # DMD's regression onto the teacher's DDIM-10 sample from G's noise
    "anchor_demos": {"anchor": "demos"},  # regression onto the demonstration chunk
    # the suspects that helped, together: F leads G, small G steps, the paired teacher anchor, an
    # EMA that starts at the teacher
    "recipe": {"update_ratio": 5, "lr_generator": 1e-5, "anchor": "teacher", "generator_ema": 0.99,
               "generator_ema_warmup": False},
}
VARIANTS: dict[str, dict[str, Any]] = {name: {**BASELINE, **change} for name, change in CHANGES.items()}
DEFAULTS = {"steps": 1000, "eval_every": 200, "episodes": 50, "batch_size": 128, "teacher_steps": 1000}


def default_work_dir() -> Path:
    root = Path(os.environ.get("SDM_CACHE", Path.home() / ".cache" / "sdm_controller"))
    return root / "bench" / "sdm_study"


def teacher_label(teacher: Path) -> str:
    return "__".join(teacher.resolve().parts[-4:])


def reference_rows(teacher: Path, task: str, episodes: int) -> list[dict]:
    """The teacher's DDIM-10 and DDIM-1, and G before any update, on the same episodes."""
    import torch

    from sdm_controller.bench.metaworld_eval import policy_act, teacher_act
    from sdm_controller.distill.configuration_distill import DistillConfig
    from sdm_controller.distill.method import generator_timestep
    from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
    from sdm_controller.runtime.artifact import load_teacher

    policy, _ = load_teacher(teacher)
    suite = tb.suite_for(task, episodes)
    rows = []
    for steps in (10, 1):
        result = suite.evaluate(teacher_act(policy, steps, "ddim"), episodes, policy.config.n_obs_steps)
        rows.append({"variant": f"teacher-ddim{steps}", "step": 0, "success": result.success})
    initial = OneStepPolicy(policy.config, policy.normalizer.stats,
                            GeneratorSpec(timestep=generator_timestep(policy, DistillConfig.for_method("sdm"))))
    initial.load_state_dict(policy.state_dict())
    with torch.no_grad():
        result = suite.evaluate(policy_act(initial.eval()), episodes, policy.config.n_obs_steps)
    rows.append({"variant": "generator-at-init", "step": 0, "success": result.success})
    return rows


def run_variant(teacher: Path, dataset: Path, task: str, variant: str, work: Path, steps: int, eval_every: int,
                episodes: int, batch_size: int) -> dict:
    from sdm_controller.bench.metaworld_eval import policy_act
    from sdm_controller.distill.configuration_distill import DistillConfig
    from sdm_controller.distill.trainer import distill

    suite = tb.suite_for(task, episodes)

    def evaluate(policy) -> float:
        return suite.evaluate(policy_act(policy), episodes, policy.config.n_obs_steps).success

    config = DistillConfig.for_method("sdm", steps=steps, batch_size=batch_size, eval_every=eval_every,
                                      **VARIANTS[variant])
    out = work / "runs" / teacher_label(teacher) / variant
    start = time.perf_counter()
    history = distill(teacher, dataset, out, config, evaluate=evaluate, progress=False)
    return {"variant": variant, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in CHANGES[variant].items()},
            "eval_step": history["eval_step"], "eval_success": history["eval_success"],
            "diagnostics": history["diagnostics"], "seconds": round(time.perf_counter() - start, 1)}


def plot(result: dict, path: Path) -> None:
    from sdm_controller.bench.plots import _pyplot

    plt = _pyplot()
    panels = [("success", "success (50 episodes)"), ("drift", "RMS drift of G from its start"),
              ("dm_cos_teacher", "cos(-g, toward teacher sample)"), ("teacher_gap", "RMS gap to teacher DDIM-10"),
              ("fake_dsm", "F's DSM loss on G's samples"), ("out_of_range", "share of actions outside [-1, 1]")]
    units = result["units"]
    fig, axes = plt.subplots(len(units), len(panels), figsize=(4 * len(panels), 3.2 * len(units)), squeeze=False)
    for row_axes, unit in zip(axes, units, strict=True):
        for ax, (key, title) in zip(row_axes, panels, strict=True):
            for run in unit["runs"]:
                if key == "success":
                    xs, ys = [0, *run["eval_step"]], [unit["reference"]["generator-at-init"], *run["eval_success"]]
                else:
                    xs = [d["step"] for d in run["diagnostics"]]
                    ys = [d[key] if d[key] is not None else np.nan for d in run["diagnostics"]]
                ax.plot(xs, ys, marker=".", label=run["variant"])
            if key == "success":
                for name, style in (("teacher-ddim10", "--"), ("teacher-ddim1", ":")):
                    ax.axhline(unit["reference"][name], color="k", linestyle=style, label=name)
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{unit['task']}: {title}", fontsize=9)
            ax.set_xlabel("distillation iteration")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    import torch

    from sdm_controller.bench.machine import describe_machine
    from sdm_controller.sim.metaworld import resolve_task

    torch.set_num_threads(1)
    variants = args.variants or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        from sdm_controller.errors import ConfigError

        raise ConfigError(f"variant '{unknown[0]}' is unknown; expected some of {list(VARIANTS)}")
    for task in args.tasks:
        resolve_task(task)
    teacher_steps = args.teacher_steps or DEFAULTS["teacher_steps"]
    teacher_work = Path(args.teacher_work) if args.teacher_work else tb.default_work_dir()
    work = Path(args.work) if args.work else default_work_dir()
    steps, eval_every = args.steps or DEFAULTS["steps"], args.eval_every or DEFAULTS["eval_every"]
    episodes, batch_size = args.episodes or DEFAULTS["episodes"], args.batch_size or DEFAULTS["batch_size"]
    out = Path(args.out)
    units = []
    for task in args.tasks:
        # the teacher benchmark's recipe: built here when its work folder does not have it yet
        teacher = tb.build_teacher(teacher_work, task, "sample", args.seed, teacher_steps, 128, "tiny")
        dataset = tb.ensure_dataset(teacher_work, task)
        label = teacher_label(teacher)
        rows_dir = work / "rows" / label
        rows_dir.mkdir(parents=True, exist_ok=True)
        reference_file = rows_dir / "reference.json"
        if not reference_file.exists():
            reference_file.write_text(json.dumps(reference_rows(teacher, task, episodes)))
        for variant in variants:
            path = rows_dir / f"{variant}.json"
            if not path.exists():
                print(f"sdm study: {label} {variant}", flush=True)
                result = run_variant(teacher, dataset, task, variant, work, steps, eval_every, episodes, batch_size)
                path.write_text(json.dumps(result))
                print(f"  success {result['eval_success']} in {result['seconds']} s", flush=True)
        reference = {r["variant"]: r["success"] for r in json.loads(reference_file.read_text())}
        runs = [json.loads((rows_dir / f"{v}.json").read_text()) for v in variants if (rows_dir / f"{v}.json").exists()]
        units.append({"teacher": label, "task": resolve_task(task), "reference": reference, "runs": runs})
    result = {"machine": describe_machine(), "command": "python -m sdm_controller " + " ".join(sys.argv[1:]),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "settings": {"steps": steps, "eval_every": eval_every, "episodes": episodes, "batch_size": batch_size,
                           "teacher": {"prediction": "sample", "unet": "tiny", "steps": teacher_steps,
                                       "seed": args.seed, "recipe": "bench teacher's build_teacher"},
                           "baseline": BASELINE, "variants": {v: CHANGES[v] for v in variants}},
              "units": units,
              "rows": [{"task": u["task"], "variant": r["variant"], "step": s, "success": v}
                       for u in units for r in u["runs"] for s, v in zip(r["eval_step"], r["eval_success"],
                                                                         strict=True)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=list))
    plot(result, out.with_suffix(".png"))
    for unit in units:
        print(f"{unit['task']}: reference {unit['reference']}")
        for run in unit["runs"]:
            print(f"  {run['variant']:<20}" + " ".join(f"{s:.2f}" for s in run["eval_success"]))
    return 0
