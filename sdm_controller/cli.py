"""Command line: ``python -m sdm_controller <command>`` and the ``ros2 run`` executables.

Each command parses its own arguments and calls one library function; errors meant for the user
(``SdmError``) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sdm_controller.errors import SdmError

SHIPPED_POLICY = "franka_reach_sdm"  # in the package's models/ folder
SHIPPED_TEACHER = "franka_reach_teacher"


class _DefaultsFormatter(argparse.HelpFormatter):
    """Every option's default in ``--help``. An option whose default is None here takes it from a
    config dataclass (``_defaults_from``); that value is looked up only when help is shown, because
    importing the configs loads torch and every command builds every parser."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action) or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.default is None:
            lookup = getattr(action, "config_default", None)
            found = lookup() if lookup else None
            return f"{text} (default: {found})" if found is not None else text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose help, and every sub-command's, shows the defaults."""

    def __init__(self, *args, formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
                 **kwargs) -> None:
        if not issubclass(formatter_class, _DefaultsFormatter):
            formatter_class = type(f"Defaults{formatter_class.__name__}", (_DefaultsFormatter, formatter_class), {})
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def _defaults_from(parser: argparse.ArgumentParser, module: str, config: str, note: str = "") -> None:
    """Options of ``parser`` that default to None show the default of the same-named field of
    ``module.config`` in their help (``note`` is added to it)."""
    import functools

    for action in parser._actions:
        if action.option_strings and action.default is None:
            action.config_default = functools.partial(_config_default, module, config, action.dest, note)


def _config_default(module: str, config: str, name: str, note: str) -> str | None:
    import dataclasses
    import importlib

    fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), config))}
    field = fields.get(name)
    if field is None:
        return None
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return f"{value}{note}"


def _shipped(name: str) -> str:
    from sdm_controller.stack.supervisor import package_folder

    return str(package_folder("models") / name)


def _add_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="record scripted-expert demonstrations into a zarr dataset")
    src = p.add_subparsers(dest="source", required=True)
    mw = src.add_parser("metaworld", help="MetaWorld v3 scripted experts")
    mw.add_argument("--task", required=True, help="task name, e.g. drawer-open")
    mw.add_argument("--out", required=True, help="output .zarr folder")
    mw.add_argument("--num-demos", type=int, default=10, help="successful episodes to keep")
    mw.add_argument("--seed", type=int, default=0, help="env seed for the demo episodes")
    mw.add_argument("--image-size", type=int, default=None, help="also record the corner camera at this size")
    fs = src.add_parser("franka-sim", help="the reach expert in the MuJoCo bridge, recorded through the ROS stack")
    fs.add_argument("--out", required=True, help="output .zarr folder (must not exist)")
    fs.add_argument("--num-demos", type=int, default=20, help="successful episodes to save")
    fs.add_argument("--seed", type=int, default=0, help="seed of the cube placements (the bridge's task_seed)")
    fs.add_argument("--timeout-s", type=float, default=20.0, help="an episode without success by then is discarded")
    fs.add_argument("--hold-s", type=float, default=1.0,
                    help="the expert holds on the cube this long before an episode ends (recorded)")
    fs.add_argument("--log", default=None, help="the nodes' output (default: next to --out, .log)")
    fs.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the nodes")
    p.set_defaults(func=_run_collect)


def _run_collect(args: argparse.Namespace) -> int:
    from sdm_controller.data.metaworld_demos import collect_metaworld

    if args.source == "franka-sim":
        return _run_collect_franka_sim(args)
    episodes, content_hash = collect_metaworld(
        args.task, args.out, num_demos=args.num_demos, seed=args.seed, image_size=args.image_size
    )
    print(f"wrote {episodes.num_episodes} episodes ({len(episodes.action)} frames) to {args.out} [{content_hash[:19]}]")
    return 0


def _run_collect_franka_sim(args: argparse.Namespace) -> int:
    from sdm_controller.data.episodes import load_episodes
    from sdm_controller.stack.franka_sim_demos import collect_franka_sim

    results = collect_franka_sim(args.out, num_demos=args.num_demos, seed=args.seed, timeout_s=args.timeout_s,
                                 hold_s=args.hold_s, log_path=args.log, threads=args.threads)
    episodes = load_episodes(args.out)
    saved = [r for r in results if r.success]
    print(f"wrote {episodes.num_episodes} episodes ({len(episodes.action)} frames) to {args.out}; "
          f"{len(saved)} of {len(results)} expert episodes succeeded, "
          f"{sum(r.duration_s for r in saved) / max(len(saved), 1):.1f} s each on average")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a teacher diffusion policy on a dataset")
    p.add_argument("--dataset", required=True, help="zarr dataset from `collect`")
    p.add_argument("--out", required=True, help="artifact folder to write")
    p.add_argument("--config", default=None, help="YAML file with TrainConfig fields")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=None, help="windows per step")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=None, help="seed of the initialisation and the batches")
    p.add_argument("--prediction", choices=["epsilon", "sample"], default=None,
                   help="teacher parameterisation (default: sample)")
    p.add_argument("--unet", choices=["tiny", "small", "dp", "dp3"], default=None,
                   help="UNet size preset (default: small)")
    p.add_argument("--eval-task", default=None, help="MetaWorld task to evaluate on during training")
    p.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (0: at the end only)")
    p.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation")
    p.add_argument("--device", default=None, help="torch device")
    _defaults_from(p, "sdm_controller.training.teacher", "TrainConfig")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from sdm_controller.training.teacher import TrainConfig, train_teacher

    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "device": args.device,
    }
    if args.config:
        config = TrainConfig.from_yaml(args.config, **overrides)
    else:
        config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.prediction:
        config.policy["prediction_type"] = args.prediction
    if args.unet:
        config.policy["unet_preset"] = args.unet
    evaluate = None
    if args.eval_task:
        evaluate = _simulator_evaluator(args.eval_task, args.dataset, config)
    summary = train_teacher(args.dataset, args.out, config, evaluate=evaluate)
    print(f"wrote teacher artifact {summary['artifact']} (final loss {summary['final_loss']:.4f}, "
          f"{summary['train_seconds']:.0f} s)")
    return 0


def _simulator_evaluator(task: str, dataset: str, config) -> Callable:
    from sdm_controller.bench.metaworld_eval import EvalSuite, teacher_act
    from sdm_controller.data.episodes import load_episodes

    cameras = load_episodes(dataset).observation_spec.cameras
    image_size = next(iter(cameras.values()))[1] if cameras else None
    suite = EvalSuite(task, num_envs=min(config.eval_episodes, 25), seed=1, image_size=image_size)

    def evaluate(policy) -> float:
        act = teacher_act(policy, config.eval_steps, config.eval_sampler)
        return suite.evaluate(act, config.eval_episodes, policy.config.n_obs_steps).success

    return evaluate


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="roll out a policy artifact in MetaWorld and report success")
    p.add_argument("--artifact", required=True, help="teacher or one-step artifact folder")
    p.add_argument("--task", required=True, help="MetaWorld task, e.g. drawer-open")
    p.add_argument("--episodes", type=int, default=50, help="episodes per sampler")
    p.add_argument("--num-envs", type=int, default=25, help="envs stepped together")
    p.add_argument("--seed", type=int, default=1, help="evaluation seed (disjoint from demo seed 0)")
    p.add_argument(
        "--sampler",
        action="append",
        default=None,
        help="METHOD:STEPS, repeatable, for teacher artifacts (default ddpm:100 ddim:10 ddim:4 ddim:1); "
        "a one-step artifact is one call per chunk",
    )
    p.add_argument("--json", default=None, help="write the result rows here")
    p.set_defaults(func=_run_evaluate)


def _parse_sampler(text: str) -> tuple[str, int]:
    method, _, steps = text.partition(":")
    if method not in ("ddpm", "ddim") or not steps.isdigit():
        raise SdmError(f"sampler '{text}' is not METHOD:STEPS with METHOD ddpm or ddim, e.g. ddim:10")
    return method, int(steps)


def _run_evaluate(args: argparse.Namespace) -> int:
    from sdm_controller.bench.metaworld_eval import EvalSuite, check_observations, policy_act, teacher_act
    from sdm_controller.runtime.artifact import load_policy

    samplers = [_parse_sampler(s) for s in (args.sampler or ["ddpm:100", "ddim:10", "ddim:4", "ddim:1"])]
    if args.episodes <= 0:
        raise SdmError(f"--episodes must be positive, got {args.episodes}")
    policy, spec = load_policy(args.artifact)
    image_size = check_observations(spec.observation, args.task, str(args.artifact))
    if spec.kind == "teacher":
        runs = [(f"teacher-{method}{steps}", teacher_act(policy, steps, method)) for method, steps in samplers]
    else:  # one network call per chunk: the sampler options do not apply
        runs = [(str(spec.provenance.get("algorithm", "one-step")), policy_act(policy))]
    suite = EvalSuite(args.task, num_envs=min(args.num_envs, args.episodes), seed=args.seed, image_size=image_size)
    rows = []
    print(f"{'task':<22}{'method':<18}{'episodes':>9}{'success':>9}{'ms/chunk':>10}")
    try:
        for method, act in runs:
            result = suite.evaluate(act, args.episodes, policy.config.n_obs_steps)
            row = {
                "task": result.task,
                "method": method,
                "prediction": policy.config.prediction_type,
                "seed": args.seed,
                "episodes": result.episodes,
                "success": result.success,
                "ms_per_chunk": result.ms_per_chunk,
            }
            rows.append(row)
            print(f"{result.task:<22}{method:<18}{result.episodes:>9}{result.success:>9.2f}"
                  f"{result.ms_per_chunk:>10.1f}")
    finally:
        suite.close()
    if args.json:
        Path(args.json).write_text(json.dumps({"artifact": args.artifact, "rows": rows}, indent=2))
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    class ListMethods(argparse.HelpFormatter):
        """Names the registered methods only when help is shown: the registry loads torch, and
        every command builds this parser."""

        def _get_help_string(self, action: argparse.Action) -> str | None:
            if action.dest != "method":
                return action.help
            from sdm_controller.distill.method import method_names

            return f"{action.help}: one of {', '.join(method_names())}"

    p = sub.add_parser("distill", help="distill a teacher artifact into a one-step generator, or train a "
                       "teacher-free one-step baseline (regression, meanflow) on the dataset",
                       formatter_class=ListMethods)
    p.add_argument("--teacher", default=None,
                   help="teacher artifact folder (required to distil; refused by teacher-free methods)")
    p.add_argument("--dataset", required=True,
                   help="the zarr dataset (observations; actions for cd and the teacher-free methods)")
    p.add_argument("--out", required=True, help="one-step artifact folder to write")
    p.add_argument("--method", default="sdm", help="registered distillation method (default sdm)")
    p.add_argument("--steps", type=int, default=None, help="iterations")
    p.add_argument("--batch-size", type=int, default=None, help="windows per iteration")
    p.add_argument("--lr-generator", type=float, default=None, help="learning rate of the generator")
    p.add_argument("--lr-fake", type=float, default=None, help="learning rate of the fake score network")
    p.add_argument("--update-ratio", type=int, default=None, help="fake-score updates per generator update")
    p.add_argument("--fake-warmup-steps", type=int, default=None, help="fake-score-only iterations first")
    p.add_argument("--score-normalizer", choices=["batch", "sample", "none"], default=None,
                   help="what the score difference is divided by")
    p.add_argument("--generator-timestep", type=int, default=None,
                   help="timestep fed to the generator (unset: T for x0 teachers, T-2 for epsilon)")
    p.add_argument("--unet", choices=["tiny", "small", "dp", "dp3"], default=None,
                   help="UNet size preset of a teacher-free method's network (default: a teacher's, small)")
    p.add_argument("--meanflow-ratio", type=float, default=None, help="meanflow: share of samples with r != t")
    p.add_argument("--anchor", choices=["none", "teacher", "demos"], default=None,
                   help="SDM/OneDP: also regress G's sample onto the teacher's DDIM sample from the same noise, "
                   "or onto the demonstration chunk")
    p.add_argument("--anchor-weight", type=float, default=None, help="weight of that regression")
    p.add_argument("--seed", type=int, default=None, help="seed of the batches and the noise")
    p.add_argument("--device", default=None, help="torch device")
    p.add_argument("--eval-task", default=None, help="MetaWorld task for periodic evaluation")
    p.add_argument("--eval-every", type=int, default=None,
                   help="iterations between evaluations and diagnostics (0: at the end only)")
    p.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation")
    _defaults_from(p, "sdm_controller.distill.configuration_distill", "DistillConfig",
                   ", unless the method's preset sets it")
    p.set_defaults(func=_run_distill)


def _run_distill(args: argparse.Namespace) -> int:
    from sdm_controller.distill.configuration_distill import DistillConfig
    from sdm_controller.distill.trainer import check_teacher, distill

    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr_generator": args.lr_generator,
        "lr_fake": args.lr_fake,
        "update_ratio": args.update_ratio,
        "fake_warmup_steps": args.fake_warmup_steps,
        "score_normalizer": args.score_normalizer,
        "generator_timestep": args.generator_timestep,
        "policy": {"unet_preset": args.unet} if args.unet else None,
        "meanflow_ratio": args.meanflow_ratio,
        "anchor": args.anchor,
        "anchor_weight": args.anchor_weight,
        "seed": args.seed,
        "device": args.device,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
    }
    config = DistillConfig.for_method(args.method, **{k: v for k, v in overrides.items() if v is not None})
    check_teacher(config, args.teacher)
    evaluate = None
    if args.eval_task:
        from sdm_controller.bench.metaworld_eval import EvalSuite, policy_act

        suite = EvalSuite(args.eval_task, num_envs=min(config.eval_episodes, 25), seed=1)

        def evaluate(policy) -> float:
            act = policy_act(policy, seed=config.seed)
            return suite.evaluate(act, config.eval_episodes, policy.config.n_obs_steps).success

    summary = distill(args.teacher, args.dataset, args.out, config, evaluate=evaluate)
    print(f"wrote one-step artifact {summary['artifact']} ({config.method}, {config.steps} steps, "
          f"{summary['seconds']:.0f} s)")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that write JSON + PNG under benchmarks/results/")
    kinds = p.add_subparsers(dest="bench", required=True)
    t = kinds.add_parser("teacher", help="teacher success and time per chunk on the MetaWorld 8-task suite")
    t.add_argument("--out", default="benchmarks/results/teacher_metaworld.json", help="results JSON (PNG beside it)")
    t.add_argument("--work", default=None, help="cache of datasets, teachers and per-run rows (resumable)")
    t.add_argument("--tasks", nargs="*", default=None, help="default: the 8 dev tasks")
    t.add_argument("--seeds", type=int, nargs="*", default=None, help="default: 0 1 2")
    t.add_argument("--predictions", nargs="*", default=None, help="default: epsilon sample")
    t.add_argument("--episodes", type=int, default=None, help="default: 50")
    t.add_argument("--steps", type=int, default=None, help="training steps per teacher (default: 1000)")
    t.add_argument("--batch-size", type=int, default=None, help="default: 128")
    t.add_argument("--jobs", type=int, default=None, help="runs in parallel, 1 torch thread each (default: 2)")
    t.add_argument("--unet", choices=["tiny", "small", "dp", "dp3"], default=None,
                   help="UNet preset of the teachers (default: tiny)")
    t.set_defaults(run="teacher_benchmark")
    d = kinds.add_parser("distill", help="every one-step method (distilled and teacher-free) beside its teacher's "
                         "samplers on MetaWorld, with success-vs-iterations curves")
    d.add_argument("--out", default="benchmarks/results/distill_metaworld.json",
                   help="results JSON (success bars .png and *_curves.png beside it)")
    d.add_argument("--work", default=None, help="datasets, teachers, students and per-run rows, one folder per budget "
                   "(resumable; default: $SDM_CACHE or ~/.cache/sdm_controller, then bench/distill_metaworld)")
    d.add_argument("--tasks", nargs="*", default=None, help="default: the teacher benchmark's 8 tasks")
    d.add_argument("--seeds", type=int, nargs="*", default=None, help="default: 0 1 2")
    d.add_argument("--predictions", nargs="*", default=None, help="teacher types (default: sample)")
    d.add_argument("--methods", nargs="*", default=None,
                   help="limit the one-step methods (default: sdm sdm-literal onedp-s onedp-d cd regression meanflow)")
    d.add_argument("--episodes", type=int, default=None, help="evaluation episodes per run and per checkpoint")
    d.add_argument("--teacher-steps", type=int, default=None,
                   help="teacher training steps, also the teacher-free baselines' (TEACHER_STEPS, which the budget "
                   "study decides)")
    d.add_argument("--distill-steps", type=int, default=None,
                   help="distillation iterations per run (default: 10 %% of --teacher-steps)")
    d.add_argument("--eval-every", type=int, default=None,
                   help="distillation iterations between evaluations, for the curves; teacher-free runs as many "
                   "times over their own budget (default: --distill-steps / 5)")
    d.add_argument("--batch-size", type=int, default=None, help="distillation batch")
    d.add_argument("--jobs", type=int, default=None, help="runs in parallel, 1 torch thread each (default: 2)")
    _defaults_from(d, "sdm_controller.bench.distill_benchmark", "Budget")
    d.set_defaults(run="distill_benchmark")
    bud = kinds.add_parser("budget", help="teacher success against training steps (checkpoints of one run each)")
    bud.add_argument("--out", default="benchmarks/results/budget_study.json", help="results JSON (PNG beside it)")
    bud.add_argument("--work", default=None, help="cache of datasets, teachers and per-checkpoint rows (resumable)")
    bud.add_argument("--tasks", nargs="*", default=None, help="default: push hammer assembly")
    bud.add_argument("--predictions", nargs="*", default=None, help="default: sample epsilon (in that order)")
    bud.add_argument("--checkpoints", type=int, nargs="*", default=None, help="default: 1000 2000 4000 8000")
    bud.add_argument("--seeds", type=int, nargs="*", default=None, help="default: 0")
    bud.add_argument("--unet", choices=["tiny", "small", "dp", "dp3"], default=None, help="default: tiny")
    bud.add_argument("--episodes", type=int, default=None, help="default: 50")
    bud.add_argument("--batch-size", type=int, default=None, help="default: 128")
    bud.set_defaults(run="budget_study")
    sdm = kinds.add_parser("sdm-study", help="SDM variants, one suspect at a time, with per-checkpoint diagnostics")
    sdm.add_argument("--tasks", nargs="+", required=True, help="MetaWorld tasks; each gets an x0 teacher by the "
                     "teacher benchmark's recipe (trained unless its work folder has it)")
    sdm.add_argument("--teacher-work", default=None, help="where the teachers and their demos are (default: the "
                     "teacher benchmark's work folder)")
    sdm.add_argument("--teacher-steps", type=int, default=None, help="training steps of the teachers (default: 1000)")
    sdm.add_argument("--seed", type=int, default=0, help="teacher seed")
    sdm.add_argument("--variants", nargs="*", default=None, help="default: every variant of bench/sdm_study.py")
    sdm.add_argument("--out", default="benchmarks/results/sdm_ablation.json", help="results JSON (PNG beside it)")
    sdm.add_argument("--work", default=None, help="runs and per-variant rows (resumable)")
    sdm.add_argument("--steps", type=int, default=None, help="distillation iterations (default 1000)")
    sdm.add_argument("--eval-every", type=int, default=None, help="default 200")
    sdm.add_argument("--episodes", type=int, default=None, help="default 50")
    sdm.add_argument("--batch-size", type=int, default=None, help="default 128")
    sdm.set_defaults(run="sdm_study")
    lat = kinds.add_parser("latency", help="teacher DDPM-100 / DDIM-10 vs one-step time per chunk, per backend")
    lat.add_argument("--out", default="benchmarks/results/latency_cpu.json", help="results JSON (PNG beside it)")
    lat.add_argument("--work", default="outputs/latency", help="artifacts and exports made for the run")
    lat.add_argument("--sizes", nargs="*", default=["small", "dp"], help="UNet presets")
    lat.add_argument("--conditioning", nargs="*", default=["state", "image"], help="observation cases")
    lat.add_argument("--backends", nargs="*", default=None, help="default: every backend available here")
    lat.add_argument("--device", default="cpu", help="torch device")
    lat.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    lat.add_argument("--rounds", type=int, default=12, help="rounds of calls per method, taking turns")
    lat.add_argument("--pair", nargs=2, metavar=("TEACHER", "ONE_STEP"), default=None,
                     help="a trained teacher and its one-step artifact, measured instead of --sizes/--conditioning")
    lat.set_defaults(run="latency")
    i = kinds.add_parser("image", help="image observations end to end: collect, train briefly, evaluate")
    i.add_argument("--out", default="benchmarks/results/image_metaworld.json", help="results JSON (PNG beside it)")
    i.add_argument("--work", default="outputs/image_smoke", help="dataset and teacher of the run")
    i.add_argument("--task", default="drawer-open", help="MetaWorld task")
    i.add_argument("--image-size", type=int, default=64, help="camera image side")
    i.add_argument("--num-demos", type=int, default=10, help="expert demos")
    i.add_argument("--steps", type=int, default=300, help="teacher training steps")
    i.add_argument("--batch-size", type=int, default=32, help="windows per step")
    i.add_argument("--episodes", type=int, default=10, help="evaluation episodes")
    i.set_defaults(run="image_smoke")
    fs = kinds.add_parser("franka-sim", help="the shipped SDM policy vs its teacher, closed loop through the sim stack")
    fs.add_argument("--out", default="benchmarks/results/franka_sim.json", help="results JSON (PNG beside it)")
    fs.add_argument("--work", default="outputs/franka_sim", help="node logs and episode image strips")
    fs.add_argument("--sdm", default=_shipped(SHIPPED_POLICY), help="one-step artifact")
    fs.add_argument("--teacher", default=_shipped(SHIPPED_TEACHER), help="its teacher artifact")
    fs.add_argument("--episodes", type=int, default=50, help="episodes per policy")
    fs.add_argument("--seed", type=int, default=1000, help="cube placements (not the demos' seed)")
    fs.add_argument("--timeout-s", type=float, default=15.0, help="an episode without success by then fails")
    fs.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the nodes")
    fs.add_argument("--only", nargs="*", default=None, help="labels to run: sdm teacher-ddim10 teacher-ddpm100")
    fs.set_defaults(run="franka_sim")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"sdm_controller.bench.{args.run}").main(args)


def _add_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run a policy on the simulated Franka stack for N episodes: success, rate, latency")
    p.add_argument("--artifact", default=_shipped(SHIPPED_POLICY), help="policy artifact (default: shipped SDM)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to run")
    p.add_argument("--seed", type=int, default=1000, help="cube placements")
    p.add_argument("--timeout-s", type=float, default=15.0, help="an episode without success by then fails")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim", help="teacher artifacts only")
    p.add_argument("--sampler-steps", type=int, default=10, help="teacher artifacts only")
    p.add_argument("--out", default="outputs/sim", help="summary.json, image strip, latency histogram, node log")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the nodes")
    p.set_defaults(func=_run_sim)


def _run_sim(args: argparse.Namespace) -> int:
    from sdm_controller.bench.plots import plot_sim_runs, save_image_strip
    from sdm_controller.stack.sim_evaluation import PolicyUnderTest, run_policy_on_sim

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy = PolicyUnderTest(Path(args.artifact).name, Path(args.artifact), args.sampler, args.sampler_steps)
    run = run_policy_on_sim(policy, args.episodes, out / "nodes.log", seed=args.seed, timeout_s=args.timeout_s,
                            threads=args.threads)
    summary = run.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_sim_runs({policy.label: run.latencies_ms()}, {policy.label: summary["success"]}, out / "latency.png",
                  title=f"{policy.label} on the simulated FR3 ({args.episodes} episodes)")
    if run.frames:
        save_image_strip(run.frames, out / "episode0.png")
    print(f"success {summary['success']:.2f} ({sum(e.success for e in run.episodes)} of {summary['episodes']} "
          f"episodes), {summary['chunk_rate_hz']:.1f} chunks/s, observation -> chunk latency "
          f"p50 {summary['latency_p50_ms']:.1f} ms, p99 {summary['latency_p99_ms']:.1f} ms")
    print(f"wrote {out}/summary.json, {out}/latency.png, {out}/episode0.png (camera, episode 0), {out}/nodes.log")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a policy artifact to ONNX (and build its TensorRT programs)")
    p.add_argument("--artifact", required=True, help="policy artifact folder (teacher or one-step)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build the TensorRT programs into the engine cache (CUDA GPU + torch_tensorrt)")
    p.add_argument("--fp32", action="store_true", help="TensorRT programs in fp32 instead of fp16")
    p.add_argument("--device", default="cuda", help="CUDA device for --tensorrt")
    p.add_argument("--cache-dir", default=None, help="engine cache folder (default $SDM_CACHE or "
                   "~/.cache/sdm_controller/engines)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check of each graph")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from sdm_controller.runtime.export import ONNX_JSON, build_tensorrt, export_onnx

    if args.tensorrt:  # say so before the ONNX export, not after it
        from sdm_controller.runtime.backends.tensorrt_backend import require_tensorrt
        from sdm_controller.runtime.engine import parse_device

        require_tensorrt(parse_device(args.device))
    manifest = export_onnx(args.artifact, opset=args.opset, verify=not args.no_verify)
    for name, graph in manifest["graphs"].items():
        check = graph.get("verified_max_abs_diff")
        checked = f", max |onnxruntime - torch| {check:.2g}" if check is not None else ""
        print(f"wrote {Path(args.artifact) / graph['file']} ({name}{checked})")
    print(f"wrote {Path(args.artifact) / ONNX_JSON} (opset {manifest['opset']}, {manifest['export_seconds']:.1f} s)")
    if args.tensorrt:
        for row in build_tensorrt(args.artifact, device=args.device, fp16=not args.fp32, cache_dir=args.cache_dir):
            state = "built" if row["built"] else "already cached"
            print(f"TensorRT {row['graph']}: {state} at {row['path']}")
    return 0


def _add_launch(sub: argparse._SubParsersAction) -> None:
    from sdm_controller.stack.description import STACKS

    p = sub.add_parser("launch", help="start the ROS 2 stack with pip alone (what ros2 launch does with a ROS install)")
    stacks = p.add_subparsers(dest="stack", required=True)
    for stack in STACKS.values():
        defaults = {a.name: a.default if isinstance(a.default, str) else f"config/{a.default.name}"
                    for a in stack.all_arguments()}  # fmt: skip
        width = max(len(f"{name}:={value}") for name, value in defaults.items())
        listing = "\n".join(
            f"  {f'{arg.name}:={defaults[arg.name]}':<{width}}  {arg.description}" for arg in stack.all_arguments()
        )
        s = stacks.add_parser(
            stack.name,
            help=stack.description,
            epilog=f"launch arguments (NAME:=DEFAULT):\n{listing}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        s.add_argument("--sim", action="store_true", help="use_sim:=true (MuJoCo bridge instead of robot and camera)")
        s.add_argument("--robot-ip", default=None, help="robot_ip:=IP, the robot's control unit")
        s.add_argument("--artifact", default=None, help="artifact:=PATH, the policy artifact folder")
        s.add_argument(
            "--params-file",
            action="append",
            default=[],
            metavar="NODE=PATH",
            help="parameter file for one node instead of config/<node>.yaml (repeatable)",
        )
        s.add_argument("--duration", type=float, default=None, help="stop the stack after this many seconds")
        s.add_argument(
            "--threads",
            type=int,
            default=None,
            help="OMP_NUM_THREADS for the nodes (default: inherited from this shell)",
        )
        s.add_argument("--dry-run", action="store_true", help="print the node command lines and exit")
        s.add_argument(
            "arguments",
            nargs="*",
            metavar="NAME:=VALUE",
            help="any launch argument, as for ros2 launch (e.g. camera:=wrist)",
        )
    p.set_defaults(func=_run_launch)


def _run_launch(args: argparse.Namespace) -> int:
    from sdm_controller.stack.description import STACKS, USE_SIM, argument_values, parse_assignments, parse_bool
    from sdm_controller.stack.supervisor import launch

    stack = STACKS[args.stack]
    given = parse_assignments(args.arguments)
    if args.sim:
        given[USE_SIM] = "true"
    if args.robot_ip is not None:
        given["robot_ip"] = args.robot_ip
    if args.artifact is not None:
        given["artifact"] = str(Path(args.artifact).resolve())
    nodes = {node.name for node in stack.nodes}
    for item in args.params_file:
        node, sep, path = item.partition("=")
        if not sep or node not in nodes:
            raise SdmError(f"--params-file '{item}' is not NODE=PATH with NODE one of {', '.join(sorted(nodes))}")
        given[f"{node}_params_file"] = str(Path(path).resolve())
    values = argument_values(stack, given)  # unknown names and bad choices first
    if not parse_bool(values[USE_SIM]) and not values["robot_ip"]:
        raise SdmError("no robot address: pass --robot-ip IP (robot_ip:=IP) for the real robot, or --sim")
    if args.threads is not None and args.threads < 1:
        raise SdmError(f"--threads must be at least 1, got {args.threads}")
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    return launch(stack, given, duration=args.duration, env_overrides=env, dry_run=args.dry_run)


COMMANDS = (_add_collect, _add_train, _add_evaluate, _add_distill, _add_bench, _add_sim, _add_export, _add_launch)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sdm_controller", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SdmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _command(name: str) -> Callable[[], int]:
    """Entry point for one ``ros2 run sdm_controller <name>`` executable."""

    def run() -> int:
        return main([name, *sys.argv[1:]])

    return run


collect_main = _command("collect")
train_main = _command("train")
evaluate_main = _command("evaluate")
distill_main = _command("distill")
bench_main = _command("bench")
export_main = _command("export")
sim_main = _command("sim")
launch_main = _command("launch")
