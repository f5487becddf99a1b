"""`dglm generate`: guided continuations as JSONL."""

import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from dglm_cli.cli._common import DEFAULT_BUNDLE, bundle_name, progress, quiet_libraries, stderr, user_errors
from dglm_cli.cli._options import (
    PROMPTS_FILE_HELP,
    BundleName,
    Cfg,
    DecoderCfg,
    Device,
    MaxNewTokens,
    McSamples,
    Quiet,
    Sampler,
    Steer,
    Steps,
    TopP,
)


@user_errors
def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt (repeatable).")] = [],
    prompts: Annotated[str | None, typer.Option(help=PROMPTS_FILE_HELP)] = None,
    attr: Annotated[list[str], typer.Option("--attr", "-a", help="Steer toward an attribute: LABEL, LABEL:WEIGHT or CLASSIFIER:LABEL[:WEIGHT] (repeatable).")] = [],
    avoid: Annotated[list[str], typer.Option(help="Steer away from an attribute, same syntax as --attr (repeatable).")] = [],
    guidance: Annotated[float | None, typer.Option(help="Classifier-guidance scale s (0 = unguided; default: the bundle's steer's, else 7).")] = None,
    cfg: Cfg = 1.0,
    decoder_cfg: DecoderCfg = 1.0,
    steer: Steer = None,
    steps: Steps = 20,
    sampler: Sampler = "ddpm",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="Samples per prompt.")] = 1,
    max_new_tokens: MaxNewTokens = 32,
    top_p: TopP = 0.9,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 1.0,
    repetition_penalty: Annotated[float, typer.Option(help="CTRL repetition penalty on generated tokens (1 = off).")] = 1.2,
    mc_samples: McSamples = 32,
    aggregate: Annotated[str, typer.Option(help="Monte-Carlo loss aggregate: lgd (mean probability) or harmonic (official code).")] = "lgd",
    guidance_gradient: Annotated[str, typer.Option(help="fast: skip the backward pass through the denoiser (about the cost of unguided sampling); full: backpropagate the guidance loss through it (paper).")] = "fast",
    renoise: Annotated[float | None, typer.Option(help="α² at which the proposal is re-noised for the prompt generator (default: the bundle's).")] = None,
    seed: Annotated[int, typer.Option(help="Base seed; record i gets seed + i, so every record is reproducible alone.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Records generated together.")] = 16,
    device: Device = "auto",
    bundle: BundleName = DEFAULT_BUNDLE,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Append records to this file, skipping those already in it (resume).")] = None,
    quiet: Quiet = False,
) -> None:
    """Generate continuations, one JSONL record per sample, steered toward (or away from) attributes.

    Examples:

      dglm generate --prompt "The restaurant on the corner" --attr positive

      dglm generate --prompts prompts.txt --attr positive:2 --avoid formal -n 4 -o out.jsonl
    """
    from dglm_cli.attributes import AttributeSpec
    from dglm_cli.errors import InputError
    from dglm_cli.records import Prompt, RecordsOutput, read_prompts

    if not prompt and prompts is None:
        raise InputError("give --prompt TEXT or --prompts FILE ('-' reads stdin)")
    for text in [*attr, *avoid]:
        AttributeSpec.parse(text)  # a malformed attribute fails before torch loads
    items = [Prompt(str(i), text) for i, text in enumerate(prompt)]
    if prompts is not None:
        items += read_prompts(prompts, start=len(items))
    from dglm_cli.pipeline import GenerationSettings

    settings = GenerationSettings(
        num_samples=num_samples, guidance_scale=guidance, cfg=cfg, decoder_cfg=decoder_cfg, steps=steps, sampler=sampler,
        max_new_tokens=max_new_tokens, top_p=top_p, temperature=temperature,
        repetition_penalty=repetition_penalty, mc_samples=mc_samples, aggregate=aggregate,
        guidance_gradient=guidance_gradient,
        renoise_alpha2=renoise, steer=steer, seed=seed, batch_size=batch_size,
    )
    settings.validate()
    sink = RecordsOutput.open(output) if output else None  # fails before any model loads; locked until closed
    started = time.perf_counter()
    try:
        written = _generate(items, attr, avoid, settings, bundle, device, sink, quiet)
    finally:
        if sink is not None:
            sink.close()
    if not quiet:
        already = len(items) * num_samples - written
        skipped = f", {already} already in {output}" if already else ""
        stderr.print(f"{written} records in {time.perf_counter() - started:.1f} s{skipped}")


def _generate(items, attr, avoid, settings, bundle, device, sink, quiet) -> int:
    """Load the bundle and write the records not yet in `sink` (stdout when None); the number written."""
    quiet_libraries()
    from dglm_cli import assets
    from dglm_cli.cli.fetch import stage_lines
    from dglm_cli.pipeline import Pipeline
    from dglm_cli.records import JsonlAppender

    with assets.downloads_allowed(stage_lines(quiet)):
        with stderr.status("loading bundle", spinner="dots") if not quiet else nullcontext():
            pipeline = Pipeline.from_bundle(bundle_name(bundle), device)
    bar = progress(quiet)
    task = bar.add_task("generating", total=len(items) * settings.num_samples)
    skip = sink.ids if sink is not None else set()
    stream = pipeline.generate(items, attr, avoid, settings, skip, lambda n: bar.advance(task, n))
    writer = sink or JsonlAppender(sys.stdout, sync=False)
    written = 0
    with bar:
        for record in stream:
            writer.write(record)
            written += 1
    return written

