"""Transformer building blocks shared by the denoiser and the prompt generator (official-code design).

Pre-norm residual blocks with RMSNorm, adaptive scale/shift from the noise level (zero-initialised),
QK-normalised attention and a SwiGLU feed-forward; optional U-ViT long skips.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """L2-normalise, times √d, times a learned gain."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gain


class NoiseLevelEmbedding(nn.Module):
    """α² (B,) -> (B, time_dim): sinusoidal features of α²·1000, then a two-layer MLP."""

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        half = dim // 2
        frequencies = torch.exp(-math.log(10_000) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

    def forward(self, alpha2: torch.Tensor) -> torch.Tensor:
        angles = (alpha2.float() * 1000)[:, None] * self.frequencies[None, :]  # (B, half)
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (B, time_dim)


class AdaptiveScaleShift(nn.Module):
    """x · (1 + scale) + shift with [scale, shift] = Linear(SiLU(time)); zero-initialised, so it starts as identity."""

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.proj = nn.Linear(time_dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(F.silu(time))[:, None, :].chunk(2, dim=-1)  # (B, 1, dim) each
        return x * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, dim: int, dim_head: int, time_dim: int):
        super().__init__()
        self.heads = dim // dim_head
        self.norm = RMSNorm(dim)
        self.modulate = AdaptiveScaleShift(dim, time_dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(dim_head)
        self.k_norm = RMSNorm(dim_head)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        h = self.modulate(self.norm(x), time)
        q, k, v = self.qkv(h).view(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 × (B, H, N, dh)
        h = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)  # (B, H, N, dh)
        return self.out(h.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        inner = int(dim * 4 * 2 / 3)
        self.norm = RMSNorm(dim)
        self.modulate = AdaptiveScaleShift(dim, time_dim)
        self.proj_in = nn.Linear(dim, 2 * inner)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(self.modulate(self.norm(x), time)).chunk(2, dim=-1)
        return self.proj_out(value * F.silu(gate))  # SwiGLU


class Transformer(nn.Module):
    """Bidirectional, time-conditioned transformer over (B, N, dim) tokens.

    With `long_skips`, the inputs of the first half of the blocks are concatenated (last in, first out)
    to the inputs of the second half and projected back to `dim` (U-ViT).
    """

    def __init__(self, dim: int, depth: int, dim_head: int, time_dim: int, max_tokens: int, long_skips: bool):
        super().__init__()
        self.position = nn.Parameter(torch.randn(max_tokens, dim))
        self.position_scale = dim**-0.5
        self.attention = nn.ModuleList(Attention(dim, dim_head, time_dim) for _ in range(depth))
        self.feed_forward = nn.ModuleList(FeedForward(dim, time_dim) for _ in range(depth))
        n_skips = depth // 2 if long_skips else 0
        self.skip_proj = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(n_skips))
        self.final_norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        x = x + self.position[: x.shape[1]] * self.position_scale
        depth, n_skips = len(self.attention), len(self.skip_proj)
        stack = []
        for i, (attention, feed_forward) in enumerate(zip(self.attention, self.feed_forward)):
            if i < n_skips:
                stack.append(x)
            elif i >= depth - n_skips:
                x = self.skip_proj[i - (depth - n_skips)](torch.cat([x, stack.pop()], dim=-1))  # (B, N, 2·dim) -> (B, N, dim)
            x = x + attention(x, time)
            x = x + feed_forward(x, time)
        return self.final_norm(x)


class Splicer(nn.Module):
    """A vector (B, D) -> tokens (B, N, out_dim): Linear D -> D·mult, carve into N pieces, Linear per piece."""

    def __init__(self, in_dim: int, mult: int, tokens: int, out_dim: int):
        super().__init__()
        if (in_dim * mult) % tokens:
            raise ValueError(f"in_dim·mult = {in_dim * mult} is not divisible by {tokens} tokens")
        self.tokens = tokens
        self.expand = nn.Linear(in_dim, in_dim * mult)
        self.project = nn.Linear(in_dim * mult // tokens, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = self.expand(x).view(x.shape[0], self.tokens, -1)  # (B, N, D·mult/N)
        return self.project(pieces)  # (B, N, out_dim)
