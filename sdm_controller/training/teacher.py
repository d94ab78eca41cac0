"""Teacher training: denoising loss on dataset windows, EMA weights, artifact + curve out.

The loop is deliberately plain (no DataLoader: the dataset fits in memory and one gather per
batch is cheaper than worker processes on 2 cores). bf16 autocast on CPU makes a step about
1.5x faster; evaluation and the saved weights stay fp32.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from sdm_controller.common.fr3 import action_limits
from sdm_controller.data.episodes import EpisodeSet, load_episodes
from sdm_controller.data.windows import WindowSampler
from sdm_controller.errors import ConfigError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig
from sdm_controller.policy.ema import EMA
from sdm_controller.policy.modeling_diffusion import ACTION_KEY, DiffusionPolicy
from sdm_controller.policy.normalizer import minmax_stats
from sdm_controller.runtime.artifact import save_artifact
from sdm_controller.training.curves import plot_curves


@dataclass
class TrainConfig:
    """Everything a teacher run needs besides the dataset path."""

    policy: dict[str, Any] = field(default_factory=dict)  # DiffusionConfig overrides (obs/action come from data)
    steps: int = 1000  # optimizer steps
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0 at ``steps``
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    bf16: bool | None = None  # autocast the forward pass to bf16; None: only where the hardware has bf16
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    eval_every: int = 0  # steps between evaluations in the simulator (0: only at the end, if asked)
    checkpoints: tuple[int, ...] = ()  # steps at which the EMA teacher is also saved as out/checkpoints/step<N>
    eval_episodes: int = 25
    eval_sampler: str = "ddim"
    eval_steps: int = 10
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.checkpoints = tuple(int(c) for c in self.checkpoints)
        checks = [
            (self.steps > 0, f"steps must be positive, got {self.steps}"),
            (self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (all(0 <= b < 1 for b in self.betas), f"betas must lie in [0, 1), got {self.betas}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_episodes > 0, f"eval_episodes must be positive, got {self.eval_episodes}"),
            (all(0 < c <= self.steps for c in self.checkpoints),
             f"checkpoints {list(self.checkpoints)} must lie in [1, steps = {self.steps}]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config '{path}' does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"'{path}' has unknown keys {sorted(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def policy_config_for(episodes: EpisodeSet, overrides: dict[str, Any]) -> DiffusionConfig:
    """Observation and action spec from the dataset, the rest from ``overrides``."""
    return DiffusionConfig(**{**overrides, "obs": episodes.observation_spec, "action_dim": episodes.action.shape[1]})


def dataset_stats(episodes: EpisodeSet, config: DiffusionConfig) -> dict[str, dict[str, list[float]]]:
    """The normalizer a teacher trained on ``episodes`` has: min-max of low-dim streams and actions."""
    stats = {key: minmax_stats(episodes.obs[key]) for key in config.obs.low_dim}  # images need none
    stats[ACTION_KEY] = minmax_stats(episodes.action)
    return stats


def bf16_native(device: torch.device) -> bool:
    """True where bf16 is fast: CUDA with bf16, or a CPU with AVX512-BF16/AMX.

    Elsewhere (e.g. AVX2-only CPUs) torch emulates bf16 and a step becomes ~40x slower.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_teacher(
    dataset: str | Path,
    out: str | Path,
    config: TrainConfig,
    evaluate: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, write the artifact to ``out``, return a summary.

    ``evaluate(policy) -> float`` is called every ``eval_every`` steps and at the end with the
    EMA policy in eval mode, when given.
    """
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    episodes = load_episodes(dataset)
    policy_config = policy_config_for(episodes, config.policy)
    stats = dataset_stats(episodes, policy_config)
    device = torch.device(config.device)
    policy = DiffusionPolicy(policy_config, stats).to(device)
    ema = EMA(policy, config.ema_power, config.ema_max_decay)
    sampler = WindowSampler(
        episodes,
        policy_config.horizon,
        policy_config.n_obs_steps,
        policy_config.n_action_steps,
        policy_config.obs.names,
        seed=config.seed,
    )
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.steps)
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_success": []}
    use_bf16 = bf16_native(device) if config.bf16 is None else config.bf16
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train teacher", disable=not progress)
    running = None
    for step in bar:
        policy.train()
        batch = sampler.batch(config.batch_size)
        batch = {
            "obs": {k: v.to(device) for k, v in batch["obs"].items()},
            ACTION_KEY: batch[ACTION_KEY].to(device),
        }
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = policy.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.step(policy)
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        history["step"].append(step + 1)
        history["loss"].append(value)
        bar.set_postfix(loss=f"{running:.4f}")
        last = step + 1 == config.steps
        if evaluate is not None and ((config.eval_every and (step + 1) % config.eval_every == 0) or last):
            success = float(evaluate(ema.model.eval()))
            history["eval_step"].append(step + 1)
            history["eval_success"].append(success)
            bar.write(f"step {step + 1}: success {success:.2f}")
        if step + 1 in config.checkpoints or last:
            seconds = time.perf_counter() - start
            provenance = {
                "algorithm": f"ddpm-teacher ({policy_config.prediction_type} prediction)",
                "dataset": str(dataset),
                "dataset_hash": load_dataset_hash(dataset),
                "source": episodes.attrs.get("source"),
                "steps": step + 1,
                "seed": config.seed,
                "train": asdict(config),
                "train_seconds": round(seconds, 1),
                "final_loss": history["loss"][-1],
            }
            save_artifact(
                out if last else out / "checkpoints" / f"step{step + 1}",
                ema.model,
                kind="teacher",
                provenance=provenance,
                action=action_meta(episodes.attrs),
                control_period_s=episodes.attrs.get("control_period_s"),
                state_names=episodes.attrs.get("state_names"),
            )
    train_seconds = time.perf_counter() - start
    (out / "train_history.json").write_text(json.dumps(history))
    title = f"teacher on {episodes.attrs.get('source', dataset)}"
    plot_curves(history, ["loss"], out / "training_curve.png", title=title)
    return {"artifact": str(out), "train_seconds": train_seconds, "final_loss": history["loss"][-1], **history}


def load_dataset_hash(path: str | Path) -> str | None:
    import zarr

    return zarr.open_group(str(path), mode="r").attrs.get("content_hash")


def action_meta(attrs: dict) -> dict:
    """The artifact's ``action`` block: names and space from the dataset, FR3 limits when they apply."""
    action = {"names": attrs.get("action_names"), "space": attrs.get("action_space")}
    limits = action_limits(action["names"]) if action["space"] == "joint_position" else None
    return {**action, "limits": limits} if limits else action

