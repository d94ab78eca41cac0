"""``distill``: teacher artifact + dataset in, one-step artifact out, for any registered method.

Networks, all initialised from the teacher:

* R, the teacher itself (frozen), gives the real score;
* G, a ``OneStepPolicy`` with the teacher's weights, is the generator; its EMA is saved;
* whatever else the method builds and trains (SDM and OneDP-S: a fake score F; CD: an EMA target).

A teacher-free method (regression, MeanFlow: ``uses_teacher`` False) takes the dataset alone: G
gets the network and normalizer a teacher trained on it would have, from a seeded random start.

The loop here is the same for every method (``method.py``): batch, noise, conditioning, the
method's losses, one update of its networks and, on generator steps, of G.

Data-parallel (``torchrun --nproc_per_node N``): every rank draws the same global batch and noise
from the same seed and keeps its slice; losses are divided by the global count and gradients
all-reduced by sum, so N processes reproduce the 1-process run on the same global batch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdm_controller.data.episodes import EpisodeSet, load_episodes
from sdm_controller.data.windows import WindowSampler
from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.diagnostics import DistillProbe
from sdm_controller.distill.method import Step, get_method
from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.policy.ema import EMA
from sdm_controller.policy.modeling_diffusion import ACTION_KEY, DiffusionPolicy
from sdm_controller.policy.modeling_one_step import OneStepPolicy
from sdm_controller.runtime.artifact import ArtifactSpec, load_teacher, save_artifact
from sdm_controller.training.curves import plot_curves
from sdm_controller.training.teacher import action_meta, dataset_stats, load_dataset_hash, lr_factor, policy_config_for


class Rank:
    """This process's place in a data-parallel run (world 1 without torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world > 1
        if self.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def slice(self, tensor: torch.Tensor) -> torch.Tensor:
        per = tensor.shape[0] // self.world
        return tensor[self.rank * per : (self.rank + 1) * per]

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        if not self.distributed:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)

    @property
    def main(self) -> bool:
        return self.rank == 0


def check_spec(teacher: DiffusionPolicy, dataset: Path) -> EpisodeSet:
    """The dataset must provide exactly the observations and actions the teacher was trained on."""
    episodes = load_episodes(dataset)
    data_config = policy_config_for(episodes, {})
    if data_config.obs != teacher.config.obs or data_config.action_dim != teacher.config.action_dim:
        raise ArtifactError(
            f"the teacher's observation/action spec ({teacher.config.obs}, action_dim "
            f"{teacher.config.action_dim}) does not match dataset '{dataset}' ({data_config.obs}, action_dim "
            f"{data_config.action_dim})"
        )
    return episodes


def check_teacher(config: DistillConfig, teacher_path: str | Path | None) -> None:
    """A teacher is given exactly when the method distils one (teacher-free methods refuse it)."""
    if get_method(config.method).uses_teacher:
        if teacher_path is None:
            raise ConfigError(f"method '{config.method}' distils a teacher; give the teacher artifact (--teacher)")
    elif teacher_path is not None:
        raise ConfigError(f"method '{config.method}' trains on the demonstrations without a teacher; drop the "
                          f"teacher '{teacher_path}' (--teacher) and choose the network with --unet")



def make_optimizer(params: list, lr: float, config: DistillConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=config.betas, weight_decay=config.weight_decay)


def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def apply_update(params: list, optimizer, scheduler, rank: Rank, grad_clip: float) -> None:
    """Sum gradients across ranks, clip, step, advance the lr schedule, clear the gradients."""
    rank.sum_grads(params)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def distill(
    teacher_path: str | Path | None,
    dataset: str | Path,
    out: str | Path,
    config: DistillConfig,
    evaluate: Callable[[OneStepPolicy], float] | None = None,
    progress: bool = True,
    history_out: dict | None = None,
) -> dict[str, Any]:
    """Run one distillation; rank 0 writes the artifact (and intermediate checkpoints) to ``out``.

    ``teacher_path`` is None for a teacher-free method, and required for every other one.
    """
    method_class = get_method(config.method)
    check_teacher(config, teacher_path)
    teacher, teacher_spec = None, None
    if method_class.uses_teacher:
        teacher, teacher_spec = load_teacher(teacher_path)
        episodes = check_spec(teacher, Path(dataset))
        policy_config, stats = teacher.config, teacher.normalizer.stats
    else:
        episodes = load_episodes(dataset)
        policy_config = method_class.policy_config(episodes, config)
        stats = dataset_stats(episodes, policy_config)
    rank = Rank()
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    if teacher is not None:
        teacher = teacher.to(device).requires_grad_(False)
    spec = method_class.generator_spec(teacher, config)
    generator = OneStepPolicy(policy_config, stats, spec).to(device)
    if teacher is not None:
        generator.load_state_dict(teacher.state_dict())
    generator.encoder.requires_grad_(config.encoder_trainable)
    method = method_class(teacher, generator, config, rank.distributed)
    ema = EMA(generator, max_decay=config.generator_ema, warmup=config.generator_ema_warmup)
    tc = policy_config
    # With periodic evaluations, every checkpoint also logs what the run looks like from inside.
    probe = DistillProbe(teacher, generator, WindowSampler(episodes, tc.horizon, tc.n_obs_steps, tc.n_action_steps,
                                                           tc.obs.names, seed=config.seed + 7)) \
        if config.eval_every and rank.main and teacher is not None else None

    # "constant": a cosine over 10^12 steps, i.e. none in any run's lifetime.
    decay_steps = config.steps if config.lr_schedule == "cosine" else 10**12

    def schedule_lr(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config.warmup_steps, decay_steps))

    # One optimiser for G, then one per network the method trains, in its order.
    updates = []
    for module, lr in [(generator, config.lr_generator)] + [(n.module, n.lr) for n in method.trained]:
        params = trainable(module)
        optimizer = make_optimizer(params, lr, config)
        updates.append((params, optimizer, schedule_lr(optimizer)))
    update_g, update_others = updates[0], updates[1:]
    sampler = WindowSampler(
        episodes, tc.horizon, tc.n_obs_steps, tc.n_action_steps, tc.obs.names,
        seed=config.seed,
    )
    if config.batch_size % rank.world:
        raise ConfigError(f"batch_size {config.batch_size} must be divisible by the {rank.world} processes")
    noise_rng = torch.Generator().manual_seed(config.seed + 1)
    shape = (config.batch_size, tc.horizon, tc.action_dim)
    losses = [f"loss_{name}" for name in method.loss_names]
    history: dict[str, list] = {"step": [], **{key: [] for key in losses}, "eval_step": [], "eval_success": []}
    out = Path(out)
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(range(config.steps), desc=f"distill {config.method}", disable=not (progress and rank.main))
    for it in bar:
        batch = sampler.batch(config.batch_size)
        obs = {k: rank.slice(v).to(device) for k, v in batch["obs"].items()}
        z = rank.slice(torch.randn(shape, generator=noise_rng)).to(device)
        eps = rank.slice(torch.randn(shape, generator=noise_rng)).to(device)
        cond_real = None
        if teacher is not None:
            with torch.no_grad():
                cond_real = teacher.condition(obs)
        cond_gen = generator.condition(obs) if config.encoder_trainable else cond_real
        if not spec.noise_input:
            z = torch.zeros_like(z)
        g_step = it >= config.fake_warmup_steps and it % config.update_ratio == 0
        actions = generator.normalizer.normalize(ACTION_KEY, rank.slice(batch[ACTION_KEY]).to(device).float())
        step = Step(obs=obs, actions=actions, z=z, eps=eps, cond_real=cond_real, cond_gen=cond_gen,
                    train_generator=g_step, rng=noise_rng, share=rank.slice, global_count=config.batch_size,
                    device=device)
        result = method.losses(step)
        if torch.is_tensor(result.objective) and result.objective.requires_grad:
            result.objective.backward()
        for params, optimizer, scheduler in update_others:
            apply_update(params, optimizer, scheduler, rank, config.grad_clip)
        if g_step:
            # G's gradient is cleared only here, so what reaches G between its steps adds to the next
            # one: released (literal) SDM's F loss does, and so does CD's loss during warm-up.
            apply_update(*update_g, rank, config.grad_clip)
            ema.step(generator)
            method.after_generator_step()
        history["step"].append(it + 1)
        for name, key in zip(method.loss_names, losses, strict=True):
            value = result.logged.get(name)
            history[key].append(float(value.detach()) if value is not None else None)
        if rank.main and progress:
            bar.set_postfix(loss_g=f"{history['loss_generator'][-1]:.4g}")
        last = it + 1 == config.steps
        periodic = config.eval_every and (it + 1) % config.eval_every == 0
        if rank.main and (periodic or last):
            if evaluate is not None:
                success = float(evaluate(ema.model.eval()))
                history["eval_step"].append(it + 1)
                history["eval_success"].append(success)
                bar.write(f"step {it + 1}: success {success:.2f}")
            if probe is not None:
                history.setdefault("diagnostics", []).append({"step": it + 1, **probe(ema.model, method)})
            save_one_step(out if last else out / "checkpoints" / f"step{it + 1}", ema.model, teacher_spec,
                          teacher_path, dataset, config, it + 1, time.perf_counter() - start, episodes)
    seconds = time.perf_counter() - start
    if history_out is not None:
        history_out.update(history)
    if rank.main:
        (out / "distill_history.json").write_text(json.dumps(history))
        plot_curves(history, losses, out / "distill_curves.png",
                    title=f"distillation ({config.method})", xlabel="iteration")
    return {"artifact": str(out), "seconds": seconds, **history}


def save_one_step(
    path: Path,
    policy: OneStepPolicy,
    teacher_spec: ArtifactSpec | None,
    teacher_path: str | Path | None,
    dataset: str | Path,
    config: DistillConfig,
    steps: int,
    seconds: float,
    episodes: EpisodeSet,
) -> None:
    """The one-step artifact, with the teacher's action, timing and joint names, and where it came from.

    Without a teacher (``teacher_spec`` None) they come from the dataset, as a teacher's would.
    """
    if teacher_spec is None:
        save_artifact(
            path,
            policy,
            kind="one-step",
            provenance={
                "algorithm": config.method,
                "distill": config.to_dict(),
                "steps": steps,
                "seed": config.seed,
                "teacher": None,
                "dataset": str(dataset),
                "dataset_hash": load_dataset_hash(dataset),
                "source": episodes.attrs.get("source"),
                "train_seconds": round(seconds, 1),
            },
            action=action_meta(episodes.attrs),
            control_period_s=episodes.attrs.get("control_period_s"),
            state_names=episodes.attrs.get("state_names"),
        )
        return
    teacher_steps = teacher_spec.provenance.get("steps")
    provenance = {
        "algorithm": config.method,
        "distill": config.to_dict(),
        "steps": steps,
        "seed": config.seed,
        "teacher": str(teacher_path),
        "teacher_weights_sha256": teacher_spec.weights.sha256,
        "teacher_steps": teacher_steps,
        "steps_fraction_of_teacher": (steps / teacher_steps) if teacher_steps else None,
        "dataset": str(dataset),
        "dataset_hash": teacher_spec.provenance.get("dataset_hash"),
        "source": episodes.attrs.get("source"),
        "distill_seconds": round(seconds, 1),
    }
    save_artifact(
        path,
        policy,
        kind="one-step",
        provenance=provenance,
        action=teacher_spec.action,
        control_period_s=teacher_spec.control_period_s,
        state_names=teacher_spec.state_names,
    )
