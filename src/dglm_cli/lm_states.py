"""Cached final hidden states of a frozen decoder over a corpus: what the latent steer trains on.

One forward pass of the LM per example, done once: the steer then trains for many epochs on the cache
without touching the LM (dglm_cli.steer, dglm_cli.training.SteerTrainer).

<DGLM_HOME>/corpora/<corpus key>/lm-states/<key>/     key: the decoder, the soft-prompt setting and K
  states.json                 format, examples, tokens, bytes, settings; written last, once every shard is there
  shard-00000.safetensors     for SHARD_EXAMPLES corpus rows in order: hidden (N, H) float16, the LM's top-K
                              next tokens candidates (N, K) int32, targets (N,) int32, lengths (rows,) int32,
                              and for a corpus with hidden contexts teacher (N, K) float16: the same LM's
                              log-probabilities of the candidates given context + prefix (one more forward pass),
                              and with contrasts also contrast (N, K) float16: given contrast + prefix (another)

Each shard is written whole (temporary file, then rename), so an interrupted caching run resumes at
the first missing shard; about 1.4 KB per continuation token with H = 576 and K = 64.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dglm_cli.corpus import LatentCorpus
from dglm_cli.decoder import SoftPromptDecoder
from dglm_cli.errors import InputError
from dglm_cli.files import read_json, read_tensors, write_json, write_tensors

FORMAT = 1
SHARD_EXAMPLES = 1024
STATES_FILE = "states.json"


@dataclass
class StateCacheConfig:
    candidates: int = 64  # K next-token candidates kept per position (0: none, the steer uses the whole vocabulary)
    soft_prompt: bool = False  # states taken with the bundle's soft prompt in place
    batch_size: int = 32
    precision: str = "auto"  # auto: bf16 autocast where it is native (CUDA, CPUs with AVX-512 BF16 or AMX), else fp32
    teacher: bool = False  # also the LM's log-probabilities of the candidates given each example's hidden context
    contrast: bool = False  # and given its contrasting context (needs the teacher)


@dataclass
class LMStates:
    """Every continuation token of a corpus, row-major: row r's tokens are offsets[r]:offsets[r + 1]."""

    hidden: torch.Tensor  # (N, H) float16
    candidates: torch.Tensor | None  # (N, K) int32
    targets: torch.Tensor  # (N,) int32 token ids
    offsets: torch.Tensor  # (rows + 1,) int64
    teacher: torch.Tensor | None = None  # (N, K) float16 log-probabilities of the candidates given the hidden context
    contrast: torch.Tensor | None = None  # (N, K) float16 log-probabilities of the candidates given the contrasting context

    def tokens_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token indices of these corpus rows (T,), the position in `rows` each token belongs to (T,))."""
        starts = self.offsets[rows]
        counts = self.offsets[rows + 1] - starts
        owner = torch.repeat_interleave(torch.arange(len(rows)), counts)  # (T,)
        within = torch.arange(len(owner)) - (torch.cumsum(counts, 0) - counts)[owner]  # position inside its row
        return starts[owner] + within, owner

    def target_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each token's target as an index among its candidates, −1 where it is not one (or its id without candidates)."""
        targets = self.targets[tokens].long()
        if self.candidates is None:
            return targets
        hits = self.candidates[tokens] == targets[:, None].int()  # (T, K)
        return torch.where(hits.any(dim=1), hits.int().argmax(dim=1), -1)


def states_key(decoder_identity: str, config: StateCacheConfig) -> str:
    """The cache's name: the digest of the decoder (with the prompt generator when the soft prompt is on) and the settings."""
    settings = [decoder_identity, config.soft_prompt, config.candidates, FORMAT] + (["teacher"] if config.teacher else [])
    settings += ["contrast"] if config.contrast else []
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def cache_states(
    directory: Path,
    corpus: LatentCorpus,
    decoder: SoftPromptDecoder,
    config: StateCacheConfig,
    soft_prompts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    info: dict | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the states of every corpus row, skipping the shards already there; `soft_prompts(rows) -> (B, k, E)`."""
    from dglm_cli.devices import cpu_has_native_bf16, describe_cpu

    if (directory / STATES_FILE).exists():
        return directory
    if config.teacher and (corpus.teacher_prefix_ids is None or not config.candidates):
        raise InputError("teacher log-probabilities need a corpus whose pairs have a 'context' and K > 0 candidates")
    if config.contrast and (corpus.contrast_prefix_ids is None or not config.teacher):
        raise InputError("contrast log-probabilities need a corpus whose pairs have a 'contrast' and a teacher")
    directory.mkdir(parents=True, exist_ok=True)
    n = len(corpus)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and (decoder.device.type == "cuda" or cpu_has_native_bf16()))
    shards = range(0, n, SHARD_EXAMPLES)
    for index, start in enumerate(shards):
        path = directory / f"shard-{index:05d}.safetensors"
        if not path.exists():
            rows = torch.arange(start, min(start + SHARD_EXAMPLES, n))
            with torch.autocast(decoder.device.type, dtype=torch.bfloat16, enabled=bf16):
                write_tensors(path, _shard(rows, corpus, decoder, config, soft_prompts, on_progress and (lambda done: on_progress(done, n))))
        elif on_progress:
            on_progress(min(start + SHARD_EXAMPLES, n), n)
    states = load_shards(directory, len(shards))
    meta = {"format": FORMAT, "examples": n, "tokens": len(states.targets), "bytes": sum(p.stat().st_size for p in directory.glob("shard-*")),
            **asdict(config), "precision": "bf16" if bf16 else "fp32", **(info or {}),
            "machine": torch.cuda.get_device_name() if decoder.device.type == "cuda" else describe_cpu()}
    write_json(directory / STATES_FILE, meta)
    return directory


def _shard(rows, corpus: LatentCorpus, decoder: SoftPromptDecoder, config: StateCacheConfig, soft_prompts, on_progress) -> dict[str, torch.Tensor]:
    """The states of these consecutive corpus rows, in row order; batches group rows of similar length.

    `on_progress(rows done)` counts from the corpus's first row."""
    lengths = torch.tensor([len(corpus.prefix_ids[r]) + len(corpus.continuation_ids[r]) for r in rows.tolist()])
    per_row: dict[int, tuple] = {}
    for done, batch in enumerate(rows[lengths.argsort(stable=True)].split(config.batch_size), 1):
        soft = soft_prompts(batch) if config.soft_prompt and soft_prompts else torch.zeros(len(batch), 0, decoder.config.embedding_dim)
        prefix_ids = [corpus.prefix_ids[r] for r in batch.tolist()]
        continuation_ids = [corpus.continuation_ids[r] for r in batch.tolist()]
        states = decoder.continuation_states(prefix_ids, soft.to(decoder.device), continuation_ids, config.candidates)
        counts = states.lengths.tolist()
        columns = [states.hidden, states.targets] + ([states.candidates] if config.candidates else [])
        if config.teacher:
            teacher_ids = [corpus.teacher_prefix_ids[r] for r in batch.tolist()]
            columns.append(decoder.continuation_log_probs(teacher_ids, continuation_ids, states.candidates))
        if config.contrast:
            contrast_ids = [corpus.contrast_prefix_ids[r] for r in batch.tolist()]
            columns.append(decoder.continuation_log_probs(contrast_ids, continuation_ids, states.candidates))
        for row, *values in zip(batch.tolist(), *(c.split(counts) for c in columns)):
            per_row[row] = values
        if on_progress:
            on_progress(int(rows[0]) + min(done * config.batch_size, len(rows)))
    ordered = [per_row[r] for r in rows.tolist()]
    tensors = {
        "hidden": torch.cat([v[0] for v in ordered]).half(),
        "targets": torch.cat([v[1] for v in ordered]).int(),
        "lengths": torch.tensor([len(v[1]) for v in ordered], dtype=torch.int32),
    }
    if config.candidates:
        tensors["candidates"] = torch.cat([v[2] for v in ordered]).int()
    if config.teacher:
        tensors["teacher"] = torch.cat([v[3] for v in ordered]).half()
    if config.contrast:
        tensors["contrast"] = torch.cat([v[4] for v in ordered]).half()
    return {k: v.cpu() for k, v in tensors.items()}


def load_states(directory: Path) -> LMStates:
    meta = read_json(directory / STATES_FILE)
    return load_shards(directory, -(-meta["examples"] // SHARD_EXAMPLES))


def load_shards(directory: Path, count: int) -> LMStates:
    shards = [read_tensors(directory / f"shard-{i:05d}.safetensors") for i in range(count)]
    lengths = torch.cat([s["lengths"] for s in shards]).long()
    return LMStates(
        hidden=torch.cat([s["hidden"] for s in shards]),
        candidates=torch.cat([s["candidates"] for s in shards]) if "candidates" in shards[0] else None,
        targets=torch.cat([s["targets"] for s in shards]),
        offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        teacher=torch.cat([s["teacher"] for s in shards]) if "teacher" in shards[0] else None,
        contrast=torch.cat([s["contrast"] for s in shards]) if "contrast" in shards[0] else None,
    )
