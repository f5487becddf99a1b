"""Training corpora: documents -> (prefix, continuation) token splits -> cached encoder embeddings.

1. Documents come from a text file (one per line), JSONL with a `text` field, or stdin. A JSONL line
   with `prefix` and `continuation` fields instead is an explicit pair, kept as it is split; its optional
   `context` is text the continuation was written after but that the pair hides (a teacher's hint: the
   latent steer can learn the LM's distribution given `context + " " + prefix`).
2. Each document is tokenised with the decoder's tokenizer and cut into chunks of at most `max_tokens`
   (a trailing piece is kept if it has at least `min_tokens`).
3. Each chunk of n tokens is split at k = round(u·(n − 1)), u ~ U(0, 1) (the paper's split): the
   prefix has 0…n−1 tokens (possibly none) and the continuation at least one. An explicit pair keeps
   its prefix and the first `max_tokens` tokens of its continuation.
4. Prefix and continuation texts (decoded from the token slices) are encoded once; embeddings are cached
   as safetensors shards beside the token ids and the per-dimension normalisation statistics.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dglm_cli.encoder import LatentStats, SentenceEncoder
from dglm_cli.errors import InputError
from dglm_cli.files import read_json, read_tensors, staged_dir, write_json, write_tensors
from dglm_cli.loaders import load_stats, save_stats
from dglm_cli.records import json_object, read_lines

SHARD_ROWS = 50_000
FORMAT = 1


@dataclass
class CorpusConfig:
    max_tokens: int = 64
    min_tokens: int = 4
    splits_per_chunk: int = 1  # several random splits of one chunk give different (prefix, continuation) pairs
    val_size: int = 256  # examples held out for validation (at most 10% of the corpus)
    seed: int = 0


@dataclass(frozen=True)
class Pair:
    """A document already split: the continuation is to be predicted from the prefix (written after the
    hidden `context`, if any)."""

    prefix: str
    continuation: str
    context: str | None = None
    contrast: str | None = None  # a hidden context the continuation was not written after (the steer's teacher is pushed away from it)

    def teacher_prefix(self) -> str | None:
        """The prefix as the writer of the continuation read it: the hidden context, a space, the prefix."""
        return None if self.context is None else f"{self.context} {self.prefix}"

    def contrast_prefix(self) -> str | None:
        """The prefix after the contrasting context, as `teacher_prefix` after the real one."""
        return None if self.contrast is None else f"{self.contrast} {self.prefix}"


Document = str | Pair


@dataclass
class LatentCorpus:
    """n examples; rows [0, n_val) are the validation split, the rest the training split."""

    prefix_ids: list[list[int]]
    continuation_ids: list[list[int]]
    prefix_embeddings: torch.Tensor  # (n, D) unit norm
    continuation_embeddings: torch.Tensor  # (n, D) unit norm
    stats: LatentStats
    n_val: int
    teacher_prefix_ids: list[list[int]] | None = None  # per example: the context + prefix tokens (empty: no context)
    contrast_prefix_ids: list[list[int]] | None = None  # per example: the contrast + prefix tokens (empty: no contrast)

    def __len__(self) -> int:
        return len(self.prefix_ids)

    @property
    def train_indices(self) -> torch.Tensor:
        return torch.arange(self.n_val, len(self))

    @property
    def val_indices(self) -> torch.Tensor:
        return torch.arange(self.n_val)


def read_documents(path: str | Path) -> list[Document]:
    """Plain text (one document per line) or JSONL with a `text` field, or `prefix` and `continuation`
    fields for an explicit pair; blank lines are skipped."""
    lines = read_lines(path)
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise InputError(f"{path}: no documents found")
    if not numbered[0][1].lstrip().startswith("{"):
        return [line.strip() for _, line in numbered]
    return [_jsonl_document(json_object(line, f"{path}:{number}"), f"{path}:{number}") for number, line in numbered]


def _jsonl_document(data: dict, where: str) -> Document:
    if isinstance(data.get("text"), str):
        return data["text"]
    prefix, continuation, context, contrast = (data.get(key) for key in ("prefix", "continuation", "context", "contrast"))
    if isinstance(prefix, str) and isinstance(continuation, str):
        if not continuation.strip():
            raise InputError(f"{where}: empty 'continuation'")
        for key, value in (("context", context), ("contrast", contrast)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: '{key}' must be a string")
        if contrast is not None and context is None:
            raise InputError(f"{where}: a 'contrast' needs a 'context' (the teacher it contrasts with)")
        return Pair(prefix, continuation, context, contrast)
    raise InputError(f"{where}: no string field 'text' (or 'prefix' and 'continuation')")


def chunk_tokens(token_lists: list[list[int]], max_tokens: int, min_tokens: int) -> list[list[int]]:
    chunks = []
    for tokens in token_lists:
        for start in range(0, len(tokens), max_tokens):
            piece = tokens[start : start + max_tokens]
            if len(piece) >= min_tokens:
                chunks.append(piece)
    return chunks


def split_chunks(chunks: list[list[int]], splits: int, generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
    """(prefix, continuation) pairs, split at k = round(u·(n − 1))."""
    pairs = []
    for chunk in chunks:
        for u in torch.rand(splits, generator=generator, dtype=torch.float64).tolist():
            k = round(u * (len(chunk) - 1))
            pairs.append((chunk[:k], chunk[k:]))
    return pairs


def build_corpus(
    documents: list[Document],
    tokenizer,
    encoder: SentenceEncoder,
    config: CorpusConfig,
    on_progress: Callable[[int, int], None] | None = None,
) -> LatentCorpus:
    generator = torch.Generator().manual_seed(config.seed)
    texts = [doc for doc in documents if isinstance(doc, str)]
    token_lists = [tokenizer(doc, add_special_tokens=False).input_ids for doc in texts]
    chunks = chunk_tokens(token_lists, config.max_tokens, config.min_tokens)
    examples = [(prefix, continuation, [], []) for prefix, continuation in split_chunks(chunks, config.splits_per_chunk, generator)]
    examples += tokenize_pairs([doc for doc in documents if isinstance(doc, Pair)], tokenizer, config.max_tokens)
    if len(examples) < 2:
        raise InputError(f"the corpus gives {len(examples)} example(s) (chunks of ≥ {config.min_tokens} tokens or pairs); need at least 2")
    order = torch.randperm(len(examples), generator=generator).tolist()
    prefix_ids, continuation_ids, teacher_ids, contrast_ids = (list(column) for column in zip(*(examples[i] for i in order)))
    prefixes = tokenizer.batch_decode(prefix_ids, skip_special_tokens=True)
    continuations = tokenizer.batch_decode(continuation_ids, skip_special_tokens=True)
    embeddings = _encode_all(encoder, prefixes + continuations, on_progress)  # (2n, D)
    prefix_embeddings, continuation_embeddings = embeddings.split(len(examples))
    n_val = min(config.val_size, max(1, len(examples) // 10))
    stats = LatentStats.fit(continuation_embeddings[n_val:])
    return LatentCorpus(prefix_ids, continuation_ids, prefix_embeddings, continuation_embeddings, stats, n_val,
                        teacher_ids if any(teacher_ids) else None, contrast_ids if any(contrast_ids) else None)


def tokenize_pairs(pairs: list[Pair], tokenizer, max_tokens: int) -> list[tuple[list[int], list[int], list[int], list[int]]]:
    """Explicit pairs as token ids: the prefix whole, the continuation cut to its first `max_tokens`, the
    teacher's prefix (context + prefix; empty without a context) and the contrast's (empty without one)."""

    def ids(text: str | None) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids if text is not None else []

    tokenized = []
    for pair in pairs:
        continuation = ids(pair.continuation)[:max_tokens]
        if continuation:
            tokenized.append((ids(pair.prefix), continuation, ids(pair.teacher_prefix()), ids(pair.contrast_prefix())))
    return tokenized


def _encode_all(encoder: SentenceEncoder, texts: list[str], on_progress, batch: int = 512) -> torch.Tensor:
    parts = []
    for start in range(0, len(texts), batch):
        parts.append(encoder.encode(texts[start : start + batch]).cpu())
        if on_progress:
            on_progress(min(start + batch, len(texts)), len(texts))
    return torch.cat(parts)


def corpus_key(documents: list[Document], tokenizer_id: str, encoder_id: str, config: CorpusConfig) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        if isinstance(doc, str):
            raw = doc.encode()
        else:  # a pair without a context keeps the key it had before contexts existed
            hidden = [text for text in (doc.context, doc.contrast) if text is not None]
            raw = json.dumps([doc.prefix, doc.continuation, *hidden]).encode()
        digest.update(hashlib.sha256(raw).digest())
    digest.update(json.dumps([tokenizer_id, encoder_id, asdict(config), FORMAT]).encode())
    return digest.hexdigest()[:20]


def save_corpus(directory: Path, corpus: LatentCorpus, info: dict) -> None:
    """Write into a temporary sibling directory, then rename: a cache is complete or absent."""
    with staged_dir(directory) as staging:
        tokens = _flatten_ids("prefix", corpus.prefix_ids) | _flatten_ids("continuation", corpus.continuation_ids)
        for name, rows in (("teacher_prefix", corpus.teacher_prefix_ids), ("contrast_prefix", corpus.contrast_prefix_ids)):
            if rows is not None:
                tokens |= _flatten_ids(name, rows)
        write_tensors(staging / "tokens.safetensors", tokens)
        for shard, start in enumerate(range(0, len(corpus), SHARD_ROWS)):
            rows = slice(start, start + SHARD_ROWS)
            tensors = {"prefix": corpus.prefix_embeddings[rows], "continuation": corpus.continuation_embeddings[rows]}
            write_tensors(staging / f"embeddings-{shard:05d}.safetensors", tensors)
        save_stats(staging / "latent_stats.safetensors", corpus.stats)
        meta = {"format": FORMAT, "examples": len(corpus), "n_val": corpus.n_val, "contexts": corpus.teacher_prefix_ids is not None,
                "contrasts": corpus.contrast_prefix_ids is not None, **info}
        write_json(staging / "corpus.json", meta)


def load_corpus(directory: Path) -> LatentCorpus:
    meta = read_json(directory / "corpus.json")
    tokens = read_tensors(directory / "tokens.safetensors")
    shards = [read_tensors(p) for p in sorted(directory.glob("embeddings-*.safetensors"))]
    return LatentCorpus(
        _unflatten_ids("prefix", tokens),
        _unflatten_ids("continuation", tokens),
        torch.cat([s["prefix"] for s in shards]),
        torch.cat([s["continuation"] for s in shards]),
        load_corpus_stats(directory),
        meta["n_val"],
        _unflatten_ids("teacher_prefix", tokens) if "teacher_prefix_ids" in tokens else None,
        _unflatten_ids("contrast_prefix", tokens) if "contrast_prefix_ids" in tokens else None,
    )


def load_corpus_stats(directory: Path) -> LatentStats:
    return load_stats(directory / "latent_stats.safetensors")


def _flatten_ids(name: str, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    flat = torch.tensor([t for r in rows for t in r], dtype=torch.int64)
    return {f"{name}_ids": flat, f"{name}_lengths": lengths}


def _unflatten_ids(name: str, tensors: dict[str, torch.Tensor]) -> list[list[int]]:
    return [part.tolist() for part in tensors[f"{name}_ids"].split(tensors[f"{name}_lengths"].tolist())]
