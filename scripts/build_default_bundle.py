"""Rebuild the default dglm bundle from nothing, with the project's own commands.

    python scripts/build_default_bundle.py --time-budget 115            # 2-core CPU
    python scripts/build_default_bundle.py --time-budget 60 --install  # then ship it in the package
    python scripts/build_default_bundle.py --soft-prompt                # also train a soft prompt (the steer composes with it)

Stages (each skips itself when its output exists, so an interrupted build resumes):
1. data      the VADER human-rated sentences (sha256-checked, from the vaderSentiment 3.3.2 sdist),
             split 90/10 by a fixed seed; the 10% and examples/prompts/neutral.txt are never trained on
2. classify  `dglm train-classifier`: sentiment (valence > 0 vs < 0) and domain (movie/tweet/amazon/nyt)
             on the training sentences
3. probe     times one unit of the measuring stages (10-12) on this machine: `dglm generate | dglm score` of
             STRENGTH_PROMPTS × 2 guided records with the packaged default bundle; those stages do a fixed
             number of such units, so their time is reserved out of the budget before distilling
4. distill   SmolLM2 continues prefixes (first 3-8 words) of training sentences, each prefix once after a
             hidden positive and once after a hidden negative sentence (MOODS): self-distillation in which
             the prefix does not tell the continuation's sentiment, only the continuation's embedding does.
             It takes what the budget leaves after the stages before it, the training shares (SHARES), the
             probe's reservation and MARGIN, and that covers caching the LM's states over what it writes
             (timed on its first batch): it stops when its time plus that caching would pass it, so the
             build's length does not depend on the CPU
5. corpus    the distilled rows as explicit (prefix, continuation, context) pairs, continuations cut to 24
             tokens (the length the evaluation generates); the hidden sentence is the 'context' of the teacher
6. diffusion `dglm train-diffusion`
7. decoder   only with --soft-prompt: `dglm train-decoder` (a soft prompt; on CPU through rank-16 adapters
             of SmolLM2, on CUDA with SmolLM2 frozen at batch 128, see DECODER_FLAGS)
8. export    `dglm export` (without a decoder run: SmolLM2 as it is, no soft prompt) + `dglm classifiers export`
9. steer     `dglm train-steer` on the LM's cached states over the pairs (STEER_FLAGS: over the whole vocabulary,
             the target is the continuation the LM wrote after the hidden sentence), exported into the bundle
10. strength the steer's default strength: the largest of STRENGTHS whose guided text keeps its perplexity
             within MAX_PPL_RATIO of the plain LM's, measured on prefixes of held-out VADER sentences
11. guidance the default guidance scale while the steer is on: of GUIDANCE_SCALES, the one whose guided text on
             the same prefixes has the asked sentiment most often within MAX_PPL_RATIO
12. evaluate `dglm generate` on the held-out neutral prompts (unguided, positive, negative) | `dglm score`

bf16 autocast is used on CUDA and on CPUs with native bf16; elsewhere fp32 (emulated bf16 is far slower).
"""

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from dglm_cli.bundle import write_model_card
from dglm_cli.devices import cpu_has_native_bf16, describe_cpu
from dglm_cli.pipeline import DEFAULT_GUIDANCE_SCALE

ROOT = Path(__file__).resolve().parent.parent
NEUTRAL_PROMPTS = ROOT / "examples" / "prompts" / "neutral.txt"
PACKAGE_BUNDLE = ROOT / "src" / "dglm_cli" / "bundles" / "default"
# Shares of --time-budget for the training loops ("steer": the steer's training; caching its LM states is the distill
# stage's). The distill stage takes what is left after the stages before it, these shares, the measuring stages'
# reservation (timed by the probe stage) and MARGIN, which covers the corpus encoding and the exports.
SHARES = {"diffusion": 0.10, "steer": 0.20}
SOFT_PROMPT_SHARES = {"diffusion": 0.08, "decoder": 0.20, "steer": 0.14}
MARGIN = 0.04
# On CPU the decoder trains through rank-16 adapters of SmolLM2 with the bag-of-words loss (as the shipped
# bundle). On CUDA it trains with SmolLM2 frozen at batch 128, the configuration of the reference
# run (the only run measured to steer: ~100k examples on an H200); a CPU run of it put 0.32 nats/token of
# the latent into the text after 102k examples, where the adapter run had 0.20 (see the README).
DECODER_FLAGS = {
    "cpu": ["--batch-size", 24, "--lr", "1e-3", "--lora-rank", 16, "--lm-lr", "5e-4", "--warmup", 30, "--bag-of-words-weight", 0.5],
    "cuda": ["--batch-size", 128, "--lr", "6e-4", "--warmup", 100],
}


@contextmanager
def timed(work: Path, stage: str):
    """Add the stage's wall time to WORK/timings.json (minutes; summed over the sittings of a resumed build)."""
    path = work / "timings.json"
    started = time.monotonic()
    try:
        yield
    finally:
        timings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        timings[stage] = round(timings.get(stage, 0.0) + (time.monotonic() - started) / 60, 2)
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(timings, indent=1) + "\n", encoding="utf-8")


def once(work: Path, stage: str, run, *args):
    """Run a stage once, timed: its result is kept in WORK/stages/STAGE.json and a resumed build reuses it
    (stages with their own resumable outputs, such as distill, also pick up where they stopped)."""
    path = work / "stages" / f"{stage}.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    with timed(work, stage):
        result = run(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, default=str) + "\n", encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def dglm(*args: object, stdin: str | None = None, stdout=None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dglm_cli", *map(str, args)]
    print("$ dglm " + " ".join(map(str, args)), flush=True)
    return subprocess.run(command, check=True, text=True, input=stdin, stdout=stdout)


def stage_data(work: Path, seed: int) -> None:
    from dglm_cli.datasets import held_out_split, vader_ground_truth

    if (work / "data" / "sentiment.csv").exists():
        return
    held_out, train = held_out_split(vader_ground_truth(), seed)
    splits = {"heldout": held_out, "train": train}
    (work / "data").mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        with open(work / "data" / f"vader_{name}.jsonl", "w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps({"text": row.text, "valence": row.valence, "domain": row.domain}) + "\n")
    with open(work / "data" / "domain.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "domain")] + [(r.text, r.domain) for r in splits["train"]])
    with open(work / "data" / "sentiment.csv", "w", newline="", encoding="utf-8") as f:
        labelled = [(r.text, "positive" if r.valence > 0 else "negative") for r in splits["train"] if r.valence != 0]
        csv.writer(f).writerows([("text", "sentiment")] + labelled)


def training_sentences(work: Path) -> list[str]:
    return [json.loads(line)["text"] for line in (work / "data" / "vader_train.jsonl").read_text(encoding="utf-8").splitlines()]


# Hidden moods for self-distillation. SmolLM2 reads one of these sentences before a prefix and writes
# on; the pair keeps only the prefix. Every prefix is continued once in each mood, so the same prefix is
# followed by positive and by negative text, and only the continuation's own embedding (the latent)
# tells which: the decoder cannot learn the sentiment from the prefix and must read it from the latent.
MOODS = {
    "positive": [
        "I love this so much, it is wonderful and it made me very happy.",
        "What a great day! Everything was perfect and I am grateful.",
        "Honestly, this is the best thing that has happened to me in years.",
        "Everyone was kind and cheerful, and we laughed the whole time.",
        "It was a delight from start to finish, and I would gladly do it again.",
        "I am thrilled with how well it all turned out.",
        "Beautiful, generous and warm: I could not have asked for more.",
        "We had an amazing time and left smiling.",
    ],
    "negative": [
        "I hate this so much, it is terrible and it made me very angry.",
        "What an awful day. Everything went wrong and I am miserable.",
        "Honestly, this is the worst thing that has happened to me in years.",
        "Everyone was rude and cold, and we regretted coming at all.",
        "It was a disaster from start to finish, and I will never do it again.",
        "I am furious about how badly it all turned out.",
        "Ugly, cheap and broken: I have never been so disappointed.",
        "We had a horrible time and left upset.",
    ],
}
CORPUS_TOKENS = 24  # new tokens per distilled continuation: the length the evaluation generates
# Classifier-free guidance on the hidden sentence while distilling: log p(·|prefix) + g·(log p(·|mood, prefix)
# − log p(·|prefix)). benchmarks/teacher.py: g = 2 moves VADER to 0.85 positive / 0.72 negative on the held-out
# prompts at the perplexity of g = 1 (0.72 / 0.34), so the corpus carries twice the mood at no cost in fluency.
DISTILL_CFG = 2.0

# The steer works over the whole vocabulary (the full softmax) and learns the continuation the LM wrote after the
# hidden sentence (its cross-entropy, 2 epochs). On 4,845 pairs it separated benchmarks/decoder.py's VADER positive
# by 0.36 at strength 1.5, where a steer over the LM's top 64 trained alike separated 0.19 at equal perplexity, and
# on the AVX2-only build's 6,829 pairs it gave 0.76 / 0.51 through the pipeline where that build's top-64 steer
# (teacher g = 2, teacher weight 1) gave 0.50 / 0.23 (README). Each step costs about 15x one over the top 64, hence
# its larger share; the cache needs no teacher pass. A contrast (--contrast-cfg) and the teacher need candidates.
STEER_CANDIDATES = 0
STEER_FLAGS = ["--candidates", STEER_CANDIDATES, "--teacher-weight", 0, "--epochs", 2, "--patience", 0, "--batch-size", 64, "--lr", "1e-3"]
STRENGTHS = [1.0, 1.5, 2.0, 3.0]
MAX_PPL_RATIO = 1.3  # the fluency target: perplexity under plain SmolLM2 within 1.3x of its own samples'
STRENGTH_PROMPTS = 20  # held-out VADER prefixes (not the evaluation's neutral prompts) used to pick the strength
# Classifier-guidance scales tried with the steer at its chosen strength; the first is the pipeline's default
# without a steer (measured by the strength stage). The steer reads the latent less sharply than a soft prompt
# trained to it, so guidance may have to push the proposal further than the 7 chosen on the proposal alone.
GUIDANCE_SCALES = [DEFAULT_GUIDANCE_SCALE, 20.0, 40.0, 70.0]


def caching_seconds_per_pair(decoder, rows: list[tuple[str, str, str]], continuations: list[str], batch_size: int = 32) -> float:
    """Seconds per (prefix, mood, context) row that the steer stage will take to cache the LM's states over its
    continuation: what dglm_cli.lm_states does per batch (the states given the prefix and, for a steer with candidates,
    the teacher's log-probabilities given context + prefix), timed on these rows under the caller's precision."""
    from dglm_cli.corpus import Pair, tokenize_pairs

    pairs = tokenize_pairs([Pair(prefix, text, context) for (prefix, _, context), text in zip(rows, continuations)], decoder.tokenizer, CORPUS_TOKENS)
    empty = torch.zeros(batch_size, 0, decoder.config.embedding_dim, device=decoder.device)
    started = time.monotonic()
    for start in range(0, len(pairs), batch_size):
        prefix_ids, continuation_ids, teacher_ids, _ = (list(column) for column in zip(*pairs[start : start + batch_size]))
        states = decoder.continuation_states(prefix_ids, empty[: len(prefix_ids)], continuation_ids, STEER_CANDIDATES)
        if STEER_CANDIDATES:  # the teacher is cached over candidates only
            decoder.continuation_log_probs(teacher_ids, continuation_ids, states.candidates)
    return (time.monotonic() - started) / max(len(rows), 1)


def stage_distill(work: Path, minutes: float, seed: int, precision: str, batch_size: int = 64) -> None:
    """Append (prefix, continuation, mood, context) rows written by the decoder, each prefix (the first 3-8 words
    of a training sentence) once after a hidden positive and once after a hidden negative sentence (`context`,
    see MOODS), amplified by DISTILL_CFG, until this sitting's time plus the time caching all written rows will
    take would pass `minutes`."""
    from dglm_cli import assets
    from dglm_cli.rng import RecordRNG
    from dglm_cli.runs import load_training_decoder

    out, finished = work / "data" / "distilled.jsonl", work / "data" / "distilled.done"
    if finished.exists():
        return
    done = len(out.read_text(encoding="utf-8").splitlines()) if out.exists() else 0
    rng = random.Random(seed)
    sentences = training_sentences(work)
    prefixes = [" ".join(s.split()[: rng.randint(3, 8)]) for s in rng.sample(sentences, len(sentences))]
    rows = [(prefix, mood, rng.choice(MOODS[mood])) for prefix in prefixes for mood in MOODS]
    with assets.downloads_allowed():
        decoder = load_training_decoder({"kind": "named", "name": "smollm2-135m"})
    deadline, caching = time.monotonic() + minutes * 60, None  # caching: seconds per row, timed on the first batch
    autocast = torch.autocast(decoder.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with open(out, "a", encoding="utf-8") as f, torch.no_grad(), autocast:
        for start in range(done, len(rows), batch_size):
            if caching is not None and time.monotonic() + (start + batch_size) * caching > deadline:
                break
            batch = rows[start : start + batch_size]
            soft = torch.zeros(len(batch), 0, decoder.config.embedding_dim, device=decoder.device)
            seeds = list(range(seed * 10**6 + start, seed * 10**6 + start + len(batch)))
            hinted = [f"{context} {prefix}" for prefix, _, context in batch]
            continuations = decoder.generate(hinted, soft, RecordRNG(seeds, "tokens", decoder.device), CORPUS_TOKENS, 0.9, 0.8, 1.2,
                                             cfg=DISTILL_CFG, unconditional_prefixes=[prefix for prefix, _, _ in batch])
            for (prefix, mood, context), continuation in zip(batch, continuations):
                f.write(json.dumps({"prefix": prefix, "continuation": continuation, "mood": mood, "context": context}) + "\n")
            f.flush()
            if caching is None:
                caching = caching_seconds_per_pair(decoder, batch, continuations)
                print(f"caching the LM's states will take {caching:.3f} s per row", flush=True)
            print(f"distilled {start + len(batch)} / {len(rows)}", flush=True)
    finished.touch()
    print(f"distilled: {len(out.read_text(encoding='utf-8').splitlines())} documents", flush=True)


def stage_corpus(work: Path) -> Path:
    """JSONL: the distilled rows as explicit (prefix, continuation, context) pairs. The hidden sentence is the
    context only the steer's teacher reads; the mood label is not kept."""
    corpus = work / "data" / "pairs.jsonl"
    distilled = [json.loads(line) for line in (work / "data" / "distilled.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [json.dumps({"prefix": d["prefix"], "continuation": d["continuation"], "context": d["context"]})
             for d in distilled if d["continuation"].strip()]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus


def stage_classifiers(work: Path) -> None:
    for name in ("sentiment", "domain"):
        dglm("train-classifier", work / "data" / f"{name}.csv", "--name", f"default-{name}", "--force", "--quiet")


def stage_train(work: Path, corpus: Path, kind: str, minutes: float, steps: int, extra: list[str]) -> Path:
    run = work / "runs" / kind
    resume = ["--resume"] if (run / "run.json").exists() else []
    dglm(f"train-{kind}", corpus, "--run", run, "--max-steps", steps, "--time-budget", f"{minutes:.2f}", "--max-tokens", CORPUS_TOKENS,
         *extra, *resume)
    return run


def stage_export(work: Path, soft_prompt: bool) -> Path:
    bundle = work / "default"  # the directory name is the bundle's name
    runs = [work / "runs" / "diffusion"] + ([work / "runs" / "decoder"] if soft_prompt else [])
    dglm("export", *runs, "--out", bundle, "--force", "--half")
    for name in ("sentiment", "domain"):
        dglm("classifiers", "export", f"default-{name}", bundle, "--as", name, "--force")
        dglm("classifiers", "rm", f"default-{name}")  # saved copies would make `--attr positive` ambiguous
    return bundle


def stage_steer(work: Path, corpus: Path, bundle: Path, minutes: float, soft_prompt: bool) -> Path:
    run = work / "runs" / "steer"
    resume = ["--resume"] if (run / "run.json").exists() else [corpus, "--bundle", bundle, "--max-tokens", CORPUS_TOKENS, *STEER_FLAGS]
    dglm("train-steer", "--run", run, "--time-budget", f"{minutes:.2f}", *(["--soft-prompt"] if soft_prompt else []), *resume)
    return run


ATTRIBUTES = {"positive": ["--attr", "sentiment:positive"], "negative": ["--attr", "sentiment:negative"]}


def generate_and_score(bundle: Path, prompts: Path, samples: int, out: Path, *options: object) -> dict:
    """`dglm generate ... | dglm score`: the summary of the records written to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    dglm("generate", "--bundle", bundle, "--prompts", prompts, "-n", samples, "--max-new-tokens", CORPUS_TOKENS, "-o", out, "-q", *options)
    return json.loads(dglm("score", out, "--bundle", bundle, "--json", "-q", stdout=subprocess.PIPE).stdout)


def guided_rows(bundle: Path, prompts: Path, out_dir: Path, tag: str, point: dict, *options: object) -> list[dict]:
    """Generate 2 samples per prompt guided toward each of ATTRIBUTES with `options` and score them: one row per
    attribute, `point` with its VADER rate and perplexity median (records in OUT_DIR/ATTRIBUTE-TAG.jsonl)."""
    rows = []
    for name, attr in ATTRIBUTES.items():
        scored = generate_and_score(bundle, prompts, 2, out_dir / f"{name}-{tag}.jsonl", *options, *attr)["groups"][0]
        rows.append({**point, "attr": name, "vader": rate(scored, "vader", name), "ppl": scored["perplexity"]["median"]})
    print(json.dumps(rows), flush=True)
    return rows


def within_ppl(rows: list[dict], plain: float) -> bool:
    """Every row's perplexity within MAX_PPL_RATIO of the plain LM's."""
    return all(row["ppl"] <= MAX_PPL_RATIO * plain for row in rows)


def strength_prompts(work: Path, seed: int) -> Path:
    """WORK/eval/strength-prompts.txt: the first 3-8 words of STRENGTH_PROMPTS held-out VADER sentences."""
    rng = random.Random(seed)
    held_out = [json.loads(line)["text"] for line in (work / "data" / "vader_heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    prompts = work / "eval" / "strength-prompts.txt"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    prompts.write_text("".join(" ".join(t.split()[: rng.randint(3, 8)]) + "\n" for t in rng.sample(held_out, STRENGTH_PROMPTS)), encoding="utf-8")
    return prompts


def measuring_units(samples: int) -> float:
    """How many probe units (STRENGTH_PROMPTS × 2 guided records generated and scored) stages 10-12 do: the plain LM
    and each strength toward both attributes, each further guidance scale toward both, and the evaluation's three
    runs of `samples` records per neutral prompt."""
    neutral = len(NEUTRAL_PROMPTS.read_text(encoding="utf-8").splitlines())
    return 1 + 2 * len(STRENGTHS) + 2 * (len(GUIDANCE_SCALES) - 1) + 3 * samples * neutral / (2 * STRENGTH_PROMPTS)


def stage_probe(work: Path, seed: int) -> float:
    """Seconds one measuring unit takes on this machine, timed with the packaged default bundle (a steer of the same
    shape as the one this build trains), subprocesses and model loading included."""
    started = time.monotonic()
    generate_and_score(PACKAGE_BUNDLE, strength_prompts(work, seed), 2, work / "eval" / "probe.jsonl", *ATTRIBUTES["positive"])
    return time.monotonic() - started


def distill_minutes(work: Path, total: float, shares: dict[str, float], unit_seconds: float, samples: int) -> float:
    """The distill stage's minutes in this sitting (its caching included): the budget less the time the build has
    spent so far (earlier sittings of the distill stage included), the training shares, the measuring stages'
    reservation and MARGIN."""
    timings = json.loads((work / "timings.json").read_text(encoding="utf-8")) if (work / "timings.json").exists() else {}
    spent = sum(timings.values())
    return total * (1 - sum(shares.values()) - MARGIN) - spent - unit_seconds * measuring_units(samples) / 60


def stage_strength(work: Path, run: Path, bundle: Path, seed: int) -> tuple[float, list[dict]]:
    """Export the steer at the largest of STRENGTHS whose guided text (both attributes) stays within MAX_PPL_RATIO
    of the plain LM's perplexity, on prefixes of held-out VADER sentences; the measured curve is returned."""
    prompts = strength_prompts(work, seed)
    dglm("export", run, "--out", bundle, "--force", "--half")
    plain = generate_and_score(bundle, prompts, 2, work / "eval" / "strength" / "plain.jsonl", "--steer", 0)["groups"][0]
    curve = [{"steer": 0.0, "attr": "none", "vader": rate(plain, "vader", "positive"), "ppl": plain["perplexity"]["median"]}]
    for strength in STRENGTHS:
        curve += guided_rows(bundle, prompts, work / "eval" / "strength", f"{strength:g}", {"steer": strength}, "--steer", strength)
    fluent = [s for s in STRENGTHS if within_ppl([p for p in curve if p["steer"] == s], curve[0]["ppl"])]
    chosen = max(fluent, default=min(STRENGTHS))
    dglm("export", run, "--out", bundle, "--force", "--half", "--steer-strength", chosen)
    return chosen, curve


def stage_guidance(work: Path, run: Path, bundle: Path, chosen: float, curve: list[dict]) -> tuple[float, list[dict]]:
    """Export the steer with the guidance scale, of GUIDANCE_SCALES, whose guided text has the asked sentiment most
    often (the mean of both attributes' VADER rates; ties: the smaller scale) within MAX_PPL_RATIO of the plain LM's
    perplexity, on the strength stage's prefixes at the chosen strength; the measured rows are returned."""
    prompts, plain = work / "eval" / "strength-prompts.txt", curve[0]["ppl"]
    rows = [{**point, "guidance": DEFAULT_GUIDANCE_SCALE} for point in curve if point["steer"] == chosen]
    for scale in GUIDANCE_SCALES[1:]:
        rows += guided_rows(bundle, prompts, work / "eval" / "guidance", f"{scale:g}", {"steer": chosen, "guidance": scale},
                            "--steer", chosen, "--guidance", scale)

    def merit(scale: float) -> float:
        measured = [row for row in rows if row["guidance"] == scale]
        return sum(row["vader"] for row in measured) / len(measured) if within_ppl(measured, plain) else -1.0

    best = max(GUIDANCE_SCALES, key=merit)  # the first of equals: the smaller scale
    dglm("export", run, "--out", bundle, "--force", "--half", "--steer-strength", chosen, "--steer-guidance", best)
    return best, rows


def stage_evaluate(work: Path, bundle: Path, samples: int) -> dict:
    results = {name: generate_and_score(bundle, NEUTRAL_PROMPTS, samples, work / "eval" / f"{name}.jsonl", *attr)
               for name, attr in {"unguided": [], **ATTRIBUTES}.items()}
    (work / "eval" / "summary.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def rate(group: dict, scorer: str, label: str) -> float:
    return group["attributes"][scorer][label]["rate"]


def evaluation_card(results: dict, samples: int) -> str:
    """Markdown: the held-out evaluation against the targets of the default bundle."""
    plain_ppl = results["unguided"]["groups"][0]["perplexity"]["median"]
    lines = ["## Evaluation", "",
             f"Held-out neutral prompts (`examples/prompts/neutral.txt`, never trained on), {samples} samples each, 24 new",
             "tokens, default generation settings. VADER is independent of the guiding classifier; perplexity is",
             "under the plain decoder given the prompt.", "",
             "| run | VADER positive | VADER negative | classifier positive | perplexity median | × unguided | distinct-3 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, summary in results.items():
        group = summary["groups"][0]
        ppl = group["perplexity"]["median"]
        lines.append(f"| {name} | {rate(group, 'vader', 'positive'):.2f} | {rate(group, 'vader', 'negative'):.2f} | "
                     f"{rate(group, 'clf:sentiment', 'positive'):.2f} | {ppl:.1f} | {ppl / plain_ppl:.2f} | {group['distinct_3'] or 0:.2f} |")
    lines += ["", "Targets: `--attr positive` ≥ 0.90 VADER positive, `--attr negative` ≥ 0.80 VADER negative, perplexity",
              "≤ 1.3× unguided, distinct-3 ≥ 0.8.", ""]
    return "\n".join(lines)


def strength_card(chosen: float, curve: list[dict]) -> str:
    """Markdown: the steering-perplexity curve that picked the steer's default strength."""
    plain = curve[0]["ppl"]
    lines = ["## Steer strength", "",
             f"{STRENGTH_PROMPTS} prefixes of held-out VADER sentences, 2 samples each, 24 new tokens, guided toward each sentiment.",
             f"The default strength is the largest whose perplexity stays within {MAX_PPL_RATIO}× the plain LM's "
             f"(steer 0, unguided: {plain:.1f}): **{chosen:g}**.", "",
             "| steer | attribute | VADER rate of the attribute | perplexity median | × plain |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {p['steer']:g} | {p['attr']} | {p['vader']:.2f} | {p['ppl']:.1f} | {p['ppl'] / plain:.2f} |" for p in curve[1:]]
    return "\n".join(lines + [""])


def guidance_card(best: float, rows: list[dict], plain: float) -> str:
    """Markdown: the guidance scales tried with the steer, and the one the bundle uses by default."""
    lines = ["## Guidance scale", "",
             f"The same prefixes at steer {rows[0]['steer']:g}. The default scale while the steer is on is the one whose guided text",
             f"has the asked sentiment most often (mean of both attributes) within {MAX_PPL_RATIO}× the plain LM's perplexity: **{best:g}**.", "",
             "| guidance | attribute | VADER rate of the attribute | perplexity median | × plain |", "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['guidance']:g} | {r['attr']} | {r['vader']:.2f} | {r['ppl']:.1f} | {r['ppl'] / plain:.2f} |" for r in rows]
    return "\n".join(lines + [""])


def trained_card(work: Path, bundle: Path) -> str:
    """The card the export and steer stages left in the bundle, title dropped. It is kept in WORK the first time,
    because the build then replaces the bundle's card: a rerun (such as --install after the build) must not wrap
    the finished card again."""
    kept = work / "stages" / "trained-card.md"
    if not kept.exists():
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text((bundle / "README.md").read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")
    return kept.read_text(encoding="utf-8")


CARD_INTRO = """# dglm default bundle

SmolLM2-135M-Instruct guided by all-MiniLM-L6-v2 continuation embeddings, with classifiers for
sentiment (`positive`/`negative`) and the text domain of the VADER data (`movie`, `tweet`, `amazon`,
`nyt`). The latent reaches the text through a latent steer on SmolLM2's output{soft_prompt}. Whether and
how much it steers is measured in the evaluation at the end. Built on {machine} by
`python scripts/build_default_bundle.py{flags}` with dglm's own commands, in {minutes:.0f} minutes:

- data: the VADER human-rated sentences from the `vaderSentiment==3.3.2` sdist (sha256-checked),
  90% for training; the first 3-8 words of each training sentence continued by SmolLM2 itself, once
  after a hidden positive and once after a hidden negative sentence (classifier-free guidance g = 2 on
  that sentence), kept as (prefix, continuation, hidden sentence) triples; the other 10% and
  `examples/prompts/neutral.txt` are never trained on;
- classifiers: `dglm train-classifier` on the training split (labels: valence > 0 / < 0; the domain);
- heads: `dglm train-diffusion --preset small`{decoder}; `dglm train-steer {steer_flags}` on the frozen
  LM's cached states (SmolLM2 itself is fetched from PyPI on first use).

Steps, examples and validation losses of the runs follow; the strength curve and the evaluation are at the end.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "default-bundle", help="working directory")
    parser.add_argument("--time-budget", type=float, default=115, help="minutes for the whole build")
    parser.add_argument("--diffusion-steps", type=int, default=None, help="default: 700 on CPU, 20000 on CUDA")
    parser.add_argument("--soft-prompt", action="store_true", help="also train a soft prompt (train-decoder); the steer is trained with it in place")
    parser.add_argument("--decoder-steps", type=int, default=None, help="with --soft-prompt; default: 450 on CPU, 6000 on CUDA")
    parser.add_argument("--samples", type=int, default=4, help="samples per held-out prompt in the evaluation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--install", action="store_true", help=f"copy the bundle to {PACKAGE_BUNDLE.relative_to(ROOT)}")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda or cpu_has_native_bf16() else "fp32"  # emulated bf16 is far slower than fp32
    machine = torch.cuda.get_device_name() if cuda else describe_cpu()
    print(f"building on {machine}; precision {precision}", flush=True)
    shares = SOFT_PROMPT_SHARES if args.soft_prompt else SHARES
    budget = {stage: share * args.time_budget for stage, share in shares.items()}
    work = args.work
    once(work, "data", stage_data, work, args.seed)
    once(work, "classifiers", stage_classifiers, work)
    unit = once(work, "probe", stage_probe, work, args.seed)
    distill_share = distill_minutes(work, args.time_budget, shares, unit, args.samples)
    print(f"measuring stages: {unit * measuring_units(args.samples) / 60:.1f} min reserved ({unit:.1f} s per unit); "
          f"distill and caching: {distill_share:.1f} min", flush=True)
    once(work, "distill", stage_distill, work, distill_share, args.seed, precision)
    corpus = Path(once(work, "corpus", stage_corpus, work))
    once(work, "diffusion", stage_train, work, corpus, "diffusion", budget["diffusion"], args.diffusion_steps or (20_000 if cuda else 700),
         ["--preset", "small", "--batch-size", 128, "--warmup", 100, "--eval-every", 100, "--save-every", 100])
    decoder_flags = DECODER_FLAGS["cuda" if cuda else "cpu"]
    if args.soft_prompt:
        once(work, "decoder", stage_train, work, corpus, "decoder", budget["decoder"], args.decoder_steps or (6000 if cuda else 450),
             ["--preset", "small", "--precision", precision, "--eval-every", 75, "--save-every", 75, *decoder_flags])
    bundle = Path(once(work, "export", stage_export, work, args.soft_prompt))
    run = Path(once(work, "steer", stage_steer, work, corpus, bundle, budget["steer"], args.soft_prompt))
    chosen, curve = once(work, "strength", stage_strength, work, run, bundle, args.seed)
    scale, scale_rows = once(work, "guidance", stage_guidance, work, run, bundle, chosen, curve)
    results = once(work, "evaluate", stage_evaluate, work, bundle, args.samples)
    timings = json.loads((work / "timings.json").read_text(encoding="utf-8"))
    minutes = sum(timings.values())
    trained = trained_card(work, bundle)
    intro = CARD_INTRO.format(
        soft_prompt=" and a soft prompt" if args.soft_prompt else " (no soft prompt)", machine=machine, minutes=minutes,
        flags=" --soft-prompt" if args.soft_prompt else "", steer_flags=" ".join(map(str, STEER_FLAGS)),
        decoder=f", `dglm train-decoder --preset small {' '.join(map(str, decoder_flags))}`" if args.soft_prompt else "")
    stages = "Wall time per stage (minutes, summed over the build's sittings): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) + ".\n\n"
    write_model_card(bundle, intro + stages + trained.strip() + "\n\n" + strength_card(chosen, curve) + "\n"
                     + guidance_card(scale, scale_rows, curve[0]["ppl"]) + "\n" + evaluation_card(results, args.samples))
    print(json.dumps({name: r["groups"][0]["attributes"] for name, r in results.items()}, indent=1))
    print(f"built {bundle} in {minutes:.1f} min on {machine}", flush=True)
    if args.install:
        shutil.rmtree(PACKAGE_BUNDLE, ignore_errors=True)
        shutil.copytree(bundle, PACKAGE_BUNDLE)
        print(f"installed into {PACKAGE_BUNDLE}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
