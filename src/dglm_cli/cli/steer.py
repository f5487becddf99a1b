"""`dglm train-steer`: the latent steer of a bundle, trained on cached states of its frozen decoder."""

from pathlib import Path
from typing import Annotated

import typer

from dglm_cli.cli._common import progress, quiet_libraries, user_errors
from dglm_cli.cli._options import Quiet
from dglm_cli.cli.train import Budget, Corpus, Resume, Run, Seed, ValSize, Warmup, cached_corpus_progress, resume_trainer, run_with_progress


@user_errors
def train_steer(
    corpus: Corpus = None,
    bundle: Annotated[str, typer.Option(help="The bundle whose decoder the steer conditions (directory or name).")] = "default",
    run: Run = Path("runs/steer"),
    soft_prompt: Annotated[bool, typer.Option("--soft-prompt/--no-soft-prompt", help="Take the LM's states with the bundle's soft prompt in place (the two conditionings compose), or without it (the steer replaces it).")] = False,
    candidates: Annotated[int, typer.Option(help="K: the steer re-ranks the LM's K most probable next tokens (0 = the whole vocabulary).")] = 64,
    rank: Annotated[int, typer.Option(help="Width of the steer's hidden-state × latent interaction.")] = 256,
    strength: Annotated[float, typer.Option(help="Default --steer strength stored with the steer.")] = 1.0,
    kl_weight: Annotated[float, typer.Option(help="Weight of KL(steered ‖ LM) over the candidates beside the target's cross-entropy.")] = 0.0,
    teacher_weight: Annotated[float, typer.Option(help="For pairs with a hidden 'context': the share of the loss that asks for the LM's own distribution given context + prefix (the teacher) instead of the target token.")] = 1.0,
    teacher_cfg: Annotated[float, typer.Option(help="Amplify the teacher like classifier-free guidance: log p + g·(log p_teacher − log p).")] = 1.0,
    contrast_cfg: Annotated[float, typer.Option(help="For pairs with a 'contrast' (a hidden context the continuation was not written after): also push the teacher away from the LM given contrast + prefix, + g_c·(log p_teacher − log p_contrast), like a negative prompt (0 = off; one more LM pass per example when caching).")] = 0.0,
    epochs: Annotated[int, typer.Option(help="Passes over the training split (the cosine schedule ends here).")] = 10,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation loss (0 = never); the best steer is exported.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Corpus rows per step (all their continuation tokens).")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    warmup: Warmup = 100,
    max_tokens: Annotated[int, typer.Option(help="Continuation tokens kept per example (the length generation writes).")] = 24,
    val_size: ValSize = 256,
    time_budget: Budget = None,
    seed: Seed = 0,
    resume: Resume = False,
    quiet: Quiet = False,
) -> None:
    """Train a latent steer for a bundle: h + s·steer(h, z) on the decoder's final hidden state h.

    The LM's states over the corpus are cached once (under DGLM_HOME/corpora/, resumable); the steer then
    trains for many epochs on them without backpropagating through the LM. Validation reports the loss
    over the candidates with the true latent, a shuffled latent and no steer. Add the result to the
    bundle with `dglm export RUN --out BUNDLE`.
    """
    quiet_libraries()
    from dglm_cli import assets
    from dglm_cli.cli.fetch import stage_lines
    from dglm_cli.corpus import CorpusConfig
    from dglm_cli.errors import InputError
    from dglm_cli.steer import SteerConfig
    from dglm_cli.steer_runs import create_steer_run, load_steer_run, steer_trainer
    from dglm_cli.training import TrainConfig

    with assets.downloads_allowed(stage_lines(quiet)):
        if resume:
            spec = load_steer_run(run)
        else:
            if corpus is None:
                raise InputError("give a CORPUS file ('-' for stdin), or --resume an existing run")
            steer = SteerConfig(rank=rank, candidates=candidates, strength=strength, soft_prompt=soft_prompt)
            config = TrainConfig(batch_size=batch_size, lr=lr, warmup_steps=warmup, kl_weight=kl_weight, teacher_weight=teacher_weight,
                                 teacher_cfg=teacher_cfg, contrast_cfg=contrast_cfg, patience=patience, seed=seed, weight_decay=0.01, ema_beta=0.999)
            corpus_config = CorpusConfig(max_tokens=max_tokens, val_size=val_size, seed=seed)
            with cached_corpus_progress(quiet) as report:
                spec = create_steer_run(run, corpus, bundle, steer, config, corpus_config, epochs, on_encode=report)
        bar = progress(quiet)
        with bar:
            task = bar.add_task("caching LM states", total=None)
            trainer = steer_trainer(run, spec, lambda done, total: bar.update(task, completed=done, total=total))
        if resume:
            resume_trainer(trainer, run, quiet)
        run_with_progress(trainer, spec.train_config.max_steps, time_budget, quiet)

