"""Image observations end to end on CPU: collect with the camera, train briefly, evaluate.

This is a check that the image path works, with the cost of a training step recorded, not a
success benchmark: a ResNet-18 policy needs GPU-scale training to solve tasks from pixels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from sdm_controller.bench.machine import describe_machine
from sdm_controller.bench.metaworld_eval import EvalSuite, teacher_act
from sdm_controller.data.metaworld_demos import collect_metaworld
from sdm_controller.runtime.artifact import load_teacher
from sdm_controller.training.teacher import TrainConfig, train_teacher


def main(args: argparse.Namespace) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = work / f"{args.task}_img{args.image_size}.zarr"
    start = time.perf_counter()
    episodes, _ = collect_metaworld(args.task, dataset, num_demos=args.num_demos, image_size=args.image_size)
    collect_s = time.perf_counter() - start
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, policy={"unet_preset": "tiny"})
    summary = train_teacher(dataset, work / "teacher", config)
    policy, _ = load_teacher(work / "teacher")
    suite = EvalSuite(args.task, num_envs=args.episodes, seed=1, image_size=args.image_size)
    rows = []
    for steps in (10, 1):
        result = suite.evaluate(teacher_act(policy, steps, "ddim"), args.episodes, policy.config.n_obs_steps)
        rows.append(
            {
                "task": result.task,
                "method": f"teacher-ddim{steps}",
                "prediction": policy.config.prediction_type,
                "seed": 0,
                "episodes": result.episodes,
                "success": result.success,
                "ms_per_chunk": result.ms_per_chunk,
                "observation": f"corner camera {args.image_size}x{args.image_size} + hand/gripper",
                "train_steps": args.steps,
                "batch_size": args.batch_size,
                "ms_per_train_step": 1000.0 * summary["train_seconds"] / args.steps,
                "demo_frames": int(len(episodes.action)),
                "collect_s": round(collect_s, 1),
                "eval_wall_s": round(result.wall_s, 1),
            }
        )
    suite.close()
    result = {
        "machine": describe_machine(),
        "command": "python -m sdm_controller " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    shutil.copyfile(work / "teacher" / "training_curve.png", out.with_suffix(".png"))  # the curve people look at
    print(f"{'method':<14}{'success':>8}{'ms/chunk':>10}{'ms/train step':>15}")
    for row in rows:
        print(f"{row['method']:<14}{row['success']:>8.2f}{row['ms_per_chunk']:>10.1f}{row['ms_per_train_step']:>15.0f}")
    return 0
