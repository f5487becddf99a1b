"""Conditional perplexity of a continuation given its prompt under a fixed causal LM (see dglm_cli.scoring)."""

import hashlib
import math
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

from dglm_cli import assets
from dglm_cli.decoder import IGNORE_INDEX
from dglm_cli.errors import AssetError, BundleError
from dglm_cli.files import sha256_file
from dglm_cli.loaders import load_lm

DEFAULT_PPL_MODEL = assets.DEFAULT_DECODER


def joint_tokens(tokenizer, prompt: str, text: str) -> tuple[list[int], int]:
    """Ids of `prompt + text` tokenised as one string, and the index of its first continuation token.

    A token counts as continuation when it covers any character of `text`, so a token merged across
    the boundary belongs to the continuation.
    """
    full = prompt + text
    if tokenizer.is_fast:
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        first = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
        return ids, first
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    first = next((i for i, (a, b) in enumerate(zip(ids, prompt_ids)) if a != b), min(len(ids), len(prompt_ids)))
    return ids, first


class PerplexityScorer:
    name = "perplexity"

    def __init__(self, model, tokenizer, reference: dict, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.reference = reference
        self.batch_size = batch_size
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        config = model.config
        self.max_length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)

    def info(self) -> dict:
        name_or_path = str(getattr(self.model.config, "_name_or_path", ""))
        return {
            "name": self.name,
            "model": assets.describe(self.reference),
            "revision": getattr(self.model.config, "_commit_hash", None),
            "weights_sha256": weights_fingerprint(name_or_path),
            "transformers": metadata.version("transformers"),
            "settings": {
                "definition": "exp(mean NLL of continuation tokens | [BOS] + prompt), joint tokenisation",
                "start_token_id": self.start_id,
                "max_length": self.max_length,
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                "batch_size": self.batch_size,
            },
        }

    def sequence(self, prompt: str, text: str) -> tuple[list[int], int]:
        """[start] + joint tokens, cut to the context from the left; and the first scored position."""
        ids, first = joint_tokens(self.tokenizer, prompt, text)
        ids, first = [self.start_id, *ids], first + 1
        cut = max(0, len(ids) - self.max_length)
        return ids[cut:], max(first - cut, 1)

    @torch.no_grad()
    def score(self, prompts: list[str], texts: list[str]) -> list[dict | None]:
        """{"perplexity", "tokens"} per pair; None for a continuation with no tokens."""
        sequences = [self.sequence(p, t) for p, t in zip(prompts, texts)]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))  # less padding
        results: list[dict | None] = [None] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            sums, counts = self._nll([sequences[i] for i in chunk])
            for i, total, count in zip(chunk, sums.tolist(), counts.tolist()):
                if count:
                    results[i] = {"perplexity": math.exp(total / count), "tokens": count}
        return results

    def _nll(self, sequences: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL of the scored tokens (B,) and their counts (B,) for right-padded sequences."""
        width = max(len(ids) for ids, _ in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, (seq, first) in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, first : len(seq)] = torch.tensor(seq[first:], dtype=torch.long)
        device = self.model.device
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, L, V)
        targets = labels[:, 1:].to(device)  # token i is predicted at position i - 1
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none")  # (B, L-1)
        return nll.sum(dim=1).cpu(), (targets != IGNORE_INDEX).sum(dim=1).cpu()


def ppl_reference(value: str | None) -> dict:
    """--ppl-model: a local directory, else a Hub id; nothing means the default decoder."""
    if value is None:
        return DEFAULT_PPL_MODEL
    return assets.parse_reference(value, kinds=("path", "hub"), what="--ppl-model", bare="hub")


def load_perplexity_scorer(reference: dict, device, batch_size: int = 16) -> PerplexityScorer:
    try:
        model, tokenizer = load_lm(reference, None, device)
    except (AssetError, BundleError) as error:
        raise AssetError(f"cannot load the perplexity model: {error}") from None
    return PerplexityScorer(model, tokenizer, reference, batch_size)


def weights_fingerprint(directory: str) -> str | None:
    """sha256 over the weight files of a local model directory (None for anything else)."""
    path = Path(directory)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()
