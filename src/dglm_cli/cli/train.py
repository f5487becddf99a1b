"""`dglm train-diffusion`, `dglm train-decoder` and `dglm export`."""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from dglm_cli import assets
from dglm_cli.cli._common import quiet_libraries, stderr, user_errors
from dglm_cli.cli._options import Force, Quiet

DEFAULT_ENCODER = f"package:{assets.DEFAULT_ENCODER['package']}/{assets.DEFAULT_ENCODER['subpath']}"  # as typed on the command line
DEFAULT_DECODER = assets.DEFAULT_DECODER["name"]

Corpus = Annotated[str | None, typer.Argument(help="Text file (one document per line), JSONL with a 'text' field (or 'prefix' and 'continuation' fields: an explicit pair, not split), or '-'. Not needed with --resume.")]
Run = Annotated[Path, typer.Option("--run", help="Run directory (created, or continued with --resume).")]
FromBundle = Annotated[str | None, typer.Option("--bundle", help="Take the encoder and decoder from this bundle.")]
Encoder = Annotated[str, typer.Option(help="Sentence encoder: a directory, a Hub id (org/name[@rev]) or package:NAME/SUBPATH.")]
Decoder = Annotated[str, typer.Option(help="Causal LM: a directory, a Hub id, or a named asset (see dglm fetch).")]
Preset = Annotated[str, typer.Option(help="Model size: tiny, small, base or paper.")]
MaxSteps = Annotated[int | None, typer.Option(help="Total optimiser steps of the run; the cosine schedule ends here (with --resume: extends the run). Default 20000 (diffusion), 5000 (decoder).")]
Budget = Annotated[float | None, typer.Option("--time-budget", help="Stop after this many minutes (a checkpoint is saved).")]
Batch = Annotated[int, typer.Option(help="Examples per step and process.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")]
Seed = Annotated[int, typer.Option(help="Seed of data order, splits and noise.")]
Warmup = Annotated[int, typer.Option(help="Linear warm-up steps.")]
EvalEvery = Annotated[int, typer.Option(help="Validate every N steps.")]
SaveEvery = Annotated[int, typer.Option(help="Checkpoint every N steps.")]
Precision = Annotated[str, typer.Option(help="auto (bf16 autocast on CUDA), fp32 or bf16.")]
MaxTokens = Annotated[int, typer.Option(help="Chunk length in decoder tokens.")]
MinTokens = Annotated[int, typer.Option(help="Shortest chunk kept.")]
Splits = Annotated[int, typer.Option(help="Random (prefix, continuation) splits per chunk.")]
ValSize = Annotated[int, typer.Option(help="Held-out examples for validation.")]


@dataclass
class TrainRequest:
    """One training command as given: what to train, on what, where, for how long."""

    kind: str
    corpus: str | None
    run_dir: Path
    bundle: str | None
    encoder: str
    decoder: str
    preset: str
    config: Any  # TrainConfig
    corpus_config: Any  # CorpusConfig
    resume: bool
    budget_minutes: float | None
    quiet: bool
    max_steps: int | None  # as given on the command line (with --resume: extends the run)
    init_from: Path | None = None  # a new run starts from this run's latest weights


def _corpus_config(max_tokens, min_tokens, splits, val_size, seed):
    from dglm_cli.corpus import CorpusConfig

    return CorpusConfig(max_tokens=max_tokens, min_tokens=min_tokens, splits_per_chunk=splits, val_size=val_size, seed=seed)


@user_errors
def train_diffusion(
    corpus: Corpus = None,
    run: Run = Path("runs/diffusion"),
    bundle: FromBundle = None,
    encoder: Encoder = DEFAULT_ENCODER,
    decoder: Decoder = DEFAULT_DECODER,
    preset: Preset = "small",
    max_steps: MaxSteps = None,
    time_budget: Budget = None,
    batch_size: Batch = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Warmup = 500,
    eval_every: EvalEvery = 500,
    save_every: SaveEvery = 500,
    precision: Precision = "auto",
    max_tokens: MaxTokens = 64,
    min_tokens: MinTokens = 4,
    splits_per_chunk: Splits = 1,
    val_size: ValSize = 256,
    seed: Seed = 0,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train the denoiser: p(embedding of the continuation | embedding of the prefix).

    v-prediction on a cosine schedule, adaptive log-SNR importance sampling with the asymmetric loss
    weight, 10% prefix dropout (for classifier-free guidance), EMA weights, AdamW with warm-up and
    cosine decay. Runs under `accelerate launch` unchanged.
    """
    from dglm_cli.training import TrainConfig

    config = TrainConfig(max_steps=max_steps or 20_000, batch_size=batch_size, lr=lr, warmup_steps=warmup, eval_every=eval_every,
                         save_every=save_every, precision=precision, seed=seed, weight_decay=0.1, adam_beta2=0.999)
    corpus_config = _corpus_config(max_tokens, min_tokens, splits_per_chunk, val_size, seed)
    _train(TrainRequest("diffusion", corpus, run, bundle, encoder, decoder, preset, config, corpus_config, resume, time_budget, quiet, max_steps))


@user_errors
def train_decoder(
    corpus: Corpus = None,
    run: Run = Path("runs/decoder"),
    bundle: FromBundle = None,
    encoder: Encoder = DEFAULT_ENCODER,
    decoder: Decoder = DEFAULT_DECODER,
    preset: Preset = "small",
    max_steps: MaxSteps = None,
    time_budget: Budget = None,
    batch_size: Batch = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate of the prompt generator.")] = 3e-4,
    train_lm: Annotated[bool, typer.Option("--train-lm", help="Fine-tune the language model too.")] = False,
    lora_rank: Annotated[int, typer.Option(help="Fine-tune the language model through low-rank adapters of this rank (0 = off); the bundle ships only the adapters.")] = 0,
    lm_lr: Annotated[float, typer.Option(help="Learning rate of the language model with --train-lm or --lora-rank.")] = 3e-5,
    bag_of_words_weight: Annotated[float, typer.Option(help="Weight of an auxiliary loss asking the LM's predictions at the soft positions to cover the continuation's tokens (0 = off).")] = 0.0,
    init_from: Annotated[Path | None, typer.Option(help="Start a new run from this decoder run's latest weights, or from a bundle's prompt generator and adapters.")] = None,
    warmup: Warmup = 200,
    eval_every: EvalEvery = 250,
    save_every: SaveEvery = 250,
    precision: Precision = "auto",
    max_tokens: MaxTokens = 64,
    min_tokens: MinTokens = 4,
    splits_per_chunk: Splits = 1,
    val_size: ValSize = 256,
    seed: Seed = 0,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train the prompt generator through the decoder (Gaussian noise augmentation of the latent).

    The decoder is frozen unless --train-lm (all weights) or --lora-rank R (low-rank adapters, a small
    delta that export ships instead of a copy of the LM). Validation reports the continuation loss with the true
    latent, with a shuffled latent and with no soft prompt: the gap is how much the soft prompt steers.
    """
    from dglm_cli.training import TrainConfig

    config = TrainConfig(max_steps=max_steps or 5_000, batch_size=batch_size, lr=lr, lm_lr=lm_lr, train_lm=train_lm, lora_rank=lora_rank,
                         bag_of_words_weight=bag_of_words_weight,
                         warmup_steps=warmup,
                         eval_every=eval_every, save_every=save_every, precision=precision, seed=seed, weight_decay=0.02, adam_beta2=0.99)
    corpus_config = _corpus_config(max_tokens, min_tokens, splits_per_chunk, val_size, seed)
    _train(TrainRequest("decoder", corpus, run, bundle, encoder, decoder, preset, config, corpus_config, resume, time_budget, quiet, max_steps, init_from))


def _train(request: TrainRequest) -> None:
    quiet_libraries()
    from accelerate import PartialState

    from dglm_cli.cli.fetch import stage_lines

    state = PartialState()
    request.quiet = request.quiet or not state.is_main_process
    with assets.downloads_allowed(stage_lines(request.quiet)):
        _train_in_process(state, request)


def _train_in_process(state, r: TrainRequest) -> None:
    from dglm_cli.runs import open_run

    r.config.validate()  # before the bf16 warning
    _warn_about_emulated_bf16(r.config.precision, r.quiet)
    opened = open_run(
        r.run_dir, r.kind, r.config, resume=r.resume, max_steps=r.max_steps, corpus=r.corpus, corpus_config=r.corpus_config,
        bundle=r.bundle, encoder=r.encoder, decoder=r.decoder, preset=r.preset, init_from=r.init_from, state=state,
        encode_corpus=lambda *args: _cached_corpus(*args, r.quiet),
    )
    if r.resume:
        report_resume(opened.resumed, opened.trainer, r.run_dir, r.quiet)
    run_with_progress(opened.trainer, opened.spec.train_config.max_steps, r.budget_minutes, r.quiet)


def resume_trainer(trainer, run_dir: Path, quiet: bool) -> None:
    """Continue a run from its last checkpoint, or say that it starts over (killed before its first)."""
    report_resume(trainer.resume(), trainer, run_dir, quiet)


def report_resume(resumed: bool, trainer, run_dir: Path, quiet: bool) -> None:
    if quiet:
        return
    if resumed:
        stderr.print(f"resumed {run_dir} at step {trainer.step}")
    else:
        stderr.print(f"{run_dir} has no checkpoint yet: starting over at step 0 (its metrics were cleared)")


def _warn_about_emulated_bf16(precision: str, quiet: bool) -> None:
    import torch

    from dglm_cli.devices import cpu_has_native_bf16

    if precision == "bf16" and not torch.cuda.is_available() and not cpu_has_native_bf16() and not quiet:
        stderr.print("warning: this CPU has no native bf16 (AVX-512 BF16 or AMX); bf16 autocast is emulated here and "
                     "much slower than --precision fp32")


def _cached_corpus(corpus_path, encoder_ref, decoder_ref, corpus_config, quiet):
    """The encoded corpus from the cache, or encoded now with a progress bar."""
    from dglm_cli.runs import cached_corpus

    with cached_corpus_progress(quiet) as report:
        directory, dim, built = cached_corpus(corpus_path, encoder_ref, decoder_ref, corpus_config, report)
    if built and not quiet:
        stderr.print(f"cached the encoded corpus in {directory}")
    return directory, dim


@contextmanager
def cached_corpus_progress(quiet: bool):
    """A `report(done, total)` for corpus encoding whose bar appears only when there is something to encode."""
    from dglm_cli.cli._common import progress

    bar, task = progress(quiet), None

    def report(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("encoding corpus", total=total)
        bar.update(task, completed=done)

    try:
        yield report
    finally:
        bar.stop()


def run_with_progress(trainer, max_steps: int, budget_minutes: float | None, quiet: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(f"{trainer.kind}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, disable=quiet) as bar:
        task = bar.add_task("train", total=max_steps, completed=trainer.step, status="")

        def report(step_report):
            loss = step_report.metrics.get("loss", float("nan"))
            bar.update(task, completed=step_report.step, status=f"loss {loss:.4f} · {step_report.examples_per_s:.1f} ex/s")
            if not quiet and any(k.startswith("val_") for k in step_report.metrics):
                values = {k: v for k, v in step_report.metrics.items() if k.startswith("val_")}
                bar.console.print(f"step {step_report.step}: " + ", ".join(f"{k[4:]} {v:.4f}" for k, v in values.items()))

        trainer.train(max_steps, budget_minutes * 60 if budget_minutes else None, report)
    if not quiet:
        stderr.print(f"checkpoint at step {trainer.step} in {trainer.run_dir / 'checkpoints'}")


@user_errors
def export(
    runs: Annotated[list[Path], typer.Argument(help="A diffusion run with a decoder run (or alone: the bundle writes with the plain LM, no soft prompt), and/or a steer run.")],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    force: Force = False,
    half: Annotated[bool, typer.Option("--half", help="Store the heads and adapters as float16 (half the size; loaded as float32).")] = False,
    steer_strength: Annotated[float | None, typer.Option(help="The exported steer's default --steer strength (default: the run's --strength).")] = None,
    steer_guidance: Annotated[float | None, typer.Option(help="The classifier-guidance scale generation uses by default while the exported steer is on (default: the run's, or 7).")] = None,
) -> None:
    """Export the EMA weights of a diffusion run and a decoder run as a bundle (a diffusion run alone: the
    decoder's LM as it is, no soft prompt); a steer run's best steer goes into that bundle, or alone into
    the existing bundle OUT it was trained for."""
    quiet_libraries()
    from dglm_cli.errors import InputError
    from dglm_cli.runs import export_bundle
    from dglm_cli.steer_runs import export_steer, is_steer_run

    steers = [r for r in runs if is_steer_run(r)]
    heads = [r for r in runs if r not in steers]
    if len(steers) > 1:
        raise InputError(f"{len(steers)} steer runs given; a bundle holds one steer")
    path = export_bundle(heads, out, overwrite=force, half=half) if heads else out
    if steers:
        export_steer(steers[0], path, overwrite=force or bool(heads), half=half, strength=steer_strength, guidance_scale=steer_guidance)
    elif steer_strength is not None or steer_guidance is not None:
        raise InputError(f"{'--steer-strength' if steer_strength is not None else '--steer-guidance'} needs a steer run to export")
    stderr.print(f"exported {', '.join(map(str, runs))}")
    typer.echo(str(path))
