"""Variance-preserving noise schedule in log-SNR form, and the v-parameterisation.

Notation (paper and official code): α² = ᾱ is the signal variance, σ² = 1 − α² the noise variance,
γ = logit(α²) the log-SNR. The forward process is z_t = α x + σ ε, and the network predicts
v = α ε − σ x.
"""

import math
from dataclasses import dataclass

import torch

LOGSNR_LIMIT = 20.0  # γ is clamped to [−20, 20] in every conversion, as in the official code


def logsnr_to_alpha2(logsnr: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logsnr.clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT))


def alpha2_to_logsnr(alpha2: torch.Tensor) -> torch.Tensor:
    return torch.logit(alpha2).clamp(-LOGSNR_LIMIT, LOGSNR_LIMIT)


@dataclass(frozen=True)
class CosineSchedule:
    """α²(t) = cos²(πt/2), clamped below at `min_alpha2`, with log-SNR shifted by 2·ln(shift).

    shift = 1 is the sampling schedule; shift = 3 is the prompt generator's noise augmentation
    (α² = sigmoid(logit(cos²(πt/2)) + 2 ln 3)).
    """

    shift: float = 1.0
    min_alpha2: float = 1e-9

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        alpha2 = torch.cos(t * math.pi / 2).pow(2).clamp(min=self.min_alpha2)
        return alpha2_to_logsnr(alpha2) + 2 * math.log(self.shift)

    def alpha2(self, t: torch.Tensor) -> torch.Tensor:
        return logsnr_to_alpha2(self.logsnr(t))

    def time_grid(self, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """steps + 1 times from 1 (pure noise) to 0 (data), float64 for exact α² ratios."""
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)


def _coefficients(alpha2: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, σ) shaped to broadcast against `like` (B, ...)."""
    alpha2 = alpha2.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
    return alpha2.sqrt(), (1 - alpha2).sqrt()


def diffuse(x: torch.Tensor, noise: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
    """z = α x + σ ε."""
    alpha, sigma = _coefficients(alpha2, x)
    return alpha * x + sigma * noise


def v_target(x: torch.Tensor, noise: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
    """v = α ε − σ x."""
    alpha, sigma = _coefficients(alpha2, x)
    return alpha * noise - sigma * x


def v_to_x_eps(z: torch.Tensor, v: torch.Tensor, alpha2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From a v-prediction: x̂ = α z − σ v̂ and ε̂ = σ z + α v̂."""
    alpha, sigma = _coefficients(alpha2, z)
    return alpha * z - sigma * v, sigma * z + alpha * v
