"""Sentence encoder (any sentence-transformers model) and the latent normalisation around it.

The diffusion latent of a text is its L2-normalised embedding e, z-scored per dimension:
x = (e − μ) / s. The way back is e = normalize(x ⊙ s + μ). The per-dimension std has a floor: some
encoders have dimensions that are constant on ordinary text (all-MiniLM-L6-v2 has two, std ≈ 1e-33),
and dividing by such a std turns any out-of-sample embedding into enormous inputs.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

STD_FLOOR_FRACTION = 0.05  # floor = 5% of the median per-dimension std


@dataclass
class EncoderConfig:
    reference: dict  # where the sentence-transformers model comes from (see dglm_cli.assets)
    embedding_dim: int
    max_seq_length: int | None = None


class LatentStats(torch.nn.Module):
    """Per-dimension mean μ and floored std s of unit-norm embeddings."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    @classmethod
    def fit(cls, embeddings: torch.Tensor) -> "LatentStats":
        """From (n, D) unit-norm embeddings."""
        embeddings = embeddings.double()
        std = embeddings.std(dim=0)
        return cls(embeddings.mean(dim=0), std.clamp(min=STD_FLOOR_FRACTION * std.median().item()))

    def to_latent(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (embeddings - self.mean) / self.std

    def to_embedding(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (..., D) -> unit-norm embeddings (..., D)."""
        return F.normalize(latents * self.std + self.mean, dim=-1)


class SentenceEncoder:
    """Wraps a loaded SentenceTransformer; `encode` returns unit-norm float32 embeddings (B, D)."""

    def __init__(self, model, config: EncoderConfig):
        self.model = model
        self.config = config
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None  # several classifiers score one batch

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """(B, D) unit-norm embeddings; the same texts twice in a row are encoded once."""
        key = tuple(texts)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        embeddings = self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )
        embeddings = embeddings.float().reshape(len(texts), -1)
        self._last = (key, embeddings)
        return embeddings
