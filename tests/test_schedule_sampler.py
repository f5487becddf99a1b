"""Noise schedule, v-parameterisation and samplers, checked against closed forms."""

import math

import pytest
import torch

from dglm_cli.rng import RecordRNG
from dglm_cli.sampler import sample
from dglm_cli.schedule import CosineSchedule, diffuse, v_target, v_to_x_eps


def test_cosine_schedule_matches_closed_form():
    t = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    expected = torch.cos(t * math.pi / 2) ** 2
    assert torch.allclose(CosineSchedule().alpha2(t), expected, atol=1e-12)


def test_shifted_schedule_is_the_prompt_generator_augmentation():
    # α² = 9cos² / (9cos² + sin²): reference values from the official code's cosine-scale3 setting
    alpha2 = CosineSchedule(shift=3.0).alpha2(torch.tensor([0.25, 0.5, 0.75, 0.9], dtype=torch.float64))
    assert torch.allclose(alpha2, torch.tensor([0.981, 0.900, 0.607, 0.184], dtype=torch.float64), atol=1e-3)


def test_time_grid_ends_at_pure_noise_and_data():
    schedule = CosineSchedule()
    alpha2 = schedule.alpha2(schedule.time_grid(10))
    assert alpha2[0] < 1e-8 and alpha2[-1] > 1 - 1e-8 and torch.all(alpha2[1:] > alpha2[:-1])


def test_v_parameterisation_round_trip():
    x, noise = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    alpha2 = torch.rand(5, dtype=torch.float64) * 0.98 + 0.01
    z = diffuse(x, noise, alpha2)
    x_hat, eps_hat = v_to_x_eps(z, v_target(x, noise, alpha2), alpha2)
    assert torch.allclose(x_hat, x) and torch.allclose(eps_hat, noise)


def gaussian_denoiser(mean: float, std: float):
    """The exact v-prediction for data x ~ N(mean, std² I): x̂ = E[x | z_t], v̂ = (α z − x̂) / σ."""

    def denoise(z, alpha2):
        alpha, sigma = alpha2.sqrt()[:, None], (1 - alpha2).sqrt()[:, None]
        x_hat = mean + alpha * std**2 / (alpha2[:, None] * std**2 + sigma**2) * (z - alpha * mean)
        return (alpha * z - x_hat) / sigma

    return denoise


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_samplers_recover_a_gaussian(method):
    torch.manual_seed(0)
    n, dim = 4000, 3
    rng = RecordRNG(list(range(n)), "sampler")
    z = RecordRNG(list(range(n)), "init").randn(dim)
    x = sample(gaussian_denoiser(2.0, 0.5), z, steps=50, method=method, rng=rng)
    assert abs(x.mean().item() - 2.0) < 0.03
    assert abs(x.std().item() - 0.5) < 0.03


def test_ddpm_is_reproducible_per_record():
    denoise = gaussian_denoiser(0.0, 1.0)
    z = RecordRNG([1, 2, 3], "init").randn(4)
    first = sample(denoise, z, steps=20, rng=RecordRNG([1, 2, 3], "sampler"))
    again = sample(denoise, z[1:2], steps=20, rng=RecordRNG([2], "sampler"))
    assert torch.equal(first, sample(denoise, z, steps=20, rng=RecordRNG([1, 2, 3], "sampler")))
    assert torch.allclose(first[1:2], again, atol=1e-6)


def test_unknown_sampler_is_rejected():
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(gaussian_denoiser(0, 1), torch.zeros(1, 2), steps=2, method="euler")
