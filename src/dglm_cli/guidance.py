"""Plug-and-play classifier guidance: a wrapper that turns a denoise function into a guided one.

Monte-Carlo loss-guided diffusion (Song et al. 2023, LGD-MC), as DGLM applies it. At each step, with
α² = ᾱ_t and σ² = 1 − α²:
  1. v̂ = denoise(z_t), x̂ and ε̂ from v̂, with gradients through the denoiser;
  2. K samples around the predicted clean latent, x̃_k = x̂ + √(σ²/α²)·ξ_k, ξ_k ~ N(0, I);
  3. map each to unit-norm embedding space, e_k = normalize(x̃_k ⊙ s + μ);
  4. per attribute i: ℓ_ik = −log p_i(y_i | e_k) (toward a label) or −log(1 − p_i(y_i | e_k)) (away);
  5. aggregate over k: "lgd" L_i = −log mean_k exp(−ℓ_ik) (LGD-MC, the default) or
     "harmonic" L_i = log mean_k exp(ℓ_ik) (the official code's choice);
  6. L = Σ_i w_i L_i and g = ∂L/∂z_t;
  7. ε̂' = ε̂ + s·σ·g, returned as the equivalent v̂' = v̂ + s·σ·g / α.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dglm_cli.classifier import LinearClassifier
from dglm_cli.denoiser import DenoiseFn
from dglm_cli.rng import RecordRNG
from dglm_cli.schedule import v_to_x_eps

AGGREGATES = ("lgd", "harmonic")


@dataclass
class AttributeTarget:
    """One guidance term: push the proposal toward (or, with `avoid`, away from) `label` of `classifier`."""

    name: str  # the classifier's name
    classifier: LinearClassifier
    label: str
    weight: float = 1.0
    avoid: bool = False
    requested: str = ""  # the attribute as the user wrote it (e.g. `positive`)

    @property
    def label_index(self) -> int:
        return self.classifier.labels.index(self.label)

    def loss(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, K, D) unit-norm embeddings -> per-sample losses ℓ (B, K)."""
        log_probs = self.classifier.log_probs(embeddings)[..., self.label_index]  # (B, K)
        if self.avoid:
            return -torch.log1p(-log_probs.exp().clamp(max=1 - 1e-6))
        return -log_probs


def aggregate_losses(losses: torch.Tensor, method: str) -> torch.Tensor:
    """(B, K) Monte-Carlo losses -> (B,)."""
    log_k = math.log(losses.shape[1])
    if method == "lgd":
        return -(torch.logsumexp(-losses, dim=1) - log_k)
    if method == "harmonic":
        return torch.logsumexp(losses, dim=1) - log_k
    raise ValueError(f"unknown aggregate {method!r}; choose from {', '.join(AGGREGATES)}")


def classifier_guidance(
    denoise: DenoiseFn,
    targets: list[AttributeTarget],
    scale: float,
    to_embedding: Callable[[torch.Tensor], torch.Tensor],
    rng: RecordRNG,
    num_samples: int = 32,
    aggregate: str = "lgd",
) -> DenoiseFn:
    """Wrap `denoise`; with scale 0 or no targets, `denoise` itself is returned (bit-identical output)."""
    if scale == 0 or not targets:
        return denoise
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose from {', '.join(AGGREGATES)}")

    def guided(z: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            v_hat = denoise(z, alpha2)
            x_hat, _ = v_to_x_eps(z, v_hat, alpha2)
            spread = ((1 - alpha2) / alpha2).sqrt().to(z.dtype)[:, None, None]  # √(σ²/α²), (B, 1, 1)
            noise = rng.randn(num_samples, z.shape[1], dtype=z.dtype)  # (B, K, D)
            embeddings = to_embedding(x_hat[:, None, :] + spread * noise)  # (B, K, D)
            loss = sum(t.weight * aggregate_losses(t.loss(embeddings), aggregate) for t in targets)  # (B,)
            (gradient,) = torch.autograd.grad(loss.sum(), z)
        alpha, sigma = alpha2.sqrt().to(z.dtype)[:, None], (1 - alpha2).sqrt().to(z.dtype)[:, None]
        return (v_hat + scale * sigma * gradient / alpha).detach()

    return guided
