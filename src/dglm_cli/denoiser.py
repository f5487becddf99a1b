"""The DGLM diffusion network ("ScoreNet"): predicts v for a noisy continuation latent given the prefix latent.

Shapes (paper scale in brackets): latent D [768], N latent tokens [32], width W [768].
  z_t (B, D) --splicer--> (B, N, W/2) ─┐
  c   (B, D) --splicer--> (B, N, W/2) ─┴─ concat feature-wise -> Linear -> (B, N, W)
  α²  (B,)   --noise-level embedding--> (B, T)
  transformer (B, N, W) -> per-token Linear -> flatten (B, D·mult) -> Linear -> v̂ (B, D)
The prefix is conditioned by concatenation, not cross-attention; a learned null prefix embedding is used
for prefix dropout in training and as the unconditional input of classifier-free guidance.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dglm_cli.layers import NoiseLevelEmbedding, Splicer, Transformer

# A denoise function maps (z_t (B, D), α² (B,)) to a v-prediction (B, D). Samplers take one;
# classifier-free guidance and classifier guidance wrap one and return another.
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DenoiserConfig:
    latent_dim: int = 384
    dim: int = 384
    depth: int = 6
    dim_head: int = 64
    num_tokens: int = 16
    latent_mult: int = 8  # latent splicer expansion: D -> D·8, carved into N tokens
    context_mult: int = 4  # prefix splicer expansion
    time_dim: int | None = None  # default: dim / 2
    long_skips: bool = True


class Denoiser(nn.Module):
    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        c = config
        time_dim = c.time_dim or c.dim // 2
        self.latent_splicer = Splicer(c.latent_dim, c.latent_mult, c.num_tokens, c.dim // 2)
        self.context_splicer = Splicer(c.latent_dim, c.context_mult, c.num_tokens, c.dim // 2)
        self.input_proj = nn.Linear(c.dim, c.dim)
        self.null_context = nn.Parameter(torch.randn(c.latent_dim))
        self.time_embedding = NoiseLevelEmbedding(c.dim, time_dim)
        self.transformer = Transformer(c.dim, c.depth, c.dim_head, time_dim, c.num_tokens, c.long_skips)
        self.output_tokens = nn.Linear(c.dim, c.latent_dim * c.latent_mult // c.num_tokens)
        self.output_proj = nn.Linear(c.latent_dim * c.latent_mult, c.latent_dim)

    def forward(
        self, z: torch.Tensor, alpha2: torch.Tensor, context: torch.Tensor | None, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v̂ (B, D) from z_t (B, D), α² (B,) and the z-scored prefix latent (B, D).

        The null prefix embedding replaces `context` when it is None, and in the rows where `drop` (B,)
        is true (prefix dropout for classifier-free guidance).
        """
        null = self.null_context.expand_as(z)
        if context is None:
            context = null
        elif drop is not None:
            context = torch.where(drop[:, None], null, context)
        tokens = torch.cat([self.latent_splicer(z), self.context_splicer(context)], dim=-1)  # (B, N, W)
        tokens = self.transformer(self.input_proj(tokens), self.time_embedding(alpha2))  # (B, N, W)
        return self.output_proj(self.output_tokens(tokens).flatten(1))  # (B, N, D·mult/N) -> (B, D)

    def denoise_fn(self, context: torch.Tensor, cfg_scale: float = 1.0) -> DenoiseFn:
        """Bind the prefix latents; with cfg_scale w ≠ 1, v̂ = w·v̂(z, c) + (1 − w)·v̂(z, ∅)."""
        if cfg_scale == 1.0:
            return lambda z, alpha2: self(z, alpha2, context)

        def guided(z: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
            drop = torch.arange(2 * len(z), device=z.device) >= len(z)  # second half: null prefix
            both = self(torch.cat([z, z]), torch.cat([alpha2, alpha2]), torch.cat([context, context]), drop)  # (2B, D)
            conditional, unconditional = both.chunk(2)  # (B, D) each
            return cfg_scale * conditional + (1 - cfg_scale) * unconditional

        return guided
