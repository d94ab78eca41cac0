"""Latency of teacher DDPM-100, teacher DDIM-10 and the one-step policy, through the same Engine.

For each UNet size and conditioning, one random-initialised teacher and a one-step generator with
the same weights are saved and exported (latency does not depend on training); ``--pair`` measures
a given trained pair instead (a teacher and its one-step generator, e.g. the shipped Franka policy)
through copies exported in the work folder. Every available backend runs all three in one process,
interleaved round-robin (each round: DDPM-100 once, DDIM-10 a few times, one-step many times), so
machine noise hits every method alike and the speed-up ratios are taken inside one run. GPU
timings synchronise before reading the clock (the Engine does this for its timing and its output copy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sdm_controller.bench.machine import describe_machine
from sdm_controller.errors import ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig, ObservationSpec
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.runtime.artifact import save_artifact

CONDITIONINGS = {
    "state": ObservationSpec(low_dim={"state": 39}),
    "image": ObservationSpec(low_dim={"agent_pos": 9}, cameras={"cam0": (3, 96, 96), "cam1": (3, 96, 96)}),
}
METHODS = (("teacher-ddpm100", "ddpm", 100, 1), ("teacher-ddim10", "ddim", 10, 3), ("one-step", None, 1, 20))


def make_pair(work: Path, size: str, conditioning: str) -> tuple[Path, Path]:
    """A teacher and a one-step artifact sharing random weights, both exported to ONNX."""
    from sdm_controller.runtime.export import export_onnx

    torch.manual_seed(0)
    spec = CONDITIONINGS[conditioning]
    config = DiffusionConfig(obs=spec, action_dim=7, unet_preset=size, prediction_type="sample")
    stats = {key: {"min": [-1.0] * dim, "max": [1.0] * dim} for key, dim in spec.low_dim.items()}
    stats["action"] = {"min": [-1.0] * 7, "max": [1.0] * 7}
    teacher = DiffusionPolicy(config, stats)
    generator = OneStepPolicy(config, stats, GeneratorSpec(timestep=config.num_train_timesteps))
    generator.load_state_dict(teacher.state_dict())
    base = work / f"{size}_{conditioning}"
    provenance = {"algorithm": "random init (latency benchmark)"}
    teacher_path = save_artifact(base / "teacher", teacher, "teacher", provenance)
    one_step_path = save_artifact(base / "one_step", generator, "one-step", provenance)
    for path in (teacher_path, one_step_path):
        export_onnx(path, verify=False)
    return teacher_path, one_step_path


def given_pair(work: Path, teacher: str | Path, one_step: str | Path) -> tuple[str, str, ObservationSpec, Path, Path]:
    """A trained teacher and its one-step generator, copied into ``work`` and exported to ONNX there (the
    given folders, such as the shipped ``models/``, stay as they are).

    Returns the case's labels (the UNet preset; ``image`` or ``state``), the observation spec and the copies.
    """
    from sdm_controller.runtime.artifact import read_spec
    from sdm_controller.runtime.export import export_onnx

    copies, specs = [], []
    for given, kind in ((Path(teacher), "teacher"), (Path(one_step), "one-step")):
        spec = read_spec(given)
        if spec.kind != kind:
            raise ConfigError(f"--pair: '{given}' is a {spec.kind} artifact; expected a {kind} artifact there")
        copy = work / "pair" / kind
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(given, copy)
        export_onnx(copy, verify=False)
        copies.append(copy)
        specs.append(spec)
    if specs[0].observation != specs[1].observation:
        raise ConfigError(f"--pair: '{teacher}' and '{one_step}' observe different things; give a teacher and "
                          "the generator distilled from it")
    obs = specs[0].observation
    return specs[1].config.unet_preset, "image" if obs.cameras else "state", obs, copies[0], copies[1]


def observation(config_spec: ObservationSpec, n_obs_steps: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = {}
    for stream in config_spec.streams:
        shape = (n_obs_steps, *stream.shape)
        if np.issubdtype(stream.dtype, np.floating):
            obs[stream.name] = rng.uniform(-1, 1, shape).astype(stream.dtype)
        else:
            obs[stream.name] = rng.integers(0, 256, shape, dtype=stream.dtype)
    return obs


def available_backends(device: str) -> list[str]:
    from sdm_controller.runtime.engine import Engine  # noqa: F401  (import errors surface here)

    backends = ["torch", "onnxruntime"]
    if device.startswith("cuda"):
        try:
            import torch_tensorrt  # noqa: F401

            backends.insert(0, "tensorrt")
        except ImportError:
            pass
    return backends


def measure(engines: dict[str, object], obs: dict, rounds: int) -> dict[str, dict[str, list[float]]]:
    times = {name: {"total": [], "encoder": [], "generator": []} for name in engines}
    for engine in engines.values():
        engine.warmup(2)
    for _ in range(rounds):
        for name, _, _, repeats in METHODS:
            engine = engines[name]
            for _ in range(repeats):
                start = time.perf_counter()
                engine(obs)
                times[name]["total"].append(1000.0 * (time.perf_counter() - start))
                times[name]["encoder"].append(engine.last_timing["encoder_ms"])
                times[name]["generator"].append(engine.last_timing["generator_ms"])
    return times


def main(args: argparse.Namespace) -> int:
    from sdm_controller.runtime.engine import Engine

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    device = args.device
    if args.pair:
        cases = [given_pair(work, *args.pair)]
    else:
        cases = [(size, conditioning, CONDITIONINGS[conditioning], *make_pair(work, size, conditioning))
                 for size in args.sizes for conditioning in args.conditioning]
    rows, samples = [], {}
    for size, conditioning, spec, teacher_path, one_step_path in cases:
        obs = observation(spec)
        rounds = args.rounds if size != "dp" else max(3, args.rounds // 3)
        for backend in args.backends or available_backends(device):
            engines = {}
            for name, method, steps, _ in METHODS:
                path = one_step_path if name == "one-step" else teacher_path
                engines[name] = Engine.load(path, backend=backend, device=device, steps=steps,
                                            method=method or "ddim", threads=args.threads)
            times = measure(engines, obs, rounds)
            for name, _, _, _ in METHODS:
                total = np.asarray(times[name]["total"])
                samples[(backend, size, conditioning, name)] = total
                rows.append({
                    "backend": engines[name].backend_name,
                    "method": name,
                    "size": size,
                    "conditioning": conditioning,
                    "p50_ms": float(np.median(total)),
                    "p99_ms": float(np.percentile(total, 99)),
                    "n": int(total.size),
                    "encoder_ms_p50": float(np.median(times[name]["encoder"])),
                    "generator_ms_p50": float(np.median(times[name]["generator"])),
                })
            print_rows(rows[-3:])
    summary = summarize(rows)
    result = {
        "machine": describe_machine(),
        "command": "python -m sdm_controller " + " ".join(sys.argv[1:]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {"device": device, "threads": args.threads, "rounds": args.rounds,
                     "pair": [str(Path(p).resolve()) for p in args.pair] if args.pair else None},
        "summary": summary,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot_histograms(samples, out.with_suffix(".png"))
    print()
    for item in summary:
        print(f"{item['backend']:<12}{item['size']:<6}{item['conditioning']:<6} one-step is "
              f"{item['speedup_vs_ddpm100']:.0f}x faster than DDPM-100, {item['speedup_vs_ddim10']:.1f}x than DDIM-10"
              + (f"; onnxruntime/torch one-step {item['ort_over_torch_one_step']:.2f}" if "ort_over_torch_one_step"
                 in item else ""))
    return 0


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['backend']:<12}{r['size']:<6}{r['conditioning']:<6}{r['method']:<16}"
              f"p50 {r['p50_ms']:9.2f} ms  p99 {r['p99_ms']:9.2f} ms  n={r['n']}")


def summarize(rows: list[dict]) -> list[dict]:
    """Speed-ups inside one backend and run, and onnxruntime vs torch per case."""
    by = {(r["backend"], r["size"], r["conditioning"], r["method"]): r["p50_ms"] for r in rows}
    out = []
    for backend, size, cond in sorted({(r["backend"], r["size"], r["conditioning"]) for r in rows}):
        item = {
            "backend": backend,
            "size": size,
            "conditioning": cond,
            "speedup_vs_ddpm100": by[(backend, size, cond, "teacher-ddpm100")] / by[(backend, size, cond, "one-step")],
            "speedup_vs_ddim10": by[(backend, size, cond, "teacher-ddim10")] / by[(backend, size, cond, "one-step")],
        }
        gen = {m: r["generator_ms_p50"] for r in rows for m in [r["method"]]
               if (r["backend"], r["size"], r["conditioning"]) == (backend, size, cond)}
        # Without the encoder, which every method runs once per chunk (it dominates image cases on CPU).
        item["generator_speedup_vs_ddpm100"] = gen["teacher-ddpm100"] / gen["one-step"]
        item["generator_speedup_vs_ddim10"] = gen["teacher-ddim10"] / gen["one-step"]
        if backend.startswith("onnxruntime") and ("torch", size, cond, "one-step") in by:
            for method in ("one-step", "teacher-ddim10"):
                key = "ort_over_torch_" + method.replace("teacher-", "").replace("-", "_")
                item[key] = by[(backend, size, cond, method)] / by[("torch", size, cond, method)]
        out.append(item)
    return out


def plot_histograms(samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({k[:3] for k in samples})
    fig, axes = plt.subplots(len(cases), 1, figsize=(7, 1.9 * len(cases)), squeeze=False)
    bins = np.logspace(-1, 4.5, 90)
    for ax, case in zip(axes[:, 0], cases, strict=True):
        for name, _, _, _ in METHODS:
            ax.hist(samples[case + (name,)], bins=bins, alpha=0.7, label=name)
        ax.set_xscale("log")
        ax.set_title(" / ".join(case), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("ms per chunk (batch 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
