"""Control per unit of compute: DGLM against plain sampling and best-of-n reranking, side by side.

    python benchmarks/control.py                                   # default bundle, held-out neutral prompts
    python benchmarks/control.py --bundle DIR --attr positive --attr negative --scales 3,7,12 --samples 4

One process, one decoder, the same prompts and record seeds for every method:
  plain            the bundle's decoder alone, soft prompt of length 0 (with the bundle's adapters merged, if any)
  dglm s=0         DGLM unguided
  dglm s=S         DGLM guided toward the attribute at each --scales value and the default scale (default settings)
  dglm s=5 full gradient ddpm×50   the previous defaults (the paper's full gradient, 50 steps, s = 5)
  dglm steer off   for a bundle with a latent steer (the rows above use its default strength): the default scale, steer 0
  best-of-n        n plain samples per record, the one the guiding classifier rates highest is kept;
                   n is the smallest whole number of plain samples that costs at least the default DGLM guided run
  weighted decoding  FUDGE-style token-level reweighting by the same classifier (top 16 tokens rescored each step)
Metrics come from `dglm score` (run as a subprocess on the records): the attribute rate by VADER, which is
independent of the guiding classifier, and by the guiding classifier itself; perplexity under the plain
decoder; distinct-3 across one prompt's samples. Wall time covers generation only (models loaded once).

Writes OUT/records.jsonl, OUT/control.md (the table) and OUT/control.png (VADER rate against wall time).
"""

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dglm_cli.attributes import AttributeSpec
from dglm_cli.devices import describe_cpu
from dglm_cli.pipeline import GenerationSettings, Pipeline
from dglm_cli.records import Prompt, read_prompts
from dglm_cli.rng import RecordRNG

ROOT = Path(__file__).resolve().parent.parent
FUDGE_TOP_K = 16  # candidate next tokens rescored by the classifier at each step
PAPER_SETTINGS = {"guidance_scale": 5.0, "steps": 50, "guidance_gradient": "full"}  # the defaults before benchmarks/diffusion.py
PAPER_LIKE = "dglm s=5 full gradient ddpm×50"


@dataclass
class Run:
    method: str
    attr: str | None  # the attribute steered toward (None: not steered)
    seconds: float
    continuations: list[str]


def plain_samples(pipeline: Pipeline, prefixes: list[str], seeds: list[int], settings: GenerationSettings, reweight=None) -> list[str]:
    decoder, out = pipeline.bundle.decoder, []
    for start in range(0, len(prefixes), settings.batch_size):
        batch, batch_seeds = prefixes[start : start + settings.batch_size], seeds[start : start + settings.batch_size]
        empty = torch.zeros(len(batch), 0, decoder.config.embedding_dim, device=pipeline.device)
        out += decoder.generate(batch, empty, RecordRNG(batch_seeds, "tokens", pipeline.device), settings.max_new_tokens,
                                settings.top_p, settings.temperature, settings.repetition_penalty, reweight)
    return out


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, result


def dglm_samples(pipeline: Pipeline, prompts: list[Prompt], attr: str | None, settings: GenerationSettings) -> list[str]:
    return [r["continuation"] for r in pipeline.generate(prompts, [attr] if attr else [], settings=settings)]


@torch.no_grad()
def best_of_n(pipeline: Pipeline, prefixes: list[str], seeds: list[int], attr: str, n: int, settings: GenerationSettings) -> list[str]:
    """n plain candidates per record (seeds offset by 10⁶·j), reranked by the guiding classifier's log p(attr)."""
    (target,) = pipeline.targets([attr])
    candidates = [plain_samples(pipeline, prefixes, [s + 10**6 * j for s in seeds], settings) for j in range(n)]  # n × (R,)
    scores = torch.stack([target.classifier.log_probs(pipeline.bundle.encoder.encode(texts))[:, target.label_index]
                          for texts in candidates])  # (n, R)
    best = scores.argmax(dim=0).tolist()
    return [candidates[j][r] for r, j in enumerate(best)]


@torch.no_grad()
def weighted_decoding(pipeline: Pipeline, prefixes: list[str], seeds: list[int], attr: str, settings: GenerationSettings,
                      top_k: int = FUDGE_TOP_K) -> list[str]:
    """FUDGE-style (Yang & Klein 2021) with the guiding classifier on the encoder's embedding of the text so far.

    Each step keeps the decoder's `top_k` next tokens and samples from p_LM(token) · p(attr | continuation + token),
    renormalised, with the same top-p; the classifier sees each candidate continuation (B·k encodings a step).
    """
    (target,) = pipeline.targets([attr])
    decoder, encoder = pipeline.bundle.decoder, pipeline.bundle.encoder

    def reweight(generated: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        top_logits, top_ids = logits.topk(top_k, dim=-1)  # (B, k)
        texts = [decoder.tokenizer.decode(row + [token], skip_special_tokens=True)
                 for row, ids in zip(generated.tolist(), top_ids.tolist()) for token in ids]  # B·k
        log_p = target.classifier.log_probs(encoder.encode(texts).to(logits.device))[:, target.label_index]
        scores = top_logits.log_softmax(dim=-1) + log_p.view_as(top_logits)  # log p_LM + log p(attr | ·)
        return torch.full_like(logits, float("-inf")).scatter(1, top_ids, scores)

    return plain_samples(pipeline, prefixes, seeds, settings, reweight)


def run_methods(pipeline: Pipeline, prompts: list[Prompt], attrs: list[str], scales: list[float], settings: GenerationSettings) -> list[Run]:
    plans = pipeline.plan(prompts, [], settings)
    prefixes, seeds = [p.prompt.text for p in plans], [p.seed for p in plans]
    dglm_samples(pipeline, prompts[:1], attrs[0], replace(settings, num_samples=1, steps=2, max_new_tokens=2))  # warm-up
    seconds, texts = timed(plain_samples, pipeline, prefixes, seeds, settings)
    runs = [Run("plain", None, seconds, texts)]
    runs.append(Run("dglm s=0", None, *timed(dglm_samples, pipeline, prompts, None, replace(settings, guidance_scale=0))))
    default = pipeline.guidance_scale(settings)  # the bundle's default scale (its steer's, if it has one)
    for attr in attrs:
        for scale in sorted({*scales, default}):  # the default scale sets best-of-n's budget
            runs.append(Run(f"dglm s={scale:g}", attr, *timed(dglm_samples, pipeline, prompts, attr, replace(settings, guidance_scale=scale))))
        runs.append(Run(PAPER_LIKE, attr, *timed(dglm_samples, pipeline, prompts, attr, replace(settings, **PAPER_SETTINGS))))
        if pipeline.bundle.steer is not None:  # the dglm rows steer at the bundle's default strength; this one does not
            steer_off = replace(settings, guidance_scale=default, steer=0.0)
            runs.append(Run(f"dglm s={default:g}, steer off", attr, *timed(dglm_samples, pipeline, prompts, attr, steer_off)))
        reference = next(r.seconds for r in runs if r.attr == attr and r.method == f"dglm s={default:g}")
        n = max(1, math.ceil(reference / runs[0].seconds))
        runs.append(Run(f"best-of-{n}", attr, *timed(best_of_n, pipeline, prefixes, seeds, attr, n, settings)))
        runs.append(Run(f"weighted decoding k={FUDGE_TOP_K}", attr, *timed(weighted_decoding, pipeline, prefixes, seeds, attr, settings)))
    return runs


def write_records(path: Path, runs: list[Run], plans) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for run in runs:
            for plan, text in zip(plans, run.continuations):
                group = f"{run.method} → {run.attr}" if run.attr else run.method
                f.write(json.dumps({"group": group, "prompt_id": plan.prompt.id, "prompt": plan.prompt.text, "continuation": text}) + "\n")


def score(records: Path, bundle: str) -> dict:
    command = [sys.executable, "-m", "dglm_cli", "score", str(records), "--group-by", "group", "--bundle", bundle, "--json", "-q"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def rate(group: dict, scorer_prefix: str, attr: str) -> str:
    """The group's rate of the attribute's label by the first scorer whose name starts with `scorer_prefix`."""
    label = AttributeSpec.parse(attr).label
    for scorer, labels in group["attributes"].items():
        if scorer.startswith(scorer_prefix) and label in labels:
            return f"{labels[label]['rate']:.2f}"
    return "—"


def table(runs: list[Run], summary: dict, attrs: list[str], machine: str) -> str:
    groups = {g["key"]: g for g in summary["groups"]}
    plain = runs[0].seconds
    lines = [f"Machine: {machine}.", "",
             "| method | toward | wall s | × plain | VADER rate | guiding-classifier rate | perplexity (median) | distinct-3 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        group = groups[f"{run.method} → {run.attr}" if run.attr else run.method]
        for attr in [run.attr] if run.attr else attrs:
            ppl = group["perplexity"]
            lines.append(f"| {run.method} | {attr} | {run.seconds:.1f} | {run.seconds / plain:.2f} | {rate(group, 'vader', attr)} | "
                         f"{rate(group, 'clf:', attr)} | {ppl['mean']:.1f} ({ppl['median']:.1f}) | {group['distinct_3'] or 0:.2f} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, runs: list[Run], summary: dict, attrs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {g["key"]: g for g in summary["groups"]}
    fig, axes = plt.subplots(1, len(attrs), figsize=(5 * len(attrs), 4), squeeze=False)
    for ax, attr in zip(axes[0], attrs):
        for run in runs:
            if run.attr not in (None, attr):
                continue
            value = rate(groups[f"{run.method} → {run.attr}" if run.attr else run.method], "vader", attr)
            if value != "—":
                ax.scatter(run.seconds, float(value), marker="o" if run.method.startswith("dglm") else "s")
                ax.annotate(run.method, (run.seconds, float(value)), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set(xlabel="wall time (s)", ylabel=f"VADER {attr} rate", title=f"toward {attr}", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--prompts", type=Path, default=ROOT / "examples" / "prompts" / "neutral.txt")
    parser.add_argument("--attr", action="append", help="attribute to steer toward, as for --attr of dglm generate (repeatable; default: positive)")
    parser.add_argument("--scales", default="3,7,12", help="guidance scales, comma-separated")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    attrs = args.attr or ["positive"]
    settings = GenerationSettings(num_samples=args.samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    pipeline = Pipeline.from_bundle(args.bundle, args.device)
    prompts = read_prompts(str(args.prompts))
    runs = run_methods(pipeline, prompts, attrs, [float(s) for s in args.scales.split(",")], settings)
    args.out.mkdir(parents=True, exist_ok=True)
    records = args.out / "records.jsonl"
    write_records(records, runs, pipeline.plan(prompts, [], settings))
    summary = score(records, args.bundle)
    device = pipeline.device
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda" else f"{describe_cpu()}, {torch.get_num_threads()} threads")
    machine += f"; bundle {pipeline.bundle.name}; {len(prompts)} prompts × {args.samples} samples, {args.max_new_tokens} new tokens, " \
               f"top-p {settings.top_p}, {settings.steps} {settings.sampler} steps and the {settings.guidance_gradient} gradient unless named"
    text = table(runs, summary, attrs, machine)
    (args.out / "control.md").write_text(text, encoding="utf-8")
    plot(args.out / "control.png", runs, summary, attrs)
    print(text)


if __name__ == "__main__":
    main()
