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
from judges import vader_rates  # benchmarks/ is on the path when a script here runs

from dglm_cli.records import read_prompts
from dglm_cli.rng import RecordRNG
from dglm_cli.runs import load_training_decoder
from dglm_cli.scoring import PerplexityScorer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from build_default_bundle import MOODS  # noqa: E402


def continue_after(decoder, contexts: list[str], prompts: list[str], g: float, seeds: list[int], max_new_tokens: int) -> list[str]:
    """Sample continuations of `prompts` under log p(·|prompt) + g·(log p(·|context, prompt) − log p(·|prompt))."""
    hinted = [f"{c} {p}" for c, p in zip(contexts, prompts)]
    empty = torch.zeros(len(prompts), 0, decoder.config.embedding_dim, device=decoder.device)  # no soft prompt
    return decoder.generate(hinted, empty, RecordRNG(seeds, "tokens", decoder.device), max_new_tokens, top_p=0.9, temperature=1.0,
                            repetition_penalty=1.2, cfg=g, unconditional_prefixes=prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=Path, default=ROOT / "examples" / "prompts" / "neutral.txt")
    parser.add_argument("--samples", type=int, default=2, help="continuations per prompt and mood")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="guidance weights g on the hidden sentence")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
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
