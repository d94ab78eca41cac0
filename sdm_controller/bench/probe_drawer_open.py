"""Probes behind the design choices in the README and the issue notes, on drawer-open.

1. Training step time per UNet preset, fp32 vs bf16 autocast (why the CPU benchmarks use `tiny`
   in fp32 on AVX2-only CPUs).
2. The teacher read as a one-step generator, before any distillation, at several generator
   timesteps: success and how far its output lies outside [-1, 1] (why SDM feeds epsilon
   teachers t = T-2, and why it still struggles with them).
3. SDM for 100 iterations with the released settings vs with the fake-score warm-up.

Needs the drawer-open teachers of the teacher benchmark (`python -m sdm_controller bench teacher`).

    OMP_NUM_THREADS=1 .venv/bin/python -m sdm_controller.bench.probe_drawer_open
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from sdm_controller.bench import teacher_benchmark as tb
from sdm_controller.bench.machine import describe_machine
from sdm_controller.bench.metaworld_eval import EvalSuite, policy_act
from sdm_controller.data.episodes import load_episodes
from sdm_controller.data.windows import WindowSampler
from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.trainer import distill
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.runtime.artifact import load_one_step, load_teacher

COMMAND = "python -m sdm_controller.bench.probe_drawer_open"

TASK = "drawer-open"
EPISODES = 25


def step_time_ms(preset: str, bf16: bool, batch: int = 128, steps: int = 3) -> float:
    stats = {"state": {"min": [-1.0] * 39, "max": [1.0] * 39}, "action": {"min": [-1.0] * 4, "max": [1.0] * 4}}
    policy = DiffusionPolicy(DiffusionConfig(unet_preset=preset), stats)
    optimizer = torch.optim.AdamW(policy.parameters())
    batch_data = {"obs": {"state": torch.randn(batch, 2, 39)}, "action": torch.rand(batch, 16, 4) * 2 - 1}
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = policy.compute_loss(batch_data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1000.0 * sorted(times[1:])[len(times[1:]) // 2]


def main() -> int:
    torch.set_num_threads(1)
    work = tb.default_work_dir()
    dataset = work / "data" / f"{TASK}.zarr"
    rows: list[dict] = []
    for preset in ("tiny", "small"):
        for bf16 in (False, True):
            rows.append({"probe": "train_step", "preset": preset, "bf16": bf16, "batch": 128,
                         "ms_per_step": step_time_ms(preset, bf16, steps=1 if bf16 else 3)})
            print(rows[-1], flush=True)
    suite = EvalSuite(TASK, num_envs=EPISODES, seed=tb.EVAL_SEED)
    sampler = WindowSampler(load_episodes(dataset), 16, 2, 8, ["state"], seed=0)
    batch = sampler.batch(256)
    for prediction, timesteps in (("epsilon", (65, 90, 98, 99)), ("sample", (99, 100))):
        teacher, _ = load_teacher(tb.teacher_dir(work, TASK, prediction, 0))
        for t in timesteps:
            generator = OneStepPolicy(teacher.config, teacher.normalizer.stats, GeneratorSpec(timestep=t))
            generator.load_state_dict(teacher.state_dict())
            generator.eval()
            with torch.no_grad():
                a = generator.generate(torch.randn(256, 16, 4, generator=torch.Generator().manual_seed(0)),
                                       generator.condition(batch["obs"]))
            result = suite.evaluate(policy_act(generator), EPISODES, 2)
            rows.append({"probe": "generator_init", "prediction": prediction, "timestep": t,
                         "success": result.success, "episodes": EPISODES,
                         "abs_mean": float(a.abs().mean()),
                         "fraction_outside_unit": float((a.abs() > 1).float().mean())})
            print(rows[-1], flush=True)
    variants = {"released (no fake warm-up, lr_fake 5e-5)": {"fake_warmup_steps": 0, "lr_fake": 5e-5},
                "default (fake warm-up 50, lr_fake 1e-4)": {}}
    for prediction in ("sample", "epsilon"):
        for name, overrides in variants.items():
            out = Path("outputs/probe") / f"{prediction}_{overrides.get('fake_warmup_steps', 50)}"
            config = DistillConfig.for_method("sdm", steps=100, batch_size=128, **overrides)
            distill(tb.teacher_dir(work, TASK, prediction, 0), dataset, out, config, progress=False)
            policy, _ = load_one_step(out)
            result = suite.evaluate(policy_act(policy), EPISODES, 2)
            rows.append({"probe": "sdm_100_iterations", "prediction": prediction, "variant": name,
                         "success": result.success, "episodes": EPISODES})
            print(rows[-1], flush=True)
    suite.close()
    out = Path("benchmarks/results/probe_drawer_open.json")
    out.write_text(json.dumps({"machine": describe_machine(), "command": " ".join([COMMAND, *sys.argv[1:]]),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
