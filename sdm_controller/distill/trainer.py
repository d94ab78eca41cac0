"""``distill``: teacher artifact + dataset in, one-step artifact out.

Networks, all initialised from the teacher:

* R, the teacher itself (frozen), gives the real score;
* F, a trainable copy, learns the generator's score by denoising its samples (not in OneDP-D);
* G, a ``OneStepPolicy`` with the teacher's weights, is the generator; its EMA is saved.

Data-parallel (``torchrun --nproc_per_node N``): every rank draws the same global batch and noise
from the same seed and keeps its slice; losses are divided by the global count and gradients
all-reduced by sum, so N processes reproduce the 1-process run on the same global batch.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sdm_controller.data.episodes import load_episodes
from sdm_controller.data.windows import WindowSampler
from sdm_controller.distill.configuration_distill import DistillConfig
from sdm_controller.distill.consistency import ConsistencyDistillation, ema_update
from sdm_controller.distill.distribution_matching import DistributionMatching, clamp_straight_through
from sdm_controller.errors import ArtifactError, ConfigError
from sdm_controller.policy.ema import EMA
from sdm_controller.policy.modeling_diffusion import ACTION_KEY, DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.runtime.artifact import load_teacher, save_artifact
from sdm_controller.training.curves import plot_curves
from sdm_controller.training.teacher import lr_factor, policy_config_for

#: Generator timestep for epsilon teachers, counted back from T: beta_{T-1} is clipped to 0.999 in
#: squaredcos_cap_v2, so alpha_{T-1} ~ 5e-4 (eps -> x0 amplifies errors 2000x) while alpha_{T-2} ~ 0.016.
#: Measured on drawer-open (epsilon teacher, 25 episodes, before any distillation): the teacher read
#: at t = 65 (OneDP's choice, kept in its preset) succeeds 0.00, at t = 98 0.40, at t = 99 0.28.
EPSILON_GENERATOR_OFFSET = 2


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


def check_spec(teacher: DiffusionPolicy, dataset: Path) -> Any:
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


def generator_timestep(teacher: DiffusionPolicy, config: DistillConfig, cd: ConsistencyDistillation | None) -> int:
    if cd is not None:
        return cd.top_timestep
    if config.generator_timestep is not None:
        t = config.generator_timestep
        limit = teacher.config.num_train_timesteps - (1 if teacher.config.prediction_type == "epsilon" else 0)
        if not 0 <= t <= limit:
            raise ConfigError(f"generator_timestep {t} must lie in [0, {limit}] for this teacher")
        return t
    if teacher.config.prediction_type == "epsilon":
        return teacher.config.num_train_timesteps - EPSILON_GENERATOR_OFFSET
    return teacher.config.num_train_timesteps  # SDM: pure noise in, one past the training range


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
    teacher_path: str | Path,
    dataset: str | Path,
    out: str | Path,
    config: DistillConfig,
    evaluate: Callable[[OneStepPolicy], float] | None = None,
    progress: bool = True,
    history_out: dict | None = None,
) -> dict[str, Any]:
    """Run one distillation; rank 0 writes the artifact (and intermediate checkpoints) to ``out``."""
    teacher, teacher_meta = load_teacher(teacher_path)
    episodes = check_spec(teacher, Path(dataset))
    rank = Rank()
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    teacher = teacher.to(device).requires_grad_(False)
    schedule = teacher.schedule
    cd = ConsistencyDistillation(schedule, config.cd_sigma_data, rank.distributed) if config.method == "cd" else None
    dm = None if cd else DistributionMatching(schedule, config, rank.distributed)
    spec = GeneratorSpec(timestep=generator_timestep(teacher, config, cd), noise_input=config.noise_input)
    if cd is not None:
        spec.skip_scale, spec.out_scale = cd.generator_scalings()
    generator = OneStepPolicy(teacher.config, teacher.normalizer.stats, spec).to(device)
    generator.load_state_dict(teacher.state_dict())
    generator.encoder.requires_grad_(config.encoder_trainable)
    fake = None
    if config.method not in ("onedp-d", "cd"):
        fake = copy.deepcopy(teacher).requires_grad_(True)
        fake.encoder.requires_grad_(config.encoder_trainable)
    target = copy.deepcopy(generator).requires_grad_(False) if cd else None
    ema = EMA(generator, max_decay=config.generator_ema)

    def schedule_lr(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config.warmup_steps, 10**12))

    params_g = trainable(generator)
    params_f = trainable(fake) if fake is not None else []
    opt_g = make_optimizer(params_g, config.lr_generator, config)
    sched_g = schedule_lr(opt_g)
    opt_f = make_optimizer(params_f, config.lr_fake, config) if fake is not None else None
    sched_f = schedule_lr(opt_f) if opt_f is not None else None
    tc = teacher.config
    sampler = WindowSampler(
        episodes, tc.horizon, tc.n_obs_steps, tc.n_action_steps, list(tc.obs.low_dim) + list(tc.obs.cameras),
        seed=config.seed,
    )
    if config.batch_size % rank.world:
        raise ConfigError(f"batch_size {config.batch_size} must be divisible by the {rank.world} processes")
    noise_rng = torch.Generator().manual_seed(config.seed + 1)
    shape = (config.batch_size, tc.horizon, tc.action_dim)
    history: dict[str, list] = {"step": [], "loss_generator": [], "loss_fake": [], "eval_step": [], "eval_success": []}
    out = Path(out)
    start = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(range(config.steps), desc=f"distill {config.method}", disable=not (progress and rank.main))
    for it in bar:
        batch = sampler.batch(config.batch_size)
        obs = {k: rank.slice(v).to(device) for k, v in batch["obs"].items()}
        z = rank.slice(torch.randn(shape, generator=noise_rng)).to(device)
        eps = rank.slice(torch.randn(shape, generator=noise_rng)).to(device)
        with torch.no_grad():
            cond_real = teacher.condition(obs)
        cond_gen = generator.condition(obs) if config.encoder_trainable else cond_real
        if not config.noise_input:
            z = torch.zeros_like(z)
        g_step = it >= config.fake_warmup_steps and it % config.update_ratio == 0
        if cd is not None:
            index = rank.slice(torch.randint(0, len(cd.grid), (config.batch_size,), generator=noise_rng))
            x0 = teacher.normalizer.normalize(ACTION_KEY, rank.slice(batch[ACTION_KEY]).to(device).float())
            loss_g = cd.loss(
                x0, eps, index,
                teacher=lambda x, t, c=cond_real: teacher.unet(x, t, c),
                online=lambda x, t, c=cond_gen: generator.unet(x, t, c),
                target=lambda x, t, c=cond_real: target.unet(x, t, c),
                global_count=config.batch_size,
            )
            loss_f = None
            total = loss_g
        else:
            t = rank.slice(dm.sample_t(config.batch_size, noise_rng)).to(device)
            need_grad = g_step or config.literal
            with torch.set_grad_enabled(need_grad):
                a = generator.generate(z, cond_gen)
                if config.sample_clamp:
                    a = clamp_straight_through(a)
            cond_fake = fake.condition(obs) if (fake is not None and config.encoder_trainable) else cond_real
            terms = dm.terms(
                a,
                real=lambda x, tt, c=cond_real: teacher.unet(x, tt, c),
                fake=(lambda x, tt, c=cond_fake: fake.unet(x, tt, c)) if fake is not None else None,
                eps=eps,
                t=t,
                global_count=config.batch_size,
            )
            loss_g, loss_f = terms.loss_generator, terms.loss_fake
            total = (loss_f if loss_f is not None else 0.0) + (loss_g if g_step else 0.0)
        if torch.is_tensor(total) and total.requires_grad:
            total.backward()
        if fake is not None:
            apply_update(params_f, opt_f, sched_f, rank, config.grad_clip)
        if g_step:
            # Literal SDM keeps F's gradient on G between G steps; zeroing only here reproduces it.
            apply_update(params_g, opt_g, sched_g, rank, config.grad_clip)
            ema.step(generator)
            if target is not None:
                ema_update(target, generator, config.cd_ema)
        history["step"].append(it + 1)
        history["loss_generator"].append(float(loss_g.detach()))
        history["loss_fake"].append(float(loss_f.detach()) if loss_f is not None else None)
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
            save_one_step(out if last else out / "checkpoints" / f"step{it + 1}", ema.model, teacher_meta,
                          teacher_path, dataset, config, it + 1, time.perf_counter() - start, episodes)
    seconds = time.perf_counter() - start
    if history_out is not None:
        history_out.update(history)
    if rank.main:
        (out / "distill_history.json").write_text(json.dumps(history))
        plot_curves(history, ["loss_generator", "loss_fake"], out / "distill_curves.png",
                    title=f"distillation ({config.method})", xlabel="iteration")
    return {"artifact": str(out), "seconds": seconds, **history}


def save_one_step(path, policy, teacher_meta, teacher_path, dataset, config, steps, seconds, episodes) -> None:
    teacher_steps = teacher_meta["provenance"].get("steps")
    provenance = {
        "algorithm": config.method,
        "distill": config.to_dict(),
        "steps": steps,
        "seed": config.seed,
        "teacher": str(teacher_path),
        "teacher_weights_sha256": teacher_meta["weights"]["sha256"],
        "teacher_steps": teacher_steps,
        "steps_fraction_of_teacher": (steps / teacher_steps) if teacher_steps else None,
        "dataset": str(dataset),
        "dataset_hash": teacher_meta["provenance"].get("dataset_hash"),
        "source": episodes.attrs.get("source"),
        "distill_seconds": round(seconds, 1),
    }
    save_artifact(
        path,
        policy,
        kind="one-step",
        provenance=provenance,
        action=teacher_meta.get("action"),
        control_period_s=teacher_meta.get("control_period_s"),
        extra={"generator": policy.generator_spec.to_dict()},
        state_names=teacher_meta.get("observation", {}).get("state_names"),
    )
