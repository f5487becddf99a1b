"""How far the decoder follows its latent: real sentences' embeddings in place of the diffusion proposal.

    python benchmarks/decoder.py                            # the installed default bundle, its default steer strength
    python benchmarks/decoder.py --bundle DIR --steer 0 0.5 1 2 --samples 160

Guidance can only reach the text through the latent the decoder reads. This skips the diffusion stage:
each held-out neutral prompt is continued from the embedding of a held-out VADER sentence rated clearly
positive (valence > 2), then of one rated clearly negative (valence < -2). Two judges that are not the
guiding classifier label the continuations (VADER, and a TF-IDF model: benchmarks/judges.py), and
perplexity is the median under the plain pretrained decoder given the prompt (`dglm score`'s definition).
A decoder that follows its latent continues the positive sentences' embeddings more positively than the
negative ones'; the gap between the two rows is the most any guidance of the proposal could move the
text. `--steer` lists strengths of the bundle's latent steer (0: off); `--steer-top-k` lets it re-rank its
whole top-K rather than only the part inside the sampler's top-p nucleus. `--no-prefix` drops the prompts
(the continuation starts from the soft prompt alone). The last row, "no conditioning", is the bundle's
decoder with no soft prompt and no steer (its adapters, if it has any, stay merged).
"""

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

from control import plain_samples  # benchmarks/ is on the path when a script here runs
from judges import TfidfJudge, vader_rates

from dglm_cli.datasets import held_out_split, vader_ground_truth
from dglm_cli.devices import describe_cpu
from dglm_cli.pipeline import GenerationSettings, Pipeline
from dglm_cli.records import read_prompts
from dglm_cli.scoring import DEFAULT_PPL_MODEL, load_perplexity_scorer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="default", help="bundle directory or name")
    parser.add_argument("--prompts", type=Path, default=ROOT / "examples" / "prompts" / "neutral.txt")
    parser.add_argument("--samples", type=int, default=80, help="continuations per row (prompts are cycled)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0, help="the held-out split's seed (the build script's --seed)")
    parser.add_argument("--no-prefix", action="store_true", help="continue from the soft prompt alone, without the prompts")
    parser.add_argument("--decoder-cfg", type=float, default=1.0, help="classifier-free guidance weight on the soft prompt")
    parser.add_argument("--steer", type=float, nargs="+", default=[None], help="steer strengths (default: the bundle's)")
    parser.add_argument("--steer-top-k", action="store_true", help="steer the whole top-K, not only its part inside the top-p nucleus")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pipeline = Pipeline.from_bundle(args.bundle, args.device)
    if args.steer_top_k and pipeline.bundle.steer is not None:
        pipeline.bundle.steer.config.nucleus = False
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, decoder_cfg=args.decoder_cfg)
    prompts = [p.text for p in read_prompts(str(args.prompts))]
    prefixes = ["" if args.no_prefix else prompts[i % len(prompts)] for i in range(args.samples)]
    seeds = list(range(args.samples))
    held_out, _ = held_out_split(vader_ground_truth(), args.seed)
    sources = {"positive sentences": [r.text for r in held_out if r.valence > 2][: args.samples],
               "negative sentences": [r.text for r in held_out if r.valence < -2][: args.samples]}
    tfidf, perplexity = TfidfJudge(args.seed), load_perplexity_scorer(DEFAULT_PPL_MODEL, pipeline.device)

    def row(name: str, texts: list[str]) -> None:
        vader = vader_rates(texts)
        ppl = statistics.median(r["perplexity"] for r in perplexity.score(prefixes, texts) if r)
        print(f"| {name} | {vader['positive']:.2f} | {vader['negative']:.2f} | {tfidf.rate(texts):.2f} | {ppl:.1f} |", flush=True)

    print(f"bundle {pipeline.bundle.name}; {args.samples} continuations per row, {args.max_new_tokens} new tokens, "
          f"renoised at α² = {pipeline.bundle.prompt_generator.config.inference_alpha2}, decoder cfg {args.decoder_cfg}"
          f"{', no prefix' if args.no_prefix else ''}{', steer over the whole top-K' if args.steer_top_k else ''}; {describe_cpu()}\n")
    print("| latent | VADER positive | VADER negative | TF-IDF positive | perplexity (median) |\n|---|---:|---:|---:|---:|")
    for strength in args.steer:
        steered = replace(settings, steer=strength)
        for name, sentences in sources.items():
            x = pipeline.bundle.stats.to_latent(pipeline.bundle.encoder.encode(sentences).to(pipeline.device))  # (N, D)
            texts = []
            for start in range(0, len(x), settings.batch_size):
                stop = start + settings.batch_size
                texts += pipeline.decode(prefixes[start:stop], seeds[start:stop], x[start:stop], steered)
            row(f"{name} ({len(sentences)}), steer {pipeline.steer_strength(steered):g}", texts)
    row("no conditioning", plain_samples(pipeline, prefixes, seeds, settings))


if __name__ == "__main__":
    main()
