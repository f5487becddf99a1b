"""Prompt generator: a noised continuation latent and its noise level -> k soft-prompt vectors for the decoder.

  z (B, D) --splicer--> (B, k, W);  α² (B,) -> (B, T)
  transformer (B, k, W) -> Linear -> (B, k, E), E = the decoder's embedding width.
Training noises the latent with α² = sigmoid(logit(cos²(πt/2)) + 2 ln 3) (Gaussian noise augmentation);
generation re-noises the sampled latent at a fixed α² (0.95 by default) before calling it.
"""

from dataclasses import dataclass

import torch
from torch import nn

from dglm_cli.layers import NoiseLevelEmbedding, Splicer, Transformer


@dataclass
class PromptGeneratorConfig:
    latent_dim: int = 384
    lm_dim: int = 576
    prompt_length: int = 8
    dim: int = 384
    depth: int = 4
    dim_head: int = 64
    latent_mult: int = 4
    time_dim: int | None = None
    augmentation_shift: float = 3.0  # log-SNR shift of the training noise augmentation
    inference_alpha2: float = 0.95  # re-noising level at generation time
    output_scale: float = 1.0  # soft vectors are scaled to the std of the decoder's token embeddings


class PromptGenerator(nn.Module):
    def __init__(self, config: PromptGeneratorConfig):
        super().__init__()
        self.config = config
        c = config
        time_dim = c.time_dim or c.dim // 2
        self.splicer = Splicer(c.latent_dim, c.latent_mult, max(c.prompt_length, 1), c.dim)
        self.time_embedding = NoiseLevelEmbedding(c.dim, time_dim)
        self.transformer = Transformer(c.dim, c.depth, c.dim_head, time_dim, max(c.prompt_length, 1), long_skips=False)
        self.output = nn.Linear(c.dim, c.lm_dim)

    def forward(self, z: torch.Tensor, alpha2: torch.Tensor) -> torch.Tensor:
        """(B, D), (B,) -> soft prompts (B, k, E)."""
        if self.config.prompt_length == 0:
            return z.new_zeros(z.shape[0], 0, self.config.lm_dim)
        tokens = self.transformer(self.splicer(z), self.time_embedding(alpha2))  # (B, k, W)
        return self.output(tokens) * self.config.output_scale  # (B, k, E)
