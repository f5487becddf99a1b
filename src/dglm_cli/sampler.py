"""Samplers over any denoise function (z_t, α²) -> v̂. They know nothing of models or guidance.

DDPM with log-variance interpolation λ (official code: λ = 0.2) and deterministic DDIM (η = 0), on the
cosine schedule's time grid t_k = linspace(1, 0, steps + 1).
"""

from collections.abc import Callable

import torch

from dglm_cli.denoiser import DenoiseFn
from dglm_cli.rng import RecordRNG
from dglm_cli.schedule import CosineSchedule, v_to_x_eps

SAMPLERS = ("ddpm", "ddim")


@torch.no_grad()
def sample(
    denoise: DenoiseFn,
    z: torch.Tensor,
    steps: int,
    method: str = "ddpm",
    rng: RecordRNG | None = None,
    schedule: CosineSchedule = CosineSchedule(),
    var_lambda: float = 0.2,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run the reverse process from z_1 = `z` (B, D) and return x̂ at t = 0 (B, D)."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose from {', '.join(SAMPLERS)}")
    if method == "ddpm" and rng is None:
        raise ValueError("the DDPM sampler needs a RecordRNG for its per-step noise")
    times = schedule.time_grid(steps, device=z.device)
    alpha2_grid = schedule.alpha2(times)  # (steps + 1,) float64
    batch = z.shape[0]
    x_hat = z
    for k in range(steps):
        alpha2_t, alpha2_s = alpha2_grid[k], alpha2_grid[k + 1]
        # 1. predict v̂ at noise level α²_t, then x̂ and ε̂
        v_hat = denoise(z, alpha2_t.to(z.dtype).expand(batch))
        x_hat, eps_hat = v_to_x_eps(z, v_hat, alpha2_t.expand(batch))
        # 2. the last step returns x̂ itself
        if k == steps - 1:
            break
        # 3. step from t to s
        if method == "ddim":
            z = alpha2_s.sqrt().to(z.dtype) * x_hat + (1 - alpha2_s).sqrt().to(z.dtype) * eps_hat
        else:
            z = _ddpm_step(z, eps_hat, alpha2_t, alpha2_s, var_lambda, rng)
        if on_step:
            on_step(k + 1)
    if on_step:
        on_step(steps)
    return x_hat


def _ddpm_step(z, eps_hat, alpha2_t, alpha2_s, var_lambda: float, rng: RecordRNG) -> torch.Tensor:
    """Ancestral step with variance exp(λ ln σ²_max + (1 − λ) ln σ²_min) (Nichol & Dhariwal interpolation)."""
    ratio = alpha2_t / alpha2_s  # r = α²_t / α²_s
    beta = 1 - ratio  # σ²_max
    posterior = (1 - alpha2_s) / (1 - alpha2_t) * beta  # σ²_min
    variance = torch.exp(var_lambda * beta.log() + (1 - var_lambda) * posterior.log())
    mean = (z - (beta / (1 - alpha2_t).sqrt()).to(z.dtype) * eps_hat) / ratio.sqrt().to(z.dtype)
    return mean + variance.sqrt().to(z.dtype) * rng.randn(z.shape[1], dtype=z.dtype)
