"""Soft-prompted decoder over any Hugging Face causal LM.

The LM is fed `inputs_embeds` = [prefix tokens][k soft vectors][continuation tokens]; the training loss
covers the continuation tokens only. Generation runs its own sampling loop (KV cache, top-p,
temperature, repetition penalty) so that each row draws its tokens from its own record's generator.
"""

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dglm_cli.rng import RecordRNG

IGNORE_INDEX = -100


@dataclass
class DecoderConfig:
    reference: dict  # where the causal LM comes from (see dglm_cli.assets)
    embedding_dim: int
    fine_tuned: bool = False  # weights travel inside the bundle (decoder/lm/)
    adapter_rank: int = 0  # > 0: low-rank adapters in decoder/adapter.safetensors are merged at load


@dataclass
class DecoderBatch:
    """Assembled model inputs: embeds (B, L, E), mask and positions (B, L), labels (B, L) or None."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None


class SoftPromptDecoder:
    def __init__(self, model, tokenizer, config: DecoderConfig):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        eos = {tokenizer.eos_token_id, *_as_list(getattr(model.generation_config, "eos_token_id", None))}
        self.stop_ids = sorted(i for i in eos if i is not None)
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.stop_ids[0]
        # transformers 5 renamed `past_key_values` to `cache` (argument and output field)
        parameters = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in parameters else "past_key_values"
        self._keeps_logits = "logits_to_keep" in parameters

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def max_positions(self) -> int | None:
        """The most positions (prefix + soft prompt + continuation) the LM takes, from its config; None if it says none."""
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            if isinstance(limit := getattr(config, name, None), int) and limit > 0:
                return limit
        return None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, as the training corpus is tokenised."""
        return [self.tokenizer(text, add_special_tokens=False).input_ids for text in texts]

    def assemble(
        self,
        prefix_ids: list[list[int]],
        soft: torch.Tensor,
        continuation_ids: list[list[int]] | None = None,
        left_pad: bool = False,
    ) -> DecoderBatch:
        """Lay out [prefix][soft (B, k, E)][continuation] per row, padded to the longest row."""
        k = soft.shape[1]
        continuation_ids = continuation_ids or [[] for _ in prefix_ids]
        prefix_ids = [ids if ids or k or cont else [self.start_id] for ids, cont in zip(prefix_ids, continuation_ids)]
        lengths = [len(p) + k + len(c) for p, c in zip(prefix_ids, continuation_ids)]
        width = max(lengths)
        batch, embed = len(prefix_ids), self.model.get_input_embeddings()
        ids = torch.zeros(batch, width, dtype=torch.long)
        is_soft = torch.zeros(batch, width, dtype=torch.bool)
        mask = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        for row, (prefix, cont, length) in enumerate(zip(prefix_ids, continuation_ids, lengths)):
            start = width - length if left_pad else 0
            ids[row, start : start + len(prefix)] = torch.tensor(prefix, dtype=torch.long)
            is_soft[row, start + len(prefix) : start + len(prefix) + k] = True
            cont_start = start + len(prefix) + k
            ids[row, cont_start : cont_start + len(cont)] = torch.tensor(cont, dtype=torch.long)
            labels[row, cont_start : cont_start + len(cont)] = torch.tensor(cont, dtype=torch.long)
            mask[row, start : start + length] = 1
        device = self.device
        embeds = embed(ids.to(device))  # (B, L, E)
        if k:
            embeds = embeds.masked_scatter(is_soft.to(device)[..., None], soft.to(embeds.dtype))
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return DecoderBatch(embeds, mask.to(device), positions.to(device), labels.to(device))

    def logits(self, batch: DecoderBatch, last: int = 0) -> torch.Tensor:
        """(B, L, V) next-token logits for an assembled batch; (B, last, V) for its last positions only."""
        kept = {"logits_to_keep": last} if self._keeps_logits else {}
        logits = self.model(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids, **kept
        ).logits
        return logits[:, -last:] if last else logits

    def continuation_nll(self, prefix_ids, soft, continuation_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed negative log-likelihood of each row's continuation tokens (B,) and their counts (B,)."""
        nll, counts, _ = self.continuation_losses(prefix_ids, soft, continuation_ids)
        return nll, counts

    def continuation_losses(self, prefix_ids, soft, continuation_ids, bag_of_words: bool = False):
        """(summed continuation NLL (B,), token counts (B,), bag-of-words loss (B,) or None).

        Rows are left-padded so every continuation ends at the last position; the LM then projects only
        the last C + 1 hidden states to the vocabulary (C = longest continuation), not all L of them.
        The bag-of-words loss asks the LM's next-token distributions at the k soft positions, as an equal
        mixture, to cover the continuation's tokens: −mean_i log (1/k Σ_j p_j(token_i)).
        """
        batch = self.assemble(prefix_ids, soft, continuation_ids, left_pad=True)
        width, k = batch.labels.shape[1], soft.shape[1]
        kept = min(max(len(c) for c in continuation_ids) + 1, width)
        logits = self.logits(batch, kept + k if bag_of_words else kept)  # (B, kept [+ k], V)
        labels = batch.labels[:, width - kept + 1 :]  # (B, C): token i is predicted at position i - 1
        losses = F.cross_entropy(logits[:, -kept:-1].transpose(1, 2).float(), labels, reduction="none")  # (B, C)
        counts = (labels != IGNORE_INDEX).sum(dim=1)
        bow = self._bag_of_words_loss(logits, batch.labels, continuation_ids, k) if bag_of_words and k else None
        return losses.sum(dim=1), counts, bow

    @torch.no_grad()
    def continuation_states(self, prefix_ids, soft, continuation_ids, candidates: int) -> "ContinuationStates":
        """The LM's final hidden states where it predicts each continuation token, with its `candidates`
        most probable next tokens there (0: none) and the token it had to predict."""
        logits, hidden, targets, lengths = self._at_continuation(prefix_ids, soft, continuation_ids)
        top = logits.topk(candidates, dim=-1).indices if candidates else None  # (N, K)
        return ContinuationStates(hidden.float(), top, targets, lengths)

    @torch.no_grad()
    def continuation_log_probs(self, prefix_ids, continuation_ids, tokens: torch.Tensor) -> torch.Tensor:
        """log p(token | prefix, continuation so far) for `tokens` (N, K) at each of the N continuation positions -> (N, K)."""
        empty = torch.zeros(len(prefix_ids), 0, self.config.embedding_dim, device=self.device)
        logits, *_ = self._at_continuation(prefix_ids, empty, continuation_ids)
        return logits.float().log_softmax(dim=-1).gather(1, tokens.to(logits.device))

    def _at_continuation(self, prefix_ids, soft, continuation_ids) -> tuple[torch.Tensor, ...]:
        """Next-token logits (N, V) and final hidden states (N, H) at the N positions that predict a continuation
        token, those tokens (N,), and each row's count (B,); rows left-padded as in `continuation_losses`, and
        only the last C + 1 positions are projected."""
        batch = self.assemble(prefix_ids, soft, continuation_ids, left_pad=True)
        width = batch.labels.shape[1]
        kept = min(max(len(c) for c in continuation_ids) + 1, width)
        with self.final_hidden_states() as hidden:
            logits = self.logits(batch, kept)[:, :-1]  # (B, C, V): position i predicts token i + 1
        labels = batch.labels[:, width - kept + 1 :]  # (B, C)
        valid = labels != IGNORE_INDEX
        return logits[valid], hidden[0][:, -kept:-1][valid], labels[valid], valid.sum(dim=1)

    @contextmanager
    def final_hidden_states(self) -> Iterator[list[torch.Tensor]]:
        """A one-element list holding, after each forward call, the LM's final hidden states (B, T, H):
        the input of its output layer (after the last norm, before the vocabulary projection)."""
        seen: list[torch.Tensor] = []

        def record(module, args, output) -> None:
            seen[:] = [args[0]]

        hook = self.model.get_output_embeddings().register_forward_hook(record)
        try:
            yield seen
        finally:
            hook.remove()

    @contextmanager
    def _shifted_output_input(self, shift: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """While open, the output layer reads shift(h) (B, H) in place of the final hidden state h at the last position."""

        def move_last(module, args):
            hidden = args[0]  # (B, T, H)
            return (torch.cat([hidden[:, :-1], shift(hidden[:, -1])[:, None]], dim=1), *args[1:])

        hook = self.model.get_output_embeddings().register_forward_pre_hook(move_last)
        try:
            yield
        finally:
            hook.remove()

    @staticmethod
    def _bag_of_words_loss(logits, labels, continuation_ids, k: int) -> torch.Tensor:
        rows = torch.arange(len(continuation_ids), device=logits.device)
        soft_end = logits.shape[1] - 1 - torch.tensor([len(c) for c in continuation_ids], device=logits.device)  # last soft position
        positions = soft_end[:, None] - torch.arange(k - 1, -1, -1, device=logits.device)  # (B, k)
        log_mix = torch.logsumexp(logits[rows[:, None], positions].float().log_softmax(dim=-1), dim=1) - math.log(k)  # (B, V)
        labels = labels[:, -logits.shape[1] + 1 :]  # (B, C'): the labels of the kept positions
        mask = labels != IGNORE_INDEX
        picked = log_mix.gather(1, labels.clamp(min=0))  # (B, C'), padding -> token 0, masked below
        return -(picked * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        prefixes: list[str],
        soft: torch.Tensor,
        rng: RecordRNG,
        max_new_tokens: int = 32,
        top_p: float = 0.9,
        temperature: float = 1.0,
        repetition_penalty: float = 1.0,
        reweight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        cfg: float = 1.0,
        unconditional_prefixes: list[str] | None = None,
        steer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> list[str]:
        """Sample one continuation per row; `soft` is (B, k, E), k may be 0.

        `cfg` ≠ 1 is classifier-free guidance on the soft prompt: each step's next-token log-probabilities
        are log p(·|prefix) + cfg · (log p(·|prefix, soft) − log p(·|prefix)), the unconditional term from
        the same LM without the soft prompt, run as a second half of the batch (twice the decode work).
        `unconditional_prefixes` replaces the prefixes in that term (guidance on a hidden context: the
        rows' prefixes hold it, these do not); it makes `cfg` apply with k = 0 too.
        `reweight(generated (B, T), logits (B, V)) -> logits` may change each step's next-token scores
        before sampling (weighted decoding baselines use it). `steer(final hidden states (B, H), logits (B, V))
        -> logits` acts on the last position before them (dglm_cli.steer.BoundSteer); the KV cache is unchanged.
        A steer that `moves_hidden` (over the whole vocabulary) instead moves that position's input to the output
        layer by `steer.shift(hidden (B, H))`, so the LM's own vocabulary product carries it (not when `cfg`
        guides: the steer then acts on the guided logits).
        """
        guided = cfg != 1.0 and (soft.shape[1] > 0 or unconditional_prefixes is not None)
        prefix_ids = self.tokenize(prefixes)
        batch = self.assemble(prefix_ids, soft, left_pad=True)
        if guided:  # rows B..2B-1: the same (or the unconditional) prefixes without the soft prompt
            plain_ids = prefix_ids if unconditional_prefixes is None else self.tokenize(unconditional_prefixes)
            batch = _stack_left_padded(batch, self.assemble(plain_ids, soft[:, :0], left_pad=True))
        if steer is not None and getattr(steer, "moves_hidden", False) and not guided:
            with self._shifted_output_input(steer.shift):
                return self._sample(batch, len(prefixes), max_new_tokens, rng, top_p, temperature, repetition_penalty, reweight, 1.0, None)
        with self.final_hidden_states() if steer is not None else nullcontext() as hidden:
            return self._sample(batch, len(prefixes), max_new_tokens, rng, top_p, temperature, repetition_penalty, reweight, cfg if guided else 1.0,
                                steer and (lambda logits: steer(hidden[0][: len(prefixes), -1].float(), logits)))

    def _sample(self, batch: DecoderBatch, rows: int, max_new_tokens, rng, top_p, temperature, repetition_penalty, reweight, cfg, steer) -> list[str]:
        """The KV-cached sampling loop of `generate`; `batch` holds 2·rows rows when cfg ≠ 1."""
        guided = cfg != 1.0
        out = self.model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=True,
            **({"logits_to_keep": 1} if self._keeps_logits else {}),  # the prefill needs the last position only
        )
        mask, positions = batch.attention_mask, batch.position_ids[:, -1:]
        generated = torch.empty(rows, 0, dtype=torch.long, device=self.device)
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
        stop_ids = torch.tensor(self.stop_ids, device=self.device)
        for _ in range(max_new_tokens):
            logits = out.logits[:, -1].float()  # (B, V), or (2B, V) when guided
            if guided:
                conditional, unconditional = logits.log_softmax(dim=-1).chunk(2)
                logits = unconditional + cfg * (conditional - unconditional)  # (B, V)
            if steer is not None:
                logits = steer(logits)
            logits = penalize_repetition(logits, generated, repetition_penalty)
            if reweight is not None:
                logits = reweight(generated, logits)
            tokens = sample_top_p(logits, rng, top_p, temperature)  # (B,)
            tokens = torch.where(finished, stop_ids[0], tokens)
            generated = torch.cat([generated, tokens[:, None]], dim=1)
            finished |= torch.isin(tokens, stop_ids)
            if finished.all():
                break
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            positions = positions + 1
            out = self.model(
                input_ids=(torch.cat([tokens, tokens]) if guided else tokens)[:, None],
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self._cache_name: getattr(out, self._cache_name)},
            )
        return [self._decode(row) for row in generated.tolist()]

    def _decode(self, ids: list[int]) -> str:
        stops = [i for i, token in enumerate(ids) if token in self.stop_ids]
        return self.tokenizer.decode(ids[: stops[0]] if stops else ids, skip_special_tokens=True)


@dataclass
class ContinuationStates:
    """N continuation tokens of a batch, row-major: final hidden states (N, H), the LM's top-K next tokens
    there (N, K) or None, the tokens to predict (N,), and how many tokens each row has (B,)."""

    hidden: torch.Tensor
    candidates: torch.Tensor | None
    targets: torch.Tensor
    lengths: torch.Tensor


def _stack_left_padded(first: DecoderBatch, second: DecoderBatch) -> DecoderBatch:
    """Rows of `first` then `second`, each left-padded to the wider one (labels dropped)."""
    width = max(first.attention_mask.shape[1], second.attention_mask.shape[1])

    def pad(batch: DecoderBatch) -> DecoderBatch:
        extra = width - batch.attention_mask.shape[1]
        return DecoderBatch(
            F.pad(batch.inputs_embeds, (0, 0, extra, 0)),  # (B, width, E)
            F.pad(batch.attention_mask, (extra, 0)),
            F.pad(batch.position_ids, (extra, 0)),
            None,
        )

    first, second = pad(first), pad(second)
    return DecoderBatch(
        torch.cat([first.inputs_embeds, second.inputs_embeds]),  # (2B, width, E)
        torch.cat([first.attention_mask, second.attention_mask]),
        torch.cat([first.position_ids, second.position_ids]),
        None,
    )


def penalize_repetition(logits: torch.Tensor, generated: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on tokens already generated: positive logits / p, negative logits · p."""
    if penalty == 1.0 or generated.shape[1] == 0:
        return logits
    seen = torch.gather(logits, 1, generated)
    return logits.scatter(1, generated, torch.where(seen > 0, seen / penalty, seen * penalty))


def sample_top_p(logits: torch.Tensor, rng: RecordRNG, top_p: float, temperature: float, candidates: int = 512) -> torch.Tensor:
    """Nucleus sampling, one uniform draw per row from its own generator; temperature 0 is greedy.

    A row whose `candidates` most probable tokens hold at least `top_p` of the mass draws from them
    alone (its nucleus lies inside them: the same draw as with a full sort); only the other rows sort
    the whole vocabulary.
    """
    uniform = rng.rand(1).squeeze(1)  # (B,), drawn even when greedy to keep streams aligned
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits / temperature, dim=-1)
    if top_p >= 1:  # the nucleus is the whole vocabulary
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
        return _draw_from_nucleus(sorted_probs, order, uniform, top_p)
    top_probs, top_order = probs.topk(min(candidates, probs.shape[-1]), dim=-1)  # (B, C), descending
    wide = top_probs.sum(dim=-1) < top_p + 1e-4
    tokens = _draw_from_nucleus(top_probs, top_order, uniform, top_p)
    if wide.any():
        sorted_probs, order = probs[wide].sort(dim=-1, descending=True)  # (W, V)
        tokens[wide] = _draw_from_nucleus(sorted_probs, order, uniform[wide], top_p)
    return tokens


def _draw_from_nucleus(sorted_probs: torch.Tensor, order: torch.Tensor, uniform: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, N) probabilities in descending order and their token ids -> one token per row (B,)."""
    cumulative = sorted_probs.cumsum(dim=-1)
    sorted_probs = sorted_probs.masked_fill(cumulative - sorted_probs >= top_p, 0.0)  # keep the nucleus
    cumulative = sorted_probs.cumsum(dim=-1)
    threshold = uniform[:, None] * cumulative[:, -1:]
    choice = torch.searchsorted(cumulative, threshold).clamp(max=order.shape[-1] - 1)  # (B, 1)
    return order.gather(1, choice).squeeze(1)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
