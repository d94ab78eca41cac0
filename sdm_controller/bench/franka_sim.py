"""Closed-loop benchmark on the simulated Franka stack: the shipped SDM policy beside its teacher.

    python -m sdm_controller bench franka-sim        # -> benchmarks/results/franka_sim.{json,png}

Each policy runs the same randomised episodes (same ``seed``: same cube placements) through the
whole ROS stack (mujoco_bridge + franka_driver + policy_node, one process each): the one-step SDM
artifact, and the teacher it was distilled from at DDIM-10 and at DDPM-100. Reported per policy:
success rate, chunk rate, observation → chunk latency p50/p99, how close the hand got. The goal
(issue 7): SDM within 5 points of the teacher's best sampler, at >= 8x that sampler's chunk rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sdm_controller.stack.sim_evaluation import PolicyUnderTest, SimRun, run_policy_on_sim

SUCCESS_SLACK = 0.05
RATE_RATIO_GOAL = 8.0


def policies(sdm: Path, teacher: Path) -> list[PolicyUnderTest]:
    return [
        PolicyUnderTest("sdm", sdm),
        PolicyUnderTest("teacher-ddim10", teacher, "ddim", 10),
        PolicyUnderTest("teacher-ddpm100", teacher, "ddpm", 100),
    ]


def goal(summaries: list[dict]) -> dict:
    """SDM against the teacher's best sampler (highest success; the faster one on a tie)."""
    by_label = {s["label"]: s for s in summaries}
    sdm = by_label["sdm"]
    teachers = [s for s in summaries if s["label"].startswith("teacher-")]
    best = max(teachers, key=lambda s: (s["success"], s["chunk_rate_hz"]))
    ratio = sdm["chunk_rate_hz"] / best["chunk_rate_hz"] if best["chunk_rate_hz"] else float("inf")
    return {
        "teacher_best": best["label"],
        "success_margin": sdm["success"] - best["success"],
        "chunk_rate_ratio": ratio,
        "success_met": bool(sdm["success"] >= best["success"] - SUCCESS_SLACK - 1e-9),
        "rate_met": bool(ratio >= RATE_RATIO_GOAL),
    }


def main(args: argparse.Namespace) -> int:
    from sdm_controller.bench.machine import describe_machine
    from sdm_controller.bench.plots import plot_sim_runs, save_image_strip

    out = Path(args.out)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs: list[SimRun] = []
    for policy in policies(Path(args.sdm), Path(args.teacher)):
        if args.only and policy.label not in args.only:
            continue
        start = time.monotonic()
        run = run_policy_on_sim(policy, args.episodes, work / f"{policy.label}.log", seed=args.seed,
                                timeout_s=args.timeout_s, threads=args.threads)
        runs.append(run)
        summary = run.summary()
        print(f"{policy.label:<16} success {summary['success']:.2f} over {summary['episodes']} episodes, "
              f"{summary['chunk_rate_hz']:.1f} chunks/s, latency p50 {summary['latency_p50_ms']:.1f} ms "
              f"p99 {summary['latency_p99_ms']:.1f} ms ({time.monotonic() - start:.0f} s)")
        if run.frames:
            save_image_strip(run.frames, work / f"{policy.label}_episode0.png")
    summaries = [run.summary() for run in runs]
    result = {
        "machine": describe_machine(),
        "command": "python -m sdm_controller " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"episodes": args.episodes, "seed": args.seed, "timeout_s": args.timeout_s,
                     "threads": args.threads, "sdm": args.sdm, "teacher": args.teacher},
        "summary": summaries,
        "episodes": {run.policy.label: [
            {"success": e.success, "duration_s": e.duration_s, "chunks": e.chunks, "recoveries": e.recoveries,
             "start_distance_m": e.start_distance_m, "min_distance_m": e.min_distance_m}
            for e in run.episodes] for run in runs},
    }
    if {"sdm"} < {s["label"] for s in summaries}:
        result["goal"] = goal(summaries)
        print(json.dumps(result["goal"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    title = f"Simulated FR3 reach through the ROS stack ({args.episodes} episodes)"
    plot_sim_runs({run.policy.label: run.latencies_ms() for run in runs},
                  {s["label"]: s["success"] for s in summaries}, out.with_suffix(".png"), title=title)
    return 0
