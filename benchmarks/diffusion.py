"""Proposal quality per unit of diffusion compute: samplers, step counts and guidance gradients.

    python benchmarks/diffusion.py                 # the installed default bundle
    python benchmarks/diffusion.py --bundle DIR --examples 128

The decoder is left out: this measures only what the diffusion stage hands to it. Held-out VADER
sentences (the default bundle's held-out split, which no training step sees) are cut at their middle
word into a prefix and a true continuation. For each setting:

- unguided: mean cosine between the proposed and the true continuation embedding (the paper's check
  of the denoiser), and seconds of the diffusion stage;
- guided toward each label of the guiding classifier: the classifier's mean probability of that label
  on the proposals, and their mean cosine to the true continuation (how much of the content survives).

The classifier is the guide itself, so its probabilities measure how well a setting reaches the
guidance target, not whether the text turns out positive; `benchmarks/control.py` judges the text with
an independent scorer. Timings include the prefix encoding, which every setting shares.
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from dglm_cli.datasets import held_out_split, vader_ground_truth
from dglm_cli.pipeline import GenerationSettings, Pipeline

SETTINGS = (  # (sampler, steps, guidance gradient, scale or None for --scale); the first is the reference
    ("ddpm", 50, "full", None),
    ("ddpm", 50, "fast", None),
    ("ddim", 50, "full", None),
    ("ddim", 20, "full", None),
    ("ddim", 20, "fast", None),
    ("ddim", 10, "fast", None),
    ("ddpm", 20, "fast", None),
    ("ddpm", 20, "fast", 7.0),
    ("ddpm", 20, "fast", 10.0),
    ("ddpm", 20, "full", None),
)
RESULTS = Path(__file__).parent / "results"


def held_out_pairs(count: int, seed: int) -> tuple[list[str], list[str]]:
    """(prefixes, continuations) from held-out sentences of at least eight words, cut at the middle word."""
    held_out, _ = held_out_split(vader_ground_truth(), seed)
    words = [row.text.split() for row in held_out if len(row.text.split()) >= 8][:count]
    return [" ".join(w[: len(w) // 2]) for w in words], [" ".join(w[len(w) // 2 :]) for w in words]


def propose(pipeline: Pipeline, prefixes: list[str], attrs: list[str], settings: GenerationSettings) -> tuple[torch.Tensor, float]:
    """Unit-norm proposals (N, D) for every prefix, and the seconds it took."""
    targets = pipeline.targets(attrs)
    seeds = list(range(len(prefixes)))
    started, proposals = time.perf_counter(), []
    for start in range(0, len(prefixes), settings.batch_size):
        stop = start + settings.batch_size
        x = pipeline.propose(prefixes[start:stop], seeds[start:stop], targets, settings)  # (B, D) latents
        proposals.append(pipeline.bundle.stats.to_embedding(x))
    if pipeline.device.type == "cuda":
        torch.cuda.synchronize(pipeline.device)
    return torch.cat(proposals), time.perf_counter() - started


def label_probability(pipeline: Pipeline, attr: str, embeddings: torch.Tensor) -> float:
    (target,) = pipeline.targets([attr])
    return target.classifier.log_probs(embeddings)[:, target.label_index].exp().mean().item()


def measure(pipeline: Pipeline, prefixes, truth: torch.Tensor, attrs: list[str], settings: GenerationSettings) -> dict:
    row = {}
    proposals, row["unguided s"] = propose(pipeline, prefixes, [], settings)
    row["cos"] = torch.nn.functional.cosine_similarity(proposals, truth).mean().item()
    for attr in attrs:
        row[f"{attr} (unguided)"] = label_probability(pipeline, attr, proposals)
    for attr in attrs:
        guided, seconds = propose(pipeline, prefixes, [attr], settings)
        row[f"{attr} s"] = seconds
        row[attr] = label_probability(pipeline, attr, guided)
        row[f"{attr} cos"] = torch.nn.functional.cosine_similarity(guided, truth).mean().item()
    return row


def table(rows: list[tuple[str, dict]], attrs: list[str]) -> str:
    reference = rows[0][1]
    head = ["setting", "unguided s", "cos to truth"] + [f"{a} s" for a in attrs[:1]] + ["× ref"]
    head += [f"p({a}) unguided → guided" for a in attrs] + [f"cos guided {a}" for a in attrs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows:
        cells = [name, f"{r['unguided s']:.2f}", f"{r['cos']:.3f}", f"{r[attrs[0] + ' s']:.2f}",
                 f"{r[attrs[0] + ' s'] / reference[attrs[0] + ' s']:.2f}"]
        cells += [f"{r[a + ' (unguided)']:.2f} → {r[a]:.2f}" for a in attrs] + [f"{r[a + ' cos']:.3f}" for a in attrs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="default", help="bundle directory or name")
    parser.add_argument("--attr", action="append", help="attributes to guide toward (default: sentiment:positive, sentiment:negative)")
    parser.add_argument("--examples", type=int, default=64, help="held-out (prefix, continuation) pairs")
    parser.add_argument("--scale", type=float, default=5.0, help="guidance scale of the rows that name none")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the held-out split's seed (the build script's --seed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=RESULTS / "diffusion.md")
    args = parser.parse_args()
    attrs = args.attr or ["sentiment:positive", "sentiment:negative"]
    pipeline = Pipeline.from_bundle(args.bundle, args.device)
    prefixes, continuations = held_out_pairs(args.examples, args.seed)
    truth = pipeline.bundle.encoder.encode(continuations).to(pipeline.device)  # (N, D) unit norm
    base = GenerationSettings(guidance_scale=args.scale, batch_size=args.batch_size)
    propose(pipeline, prefixes[:2], attrs[:1], replace(base, steps=2))  # warm-up
    rows = []
    for sampler, steps, gradient, scale in SETTINGS:
        scale = args.scale if scale is None else scale
        name = f"{sampler} ×{steps}, {gradient} gradient, s = {scale:g}"
        settings = replace(base, sampler=sampler, steps=steps, guidance_gradient=gradient, guidance_scale=scale)
        rows.append((name, measure(pipeline, prefixes, truth, attrs, settings)))
        print(name, {k: round(v, 3) for k, v in rows[-1][1].items()}, flush=True)
    threads = f"{torch.get_num_threads()} CPU threads" if pipeline.device.type == "cpu" else torch.cuda.get_device_name(pipeline.device)
    report = (f"Bundle {pipeline.bundle.name}, {len(prefixes)} held-out pairs, batch {args.batch_size}, "
              f"K = {base.mc_samples}, {threads}. Seconds are the diffusion stage of the first attribute's "
              f"guided run; p is the guiding classifier's probability on the proposals.\n\n{table(rows, attrs)}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
