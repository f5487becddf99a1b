"""Training objectives of the two DGLM heads (paper §2.3 and §4.3).

Diffusion: v-prediction on the continuation latent given the prefix latent, log-SNR drawn from an
adaptive importance sampler, loss weighted by the asymmetric log-SNR weight, 10% prefix dropout.
Decoder: the prompt generator reads the continuation latent noised with the shifted cosine schedule
(Gaussian noise augmentation) and is trained through the decoder's continuation loss.
Steer: the latent steer reads the same noised latent and the frozen LM's cached final hidden states; its
loss, over the LM's top-K candidates, is the target's cross-entropy, or the cross-entropy against the LM's
own distribution given a hidden context (distillation), plus a KL term to the LM's own distribution.
"""

import math

import torch
from torch import nn

from dglm_cli.decoder import SoftPromptDecoder
from dglm_cli.denoiser import Denoiser
from dglm_cli.prompt_generator import PromptGenerator
from dglm_cli.schedule import CosineSchedule, diffuse, logsnr_to_alpha2, v_target
from dglm_cli.steer import LatentSteer, Teacher, candidate_losses, output_logits

WEIGHT_STD = 2.4  # scale of the asymmetric loss weight (Kingma & Gao 2023 style)


def asymmetric_weight(logsnr: torch.Tensor, std: float = WEIGHT_STD) -> torch.Tensor:
    """v-space loss weight w(γ): Cauchy-shaped for γ < 0, Gaussian-shaped for γ ≥ 0, peak 1 at γ = 0."""
    scaled = logsnr / std
    return torch.where(logsnr < 0, 1 / (1 + scaled**2), torch.exp(-0.5 * scaled**2))


class AdaptiveLogSNRSampler:
    """Draws γ from bins whose probability tracks an EMA of the weighted loss seen in them.

    100 equal bins on [−15, 15], EMA decay 0.9 (official code). `sample` returns γ and the normalised
    density p(γ), so w(γ)/p(γ)·L(γ) is an importance-sampled estimate of ∫ w(γ) E[L(γ)] dγ / 30.
    """

    def __init__(self, n_bins: int = 100, low: float = -15.0, high: float = 15.0, decay: float = 0.9):
        self.low, self.high, self.decay = low, high, decay
        self.width = (high - low) / n_bins
        self.ema = torch.ones(n_bins, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.ema / self.ema.sum()
        bins = torch.multinomial(probs, n, replacement=True, generator=generator)
        offset = torch.rand(n, generator=generator, dtype=torch.float64)
        logsnr = self.low + (bins + offset) * self.width
        density = probs[bins] / self.width * (self.high - self.low)  # relative to the uniform density
        return logsnr.float(), density.float()

    def update(self, logsnr: torch.Tensor, weighted_loss: torch.Tensor) -> None:
        bins = ((logsnr.double().cpu() - self.low) / self.width).long().clamp(0, len(self.ema) - 1)
        totals = torch.zeros_like(self.ema).index_add_(0, bins, weighted_loss.detach().double().cpu())
        counts = torch.zeros_like(self.ema).index_add_(0, bins, torch.ones_like(bins, dtype=torch.float64))
        seen = counts > 0
        self.ema[seen] = self.decay * self.ema[seen] + (1 - self.decay) * totals[seen] / counts[seen]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"ema": self.ema.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.ema = state["ema"].double().clone()


class DiffusionObjective(nn.Module):
    """Wraps the denoiser so one forward call returns the per-example loss terms (DDP-friendly)."""

    def __init__(self, denoiser: Denoiser, cfg_dropout: float = 0.1):
        super().__init__()
        self.denoiser = denoiser
        self.cfg_dropout = cfg_dropout

    def forward(self, x, context, logsnr, noise, dropout_draw):
        """x, context, noise (B, D); logsnr, dropout_draw (B,) -> unweighted losses L(γ) (B,)."""
        alpha2 = logsnr_to_alpha2(logsnr)
        z = diffuse(x, noise, alpha2)
        v_hat = self.denoiser(z, alpha2, context, drop=dropout_draw < self.cfg_dropout)
        return (v_hat.float() - v_target(x, noise, alpha2)).pow(2).mean(dim=-1)


class DecoderObjective(nn.Module):
    """Prompt generator (+ the LM when fine-tuned) through the decoder's continuation loss."""

    def __init__(self, prompt_generator: PromptGenerator, decoder: SoftPromptDecoder):
        super().__init__()
        self.prompt_generator = prompt_generator
        self.lm = decoder.model  # registered, so DDP sees its parameters when they train
        self.decoder = decoder
        self.augmentation = CosineSchedule(shift=prompt_generator.config.augmentation_shift)

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """α² = sigmoid(logit(cos²(πt/2)) + 2 ln shift) for t ~ U(0, 1)."""
        return self.augmentation.alpha2(t)

    def forward(self, x, alpha2, noise, prefix_ids, continuation_ids, bag_of_words: bool = False):
        """Summed continuation NLL (B,), token counts (B,) and, if asked, the bag-of-words loss (B,)
        at the soft positions (see SoftPromptDecoder.continuation_losses), with the latent x noised at α²."""
        soft = self.prompt_generator(diffuse(x, noise, alpha2), alpha2)  # (B, k, E)
        return self.decoder.continuation_losses(prefix_ids, soft, continuation_ids, bag_of_words)


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


class SteerObjective(nn.Module):
    """The latent steer on cached final hidden states of the frozen LM, whose output layer W it holds."""

    def __init__(self, steer: LatentSteer, output_layer: nn.Linear):
        super().__init__()
        self.steer = steer
        self.register_buffer("weight", output_layer.weight.detach().float().clone(), persistent=False)  # (V, H)
        bias = output_layer.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone(), persistent=False)
        self.augmentation = CosineSchedule(shift=steer.config.augmentation_shift)

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """α² = sigmoid(logit(cos²(πt/2)) + 2 ln shift) for t ~ U(0, 1), as the prompt generator is trained."""
        return self.augmentation.alpha2(t)

    def forward(self, hidden, z, candidates, target, teacher: Teacher | None = None, steered: bool = True):
        """hidden (N, H), z (N, D), candidates (N, K) or None, target (N,), a teacher over the candidates or None ->
        per-token (cross-entropy, KL to the base, cross-entropy against the teacher or None)."""
        delta = self.steer(hidden, z) if steered else torch.zeros_like(hidden)  # (N, H)
        if candidates is None:
            base, shift = self.vocabulary_logits(hidden, delta)
        else:
            base, shift = output_logits(torch.stack([hidden, delta]), self.weight, candidates)  # (N, K) each
            if self.bias is not None:  # the bias belongs to the base logits only
                base = base + self.bias[candidates]
        return candidate_losses(base, shift, target, teacher)

    def vocabulary_logits(self, hidden: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden, delta (N, H) -> base logits W·h + b and shift W·δ (N, V) each. The shift is taken as W·(h + δ) − W·h:
        only one product over the vocabulary carries the gradient (the cached states have none), which halves the
        backward pass's product and drops a graph of (N, V) tensors (`benchmarks/steer_softmax.py`)."""
        with torch.no_grad():
            base = output_logits(hidden, self.weight, None)  # (N, V)
        shift = output_logits(hidden + delta, self.weight, None) - base  # (N, V)
        return (base if self.bias is None else base + self.bias), shift
