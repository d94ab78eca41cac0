"""SDM on an epsilon-prediction teacher: which settings survive 100 iterations (drawer-open).

The teacher read as a generator at t = T-2 acts (success 0.40, ``probe_drawer_open.json``) but 95 %
of its outputs lie outside [-1, 1], and 100 SDM iterations with the defaults took it to 0.00.
Each variant here distills the seed-0 epsilon teacher of the teacher benchmark for 100
iterations (10 % of its 1000 steps) and evaluates 50 episodes on the benchmark's episodes.

    OMP_NUM_THREADS=1 .venv/bin/python -m sdm_controller.bench.probe_epsilon_sdm [--variants NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sdm_controller.bench import teacher_benchmark as tb
from sdm_controller.bench.machine import describe_machine
from sdm_controller.bench.metaworld_eval import EvalSuite, policy_act
from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.trainer import distill
from sdm_controller.runtime.artifact import load_one_step

COMMAND = "python -m sdm_controller.bench.probe_epsilon_sdm"

EPISODES = 50
VARIANTS: dict[str, dict] = {
    "default": {},
    "clamp": {"sample_clamp": True},
    "clamp-sample-norm": {"sample_clamp": True, "score_normalizer": "sample"},
    "clamp-t99": {"sample_clamp": True, "generator_timestep": 99},
    "clamp-no-warmup": {"sample_clamp": True, "fake_warmup_steps": 0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="drawer-open")
    parser.add_argument("--seed", type=int, default=0, help="teacher seed")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probe_epsilon_sdm.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = tb.default_work_dir()
    dataset = work / "data" / f"{args.task}.zarr"
    teacher = tb.teacher_dir(work, args.task, "epsilon", args.seed)
    suite = EvalSuite(args.task, num_envs=EPISODES, seed=tb.EVAL_SEED)
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    for name in args.variants:
        config = DistillConfig.for_method("sdm", steps=100, batch_size=128, **VARIANTS[name])
        out = Path("outputs/probe_epsilon") / f"{args.task}_{args.seed}_{name}"
        start = time.perf_counter()
        distill(teacher, dataset, out, config, progress=False)
        seconds = time.perf_counter() - start
        policy, _ = load_one_step(out)
        result = suite.evaluate(policy_act(policy), EPISODES, 2)
        rows.append({"task": args.task, "seed": args.seed, "variant": name, "settings": VARIANTS[name],
                     "success": result.success, "episodes": EPISODES, "distill_seconds": round(seconds, 1)})
        print(rows[-1], flush=True)
        args.out.write_text(json.dumps({"machine": describe_machine(), "command": " ".join([COMMAND, *sys.argv[1:]]),
                                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=1))
    suite.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
