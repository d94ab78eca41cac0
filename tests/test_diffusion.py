"""Noise schedule, timestep spacing, samplers, normalizer and EMA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sdm_controller.errors import ConfigError
from sdm_controller.policy.ema import EMA
from sdm_controller.policy.noise_schedule import NoiseSchedule, spaced_timesteps
from sdm_controller.policy.normalizer import Normalizer, minmax_stats

T = 100

# -- schedule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_to_x0_eps_inverts_add_noise(prediction_type):
    schedule = NoiseSchedule(T, prediction_type, clip_sample=False)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(T, 8, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(T, 8, 4, generator=gen, dtype=torch.float64)
    t = torch.arange(T)  # every timestep once
    x_t = schedule.add_noise(x0, eps, t)
    target = schedule.training_target(x0, eps)
    assert target is (eps if prediction_type == "epsilon" else x0)
    x0_hat, eps_hat = schedule.to_x0_eps(x_t, t, target)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-5)


def test_to_x0_eps_clips_x0_only_when_asked():
    x_t = torch.full((1, 4, 2), 3.0)
    out = torch.full((1, 4, 2), 5.0)
    t = torch.tensor([50])
    clipped, _ = NoiseSchedule(T, "sample", clip_sample=True).to_x0_eps(x_t, t, out)
    raw, _ = NoiseSchedule(T, "sample", clip_sample=False).to_x0_eps(x_t, t, out)
    assert clipped.max() == 1.0
    assert raw.max() == 5.0


def test_abar_decreasing_and_minus_one_is_one():
    schedule = NoiseSchedule(T)
    abar = schedule.abar(torch.arange(-1, T))
    assert abar[0].item() == 1.0
    assert torch.all(abar[1:] < abar[:-1])
    assert abar[1] < 1.0 and abar[-1] < 1e-3
    assert torch.all(abar > 0)


def test_add_noise_at_t_minus_one_is_identity():
    schedule = NoiseSchedule(T)
    x0 = torch.randn(3, 8, 4)
    out = schedule.add_noise(x0, torch.randn(3, 8, 4), torch.full((3,), -1))
    torch.testing.assert_close(out, x0)


# -- spaced_timesteps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, expected",
    [
        (1, [99]),
        (2, [99, 49]),
        (4, [99, 74, 49, 24]),
        (10, [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]),
        (100, list(range(99, -1, -1))),
    ],
)
def test_spaced_timesteps_trailing(steps, expected):
    grid = spaced_timesteps(T, steps)
    assert grid == expected
    assert grid[0] == T - 1
    assert all(isinstance(t, int) for t in grid)


@pytest.mark.parametrize("steps", [0, 101, -3])
def test_spaced_timesteps_rejects_out_of_range(steps):
    with pytest.raises(ConfigError, match="sampler steps"):
        spaced_timesteps(T, steps)


def test_spaced_timesteps_has_exactly_steps_valid_entries_for_every_count():
    bad = {}
    for steps in range(1, T + 1):
        grid = spaced_timesteps(T, steps)
        ok = len(grid) == steps and grid[0] == T - 1 and min(grid) >= 0 and len(set(grid)) == steps
        ok = ok and all(a > b for a, b in zip(grid, grid[1:], strict=False))
        if not ok:
            bad[steps] = grid[-3:]
    assert not bad, f"bad grids (last entries shown): {bad}"


def test_sampler_29_steps_calls_model_29_times_and_stays_finite():
    schedule = NoiseSchedule(T, "sample", clip_sample=True)
    x0 = torch.full((1, 8, 4), 0.25)
    calls: list[torch.Tensor] = []
    gen = torch.Generator().manual_seed(0)
    out = schedule.sample(_oracle(x0, calls), (1, 8, 4), 29, "ddim", generator=gen)
    assert len(calls) == 29
    assert torch.isfinite(out).all()


# -- sampler -----------------------------------------------------------------------------------


def _oracle(x0: torch.Tensor, calls: list):
    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t.clone())
        return x0.expand_as(x_t).clone()

    return denoise


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
@pytest.mark.parametrize("steps", [1, 4, 10, 100])
def test_sampler_with_x0_oracle_returns_that_x0(method, steps):
    schedule = NoiseSchedule(T, "sample", clip_sample=True)
    x0 = torch.linspace(-0.9, 0.9, 2 * 8 * 4).reshape(2, 8, 4)
    calls: list[torch.Tensor] = []
    gen = torch.Generator().manual_seed(3)
    out = schedule.sample(_oracle(x0, calls), (2, 8, 4), steps, method, generator=gen)
    # The last update is x = sqrt(1) * x0 + 0 * (...) for DDIM and for DDPM (no noise at the end).
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)
    assert len(calls) == steps
    expected = spaced_timesteps(T, steps)
    assert [int(t[0]) for t in calls] == expected
    assert all(t.shape == (2,) and t.dtype == torch.long for t in calls)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sampler_with_epsilon_oracle_recovers_x0(method):
    """An epsilon model that is exact for the current x_t and a fixed x0 also lands on x0."""
    schedule = NoiseSchedule(T, "epsilon", clip_sample=False)
    x0 = torch.linspace(-0.5, 0.5, 8 * 2).reshape(1, 8, 2)

    def denoise(x_t, t):
        alpha, sigma = schedule.alpha_sigma(t, x_t.dim())
        return (x_t - alpha * x0) / sigma

    out = schedule.sample(denoise, (1, 8, 2), 10, method, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sampler_seeded_generator_is_reproducible(method):
    schedule = NoiseSchedule(T, "epsilon", clip_sample=True)

    def denoise(x_t, t):  # output depends on the noise, so the result does too
        return 0.5 * x_t + 0.001 * t.float().reshape(-1, 1, 1)

    def run(seed):
        return schedule.sample(denoise, (3, 8, 4), 10, method, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ddpm_adds_noise_but_ddim_does_not():
    """With the same initial noise, DDIM and DDPM differ only by DDPM's per-step noise."""
    schedule = NoiseSchedule(T, "epsilon", clip_sample=False)

    def denoise(x_t, t):
        return 0.9 * x_t

    ddim = [schedule.sample(denoise, (1, 8, 4), 10, "ddim", generator=torch.Generator().manual_seed(s))
            for s in (0, 0)]
    ddpm = schedule.sample(denoise, (1, 8, 4), 10, "ddpm", generator=torch.Generator().manual_seed(0))
    assert torch.equal(ddim[0], ddim[1])
    assert not torch.allclose(ddim[0], ddpm)


def test_sampler_unknown_method_raises():
    schedule = NoiseSchedule(T)
    with pytest.raises(ConfigError, match="heun"):
        schedule.sample(lambda x, t: x, (1, 8, 4), 4, "heun")


def test_sampler_rejects_bad_step_count():
    schedule = NoiseSchedule(T)
    with pytest.raises(ConfigError):
        schedule.sample(lambda x, t: x, (1, 8, 4), 0, "ddim")


# -- normalizer --------------------------------------------------------------------------------


def test_normalizer_round_trip_and_range():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 6)) * np.array([1, 10, 0.01, 100, 3, 0.5]) + np.array([0, 5, -2, 30, 0, 1])
    data = data.astype(np.float32)
    stats = {"state": minmax_stats(data)}
    assert stats["state"]["min"] == pytest.approx(data.min(axis=0).tolist())
    norm = Normalizer(stats)
    x = torch.from_numpy(data)
    y = norm.normalize("state", x)
    assert y.min() >= -1.0 - 1e-6 and y.max() <= 1.0 + 1e-6
    # The extremes map to the ends of the range.
    torch.testing.assert_close(y.min(dim=0).values, torch.full((6,), -1.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.max(dim=0).values, torch.full((6,), 1.0), rtol=0, atol=1e-5)
    back = norm.unnormalize("state", y)
    torch.testing.assert_close(back, x, rtol=1e-6, atol=1e-6 * float(x.abs().max()))


def test_normalizer_constant_dimension_is_centred_not_divided():
    data = np.zeros((20, 3), dtype=np.float32)
    data[:, 0] = np.linspace(-2, 4, 20)
    data[:, 1] = 7.5  # constant
    data[:, 2] = 1e-6 * np.arange(20)  # range below MIN_RANGE
    norm = Normalizer({"state": minmax_stats(data)})
    x = torch.from_numpy(data)
    y = norm.normalize("state", x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 1], torch.zeros(20))
    assert y[:, 2].abs().max() < 1e-4  # centred, not stretched to [-1, 1]
    torch.testing.assert_close(y[:, 0].min(), torch.tensor(-1.0))
    torch.testing.assert_close(norm.unnormalize("state", y), x, rtol=0, atol=1e-6)
    # A value away from the constant passes through shifted, not blown up.
    probe = torch.tensor([[1.0, 8.5, 0.0]])
    assert norm.normalize("state", probe)[0, 1].item() == pytest.approx(1.0)


def test_normalizer_unknown_key_and_buffers_not_persistent(tiny_stats):
    norm = Normalizer(tiny_stats(state=3))
    with pytest.raises(KeyError, match="state"):
        norm.normalize("velocity", torch.zeros(1, 3))
    assert norm.state_dict() == {}


# -- EMA ---------------------------------------------------------------------------------------


def test_ema_decay_grows_and_is_capped():
    ema = EMA(nn.Linear(2, 2), power=0.75, max_decay=0.99)
    decays = []
    for _ in range(50):
        decays.append(ema.decay())
        ema.updates += 1
    assert decays[0] == 0.0
    assert all(b > a for a, b in zip(decays, decays[1:], strict=False) if b < 0.99)
    assert decays[1] == pytest.approx(1 - 2**-0.75)
    ema.updates = 10**9
    assert ema.decay() == 0.99


def test_ema_moves_toward_model():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = EMA(model)
    assert ema.model is not model
    assert not any(p.requires_grad for p in ema.model.parameters())
    ema.step(model)  # decay 0: the copy equals the model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def distances():
        pairs = zip(ema.model.parameters(), model.parameters(), strict=True)
        return [(e - p).abs().sum().item() for e, p in pairs]

    before = distances()
    old = [e.clone() for e in ema.model.parameters()]
    d = ema.decay()
    assert 0 < d < 1
    ema.step(model)
    after = distances()
    assert all(a < b for a, b in zip(after, before, strict=True))
    for e, o, p in zip(ema.model.parameters(), old, model.parameters(), strict=True):
        torch.testing.assert_close(e, d * o + (1 - d) * p)
    assert ema.updates == 2
