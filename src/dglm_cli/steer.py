"""Latent steer: a small head on the decoder's final hidden state, conditioned on the continuation latent.

Not in the DGLM paper (LM-Steer and PPLM's bag-of-words are of the same family); it carries the latent into
the text at the LM's output, where the soft prompt carries it at the input:

  h (…, H)  the LM's final hidden state at one position (after its last norm, before the vocabulary projection W)
  z (B, D)  the re-noised continuation latent the prompt generator reads
  δ = U·((A·h) ⊙ g(z)) + c(z)                 A: H→R, g: D→M→R (SiLU MLP), U: R→H, c: D→H; U and c start at 0
  logits = W·(h + s·δ) = W·h + s·W·δ          W is linear, so the strength s scales a shift of the logits

The shift acts on the base LM's K most probable tokens only (the tokens it is trained to rank), and at
generation by default only on those of them inside the base LM's top-p nucleus (the tokens plain sampling
could draw); it is renormalised so that those tokens keep the base LM's total probability: the steer re-ranks
them and the rest of the vocabulary keeps its base probability. Training (dglm_cli.training.SteerTrainer) reads cached
states of the frozen LM (dglm_cli.lm_states), so it never backpropagates through the LM.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SteerConfig:
    latent_dim: int = 384  # D
    hidden_dim: int = 576  # H, the decoder's final hidden width
    latent_width: int = 512  # M, the hidden layer of g
    rank: int = 256  # R, the width of the (A·h) ⊙ g(z) interaction
    candidates: int = 64  # K, the base LM's most probable tokens the steer re-ranks (0: the whole vocabulary)
    strength: float = 1.0  # s at generation unless --steer says otherwise
    soft_prompt: bool = False  # trained on states taken with the bundle's soft prompt in place
    nucleus: bool = True  # at generation, re-rank only the candidates inside the base LM's top-p nucleus
    augmentation_shift: float = 3.0  # log-SNR shift of the noise augmentation of z (as the prompt generator's)
    guidance_scale: float | None = None  # the classifier-guidance scale generation uses with this steer unless --guidance is given


class LatentSteer(nn.Module):
    def __init__(self, config: SteerConfig):
        super().__init__()
        self.config = config
        c = config
        self.hidden_in = nn.Linear(c.hidden_dim, c.rank, bias=False)  # A
        self.latent_in = nn.Sequential(nn.Linear(c.latent_dim, c.latent_width), nn.SiLU(), nn.Linear(c.latent_width, c.rank))  # g
        self.out = nn.Linear(c.rank, c.hidden_dim, bias=False)  # U
        self.latent_shift = nn.Linear(c.latent_dim, c.hidden_dim)  # c
        for layer in (self.out, self.latent_shift):  # δ = 0 at initialisation: the untrained steer is the plain LM
            nn.init.zeros_(layer.weight)
        nn.init.zeros_(self.latent_shift.bias)

    def forward(self, hidden: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """hidden (N, H) and the latent of each row z (N, D) -> δ (N, H)."""
        return self.out(self.hidden_in(hidden) * self.latent_in(z)) + self.latent_shift(z)


def output_logits(hidden: torch.Tensor, weight: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
    """W·hidden (no bias) on each row's candidates (N, K) token ids, or on the whole vocabulary when None.

    hidden (..., N, H), W (V, H) -> (..., N, K), or (..., N, V); leading axes share the candidates.
    """
    if candidates is None:
        return hidden @ weight.T
    return torch.einsum("nkh,...nh->...nk", weight[candidates], hidden)


def steered_candidates(base: torch.Tensor, shift: torch.Tensor, strength: float, inside: torch.Tensor | None = None) -> torch.Tensor:
    """Candidate logits base + s·shift (N, K), renormalised to the total probability the base gives them;
    with a mask `inside` (N, K), only those candidates are steered (and renormalised), the others keep base."""
    if inside is None:
        steered = base + strength * shift
        return steered - steered.logsumexp(dim=-1, keepdim=True) + base.logsumexp(dim=-1, keepdim=True)
    steered = (base + strength * shift).masked_fill(~inside, float("-inf"))
    mass = base.masked_fill(~inside, float("-inf")).logsumexp(dim=-1, keepdim=True)
    return torch.where(inside, steered - steered.logsumexp(dim=-1, keepdim=True) + mass, base)


def nucleus_of(logits: torch.Tensor, candidates: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which of each row's candidates (N, K), sorted by logit, lie in the top-p nucleus of softmax(logits) (N, V):
    those whose more probable predecessors hold less than top_p (the first always does)."""
    probs = logits.softmax(dim=-1).gather(1, candidates)  # (N, K)
    return probs.cumsum(dim=-1) - probs < top_p


class BoundSteer:
    """The steer with each row's latent and a strength, as the decoder's sampling loop calls it:
    (final hidden states (B, H), next-token logits (B, V)) -> steered logits (B, V). `top_p` is the sampler's:
    a steer with `nucleus` set re-ranks only the candidates inside the base distribution's top-p nucleus."""

    def __init__(self, steer: LatentSteer, output_layer: nn.Linear, z: torch.Tensor, strength: float, top_p: float = 1.0):
        self.steer, self.z, self.strength = steer, z, strength
        self.top_p = top_p if steer.config.nucleus else 1.0
        self.weight = output_layer.weight  # W; its bias, if any, is in the base logits already

    @property
    def moves_hidden(self) -> bool:
        """A steer over the whole vocabulary is W·(h + s·δ): the decoder can move the output layer's input by
        `shift` rather than add a second vocabulary product to the logits."""
        return not self.steer.config.candidates

    def shift(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states (B, H) -> h + s·δ (B, H)."""
        return hidden + self.strength * self.steer(hidden.to(self.weight.dtype), self.z).to(hidden.dtype)

    def __call__(self, hidden: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        delta = self.steer(hidden.to(self.weight.dtype), self.z)  # (B, H)
        if not self.steer.config.candidates:  # the whole vocabulary
            return logits + self.strength * output_logits(delta, self.weight, None).to(logits.dtype)
        candidates = logits.topk(self.steer.config.candidates, dim=-1).indices  # (B, K), most probable first
        shift = output_logits(delta, self.weight, candidates).to(logits.dtype)  # (B, K): W[K]·δ, no bias
        inside = nucleus_of(logits, candidates, self.top_p) if self.top_p < 1 else None  # (B, K)
        return logits.scatter(1, candidates, steered_candidates(logits.gather(1, candidates), shift, self.strength, inside))


@dataclass
class Teacher:
    """The distribution a steer's loss asks for at each token, over its candidates: the LM given a hidden context
    (log p_t), amplified like classifier-free guidance against the base LM (log p) and, with a contrast, pushed
    away from the LM given a contrasting context (log p_c), as classifier-free guidance with a negative prompt:

      log q = log p + g·(log p_t − log p) + g_c·(log p_t − log p_c)     (renormalised)
    """

    log_probs: torch.Tensor  # (N, K) log p_t of the candidates
    cfg: float = 1.0  # g
    contrast: torch.Tensor | None = None  # (N, K) log p_c of the candidates
    contrast_cfg: float = 0.0  # g_c

    def distribution(self, reference: torch.Tensor) -> torch.Tensor:
        """q (N, K) from the base LM's log-probabilities of the candidates (N, K)."""
        teacher = self.log_probs.log_softmax(dim=-1)
        logits = reference + self.cfg * (teacher - reference)
        if self.contrast is not None and self.contrast_cfg:
            logits = logits + self.contrast_cfg * (teacher - self.contrast.log_softmax(dim=-1))
        return logits.softmax(dim=-1)


def candidate_losses(base: torch.Tensor, shift: torch.Tensor, target: torch.Tensor,
                     teacher: Teacher | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token losses over the candidates at strength 1: the target's cross-entropy, KL(steered ‖ base), and
    the cross-entropy against the teacher's distribution q (None without a teacher).

    base, shift (N, K), or (N, V) over the whole vocabulary; target (N,) the target's index among the
    candidates, −1 where it is not one of them (no cross-entropy there: the steer never ranks it at
    generation).
    """
    steered = (base + shift).log_softmax(dim=-1)
    reference = base.log_softmax(dim=-1)
    kl = (steered.exp() * (steered - reference)).sum(dim=-1)  # (N,)
    ce = -steered.gather(1, target.clamp(min=0)[:, None]).squeeze(1)  # (N,)
    if teacher is None:
        return ce.masked_fill(target < 0, 0.0), kl, None
    return ce.masked_fill(target < 0, 0.0), kl, -(teacher.distribution(reference) * steered).sum(dim=-1)
