"""How far the decoder follows its latent: real sentences' embeddings in place of the diffusion proposal.

    python benchmarks/decoder.py                   # the installed default bundle
    python benchmarks/decoder.py --bundle DIR --samples 64

Guidance can only reach the text through the latent the decoder reads. This skips the diffusion stage:
each held-out neutral prompt is continued from the embedding of a held-out VADER sentence rated clearly
positive (valence > 2), then of one rated clearly negative (valence < -2), and with no soft prompt. VADER
labels the continuations. A decoder that follows its latent continues the positive sentences' embeddings
more positively than the negative ones'; the gap between the two rows is the most any guidance of the
proposal could move the text. `--no-prefix` drops the prompts (the continuation starts from the soft
prompt alone), which shows how much of the latent's pull the prompt text overrides. The last row is the
bundle's decoder without a soft prompt (its adapters, if it has any, stay merged: it is not the plain
pretrained LM).
"""

import argparse
from collections import Counter
from pathlib import Path

from control import plain_samples  # benchmarks/ is on the path when a script here runs

from dglm_cli.datasets import held_out_split, vader_ground_truth
from dglm_cli.pipeline import GenerationSettings, Pipeline
from dglm_cli.records import read_prompts
from dglm_cli.scoring import VaderScorer

ROOT = Path(__file__).resolve().parent.parent


def vader_rates(texts: list[str]) -> dict[str, float]:
    counts = Counter(row["label"] for row in VaderScorer().score(texts))
    return {label: counts[label] / len(texts) for label in ("positive", "negative")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="default", help="bundle directory or name")
    parser.add_argument("--prompts", type=Path, default=ROOT / "examples" / "prompts" / "neutral.txt")
    parser.add_argument("--samples", type=int, default=80, help="continuations per row (prompts are cycled)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="the held-out split's seed (the build script's --seed)")
    parser.add_argument("--no-prefix", action="store_true", help="continue from the soft prompt alone, without the prompts")
    parser.add_argument("--decoder-cfg", type=float, default=1.0, help="classifier-free guidance weight on the soft prompt")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pipeline = Pipeline.from_bundle(args.bundle, args.device)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, decoder_cfg=args.decoder_cfg)
    prompts = [p.text for p in read_prompts(str(args.prompts))]
    prefixes = ["" if args.no_prefix else prompts[i % len(prompts)] for i in range(args.samples)]
    seeds = list(range(args.samples))
    held_out, _ = held_out_split(vader_ground_truth(), args.seed)
    sources = {"positive sentences": [r.text for r in held_out if r.valence > 2][: args.samples],
               "negative sentences": [r.text for r in held_out if r.valence < -2][: args.samples]}
    print(f"bundle {pipeline.bundle.name}; {args.samples} continuations per row, {args.max_new_tokens} new tokens, "
          f"renoised at α² = {pipeline.bundle.prompt_generator.config.inference_alpha2}, decoder cfg {args.decoder_cfg}"
          f"{', no prefix' if args.no_prefix else ''}\n")
    print("| latent | VADER positive | VADER negative |\n|---|---:|---:|")
    for name, sentences in sources.items():
        x = pipeline.bundle.stats.to_latent(pipeline.bundle.encoder.encode(sentences).to(pipeline.device))  # (N, D)
        texts = []
        for start in range(0, len(x), settings.batch_size):
            stop = start + settings.batch_size
            texts += pipeline.decode(prefixes[start:stop], seeds[start:stop], x[start:stop], settings)
        rates = vader_rates(texts)
        print(f"| {name} ({len(sentences)}) | {rates['positive']:.2f} | {rates['negative']:.2f} |", flush=True)
    rates = vader_rates(plain_samples(pipeline, prefixes, seeds, settings))
    print(f"| no soft prompt | {rates['positive']:.2f} | {rates['negative']:.2f} |")


if __name__ == "__main__":
    main()
