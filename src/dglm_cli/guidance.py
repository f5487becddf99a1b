"""Plug-and-play classifier guidance: a wrapper that turns a denoise function into a guided one.

Monte-Carlo loss-guided diffusion (Song et al. 2023, LGD-MC), as DGLM applies it. At each step, with
α² = ᾱ_t and σ² = 1 − α²:
  1. v̂ = denoise(z_t), x̂ and ε̂ from v̂, with gradients through the denoiser;
  2. K samples around the predicted clean latent, x̃_k = x̂ + √(σ²/α²)·ξ_k, ξ_k ~ N(0, I);
  3. map each to unit-norm embedding space, e_k = normalize(x̃_k ⊙ s + μ);
  4. per attribute i: ℓ_ik = −log p_i(y_i | e_k) (toward a label) or −log(1 − p_i(y_i | e_k)) (away);
  5. aggregate over k: "lgd" L_i = −log mean_k exp(−ℓ_ik) (LGD-MC, the default) or
     "harmonic" L_i = log mean_k exp(ℓ_ik) (the official code's choice);
  6. L = Σ_i w_i L_i and g = ∂L/∂z_t by backpropagation through the denoiser ("full", the paper's), or
     g ≈ α·∂L/∂x̂ ("fast"): the denoiser's Jacobian ∂x̂/∂z_t replaced by α·I, which is exact when the
     latents are standard Gaussian (they are z-scored) and needs no backward pass through the denoiser,
     so a guided step costs about what an unguided one does;
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
GRADIENTS = ("full", "fast")


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
    gradient: str = "full",
) -> DenoiseFn:
    """Wrap `denoise`; with scale 0 or no targets, `denoise` itself is returned (bit-identical output)."""
    if scale == 0 or not targets:
        return denoise
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; choose from {', '.join(AGGREGATES)}")
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown guidance gradient {gradient!r}; choose from {', '.join(GRADIENTS)}")

    def guidance_loss(x_hat: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        """Steps 2-5: x̂ (B, D) -> L (B,)."""
        spread = ((1 - alpha2) / alpha2).sqrt().to(x_hat.dtype)[:, None, None]  # √(σ²/α²), (B, 1, 1)
        noise = rng.randn(num_samples, x_hat.shape[1], dtype=x_hat.dtype)  # (B, K, D)
        embeddings = to_embedding(x_hat[:, None, :] + spread * noise)  # (B, K, D)
        return sum(t.weight * aggregate_losses(t.loss(embeddings), aggregate) for t in targets)

    def guided(z: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        alpha, sigma = alpha2.sqrt().to(z.dtype)[:, None], (1 - alpha2).sqrt().to(z.dtype)[:, None]
        with torch.enable_grad():
            if gradient == "full":  # 6. g = ∂L/∂z_t through the denoiser
                z = z.detach().requires_grad_(True)
                v_hat = denoise(z, alpha2)
                x_hat, _ = v_to_x_eps(z, v_hat, alpha2)
                (g,) = torch.autograd.grad(guidance_loss(x_hat, alpha2).sum(), z)
            else:  # 6. g ≈ α·∂L/∂x̂
                with torch.no_grad():
                    v_hat = denoise(z, alpha2)
                x_hat = v_to_x_eps(z, v_hat, alpha2)[0].requires_grad_(True)
                (g,) = torch.autograd.grad(guidance_loss(x_hat, alpha2).sum(), x_hat)
                g = g * alpha
        # 7. ε̂' = ε̂ + s·σ·g  <=>  v̂' = v̂ + s·σ·g / α
        return (v_hat + scale * sigma * g / alpha).detach()

    return guided
