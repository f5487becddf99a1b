"""How far a hidden mood sentence moves SmolLM2: the ceiling of the build script's distillation data.

    python benchmarks/teacher.py                       # g = 1, 2, 3 on the held-out neutral prompts
    python benchmarks/teacher.py --scales 1 --samples 1

The build script's distill stage has SmolLM2 read a positive or negative sentence (MOODS) before a
prefix and keeps only the continuation. A decoder trained on that text can at best imitate this
teacher, so its rates bound what the default recipe can teach. Each neutral prompt is continued after
a random mood sentence, optionally amplified by classifier-free guidance on that sentence: next-token
log-probabilities log p(·|prompt) + g · (log p(·|mood, prompt) − log p(·|prompt)), g = 1 being the
teacher as it writes the corpus. VADER labels the continuations; perplexity is the median under plain
SmolLM2 given the prompt, as `dglm score` computes it.
"""

import argparse
import random
import statistics
import sys
from pathlib import Path

import torch
from decoder import vader_rates  # benchmarks/ is on the path when a script here runs

from dglm_cli.decoder import penalize_repetition, sample_top_p
from dglm_cli.records import read_prompts
from dglm_cli.rng import RecordRNG
from dglm_cli.runs import load_training_decoder
from dglm_cli.scoring import PerplexityScorer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_default_bundle import MOODS  # noqa: E402


class CachedLM:
    """Left-padded token rows fed through a causal LM one step at a time with its KV cache."""

    def __init__(self, decoder, rows: list[list[int]]):
        self.model, self.cache_name = decoder.model, decoder._cache_name
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        self.mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :], self.mask[i, width - len(row) :] = torch.tensor(row), 1
        positions = (self.mask.cumsum(dim=1) - 1).clamp(min=0)
        self.out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True)
        self.positions = positions[:, -1:]

    def log_probs(self) -> torch.Tensor:
        return self.out.logits[:, -1].float().log_softmax(dim=-1)  # (B, V)

    def advance(self, tokens: torch.Tensor) -> None:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        self.positions = self.positions + 1
        cache = {self.cache_name: getattr(self.out, self.cache_name)}
        self.out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.positions, use_cache=True, **cache)


@torch.no_grad()
def continue_after(decoder, contexts: list[str], prompts: list[str], g: float, seeds: list[int], max_new_tokens: int) -> list[str]:
    """Sample continuations of `prompts` under log p(·|prompt) + g·(log p(·|context, prompt) − log p(·|prompt))."""
    hinted = CachedLM(decoder, decoder.tokenize([f"{c} {p}" for c, p in zip(contexts, prompts)]))
    plain = CachedLM(decoder, decoder.tokenize(prompts))
    rng = RecordRNG(seeds, "tokens")
    generated = torch.empty(len(prompts), 0, dtype=torch.long)
    for _ in range(max_new_tokens):
        unconditional = plain.log_probs()
        scores = unconditional + g * (hinted.log_probs() - unconditional)  # (B, V)
        tokens = sample_top_p(penalize_repetition(scores, generated, 1.2), rng, top_p=0.9, temperature=1.0)  # (B,)
        generated = torch.cat([generated, tokens[:, None]], dim=1)
        hinted.advance(tokens)
        plain.advance(tokens)
    return [decoder._decode(row) for row in generated.tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, default=ROOT / "examples" / "prompts" / "neutral.txt")
    parser.add_argument("--samples", type=int, default=2, help="continuations per prompt and mood")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="guidance weights g on the hidden sentence")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    decoder = load_training_decoder({"kind": "named", "name": "smollm2-135m"})
    scorer = PerplexityScorer(decoder.model, decoder.tokenizer, decoder.config.reference)
    prompts = [p.text for p in read_prompts(str(args.prompts)) for _ in range(args.samples)]
    print(f"SmolLM2 after a hidden mood sentence; {len(prompts)} continuations per row, {args.max_new_tokens} new tokens\n")
    print("| hidden sentence | g | VADER positive | VADER negative | perplexity (median) |\n|---|---:|---:|---:|---:|")
    for g in args.scales:
        for mood, sentences in MOODS.items():
            contexts = [random.Random(i).choice(sentences) for i in range(len(prompts))]
            texts = continue_after(decoder, contexts, prompts, g, list(range(len(prompts))), args.max_new_tokens)
            rates = vader_rates(texts)
            ppl = statistics.median(r["perplexity"] for r in scorer.score(prompts, texts) if r)
            print(f"| {mood} | {g:g} | {rates['positive']:.2f} | {rates['negative']:.2f} | {ppl:.1f} |", flush=True)


if __name__ == "__main__":
    main()
