"""Steer runs: `dglm train-steer` and the export of a trained steer into its bundle, as library functions.

A steer is trained for one bundle: on the states of that bundle's decoder (its adapters merged, its soft
prompt in place or not), in that bundle's latent space.

<run>/run.json      kind "steer", the bundle and the identity of the parts the steer depends on, the corpus
                    cache, the LM-state cache and the steer, training and caching settings
<run>/metrics.jsonl, <run>/checkpoints/   as for the other runs (dglm_cli.training, dglm_cli.checkpoints)
"""

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from dglm_cli import assets
from dglm_cli.bundle import Bundle, add_steer, bundle_decoder_config, find_bundle, load_bundle, read_manifest, write_model_card
from dglm_cli.checkpoints import load_checkpoint
from dglm_cli.config import config_from_dict
from dglm_cli.corpus import CorpusConfig, LatentCorpus, load_corpus
from dglm_cli.errors import BundleError, InputError
from dglm_cli.files import read_json, write_json
from dglm_cli.lm_states import StateCacheConfig, cache_states, load_states, states_key
from dglm_cli.rng import RecordRNG
from dglm_cli.runs import RUN_FILE, bundle_references, cached_corpus, default_device, last_metrics
from dglm_cli.schedule import diffuse
from dglm_cli.steer import LatentSteer, SteerConfig
from dglm_cli.training import SteerTrainer, TrainConfig


@dataclass
class SteerRunSpec:
    kind: str  # "steer"
    bundle: str  # the bundle directory the steer is trained for
    identity: str  # digest of the bundle parts the steer depends on (see bundle_identity)
    corpus: str  # corpus cache directory
    states: str  # LM-state cache directory
    model: dict  # SteerConfig
    train: dict  # TrainConfig
    cache: dict  # StateCacheConfig

    @property
    def steer_config(self) -> SteerConfig:
        return config_from_dict(SteerConfig, self.model, RUN_FILE)

    @property
    def train_config(self) -> TrainConfig:
        return config_from_dict(TrainConfig, self.train, RUN_FILE)

    @property
    def cache_config(self) -> StateCacheConfig:
        return config_from_dict(StateCacheConfig, self.cache, RUN_FILE)


def bundle_identity(path: Path, soft_prompt: bool) -> str:
    """Digest of what a steer depends on: the decoder and encoder files (latent space included), and the
    prompt generator's when its states were taken with the soft prompt; listed in the bundle's manifest."""
    manifest = read_manifest(path)
    parts = ("decoder/", "encoder/", "prompt_generator/") if soft_prompt else ("decoder/", "encoder/")
    digests = sorted((name, digest) for name, digest in manifest.get("files", {}).items() if name.startswith(parts))
    return hashlib.sha256(json.dumps([manifest.get("decoder"), digests]).encode()).hexdigest()


def is_steer_run(run_dir: Path) -> bool:
    path = Path(run_dir) / RUN_FILE
    return path.is_file() and read_json(path).get("kind") == "steer"


def create_steer_run(
    run_dir: Path,
    corpus_path: str,
    bundle_name: str,
    steer: SteerConfig,
    train: TrainConfig,
    corpus_config: CorpusConfig,
    epochs: int,
    cache_batch_size: int = 32,
    on_encode: Callable[[int, int], None] | None = None,
) -> SteerRunSpec:
    """Encode the corpus with the bundle's models (cached), size the run in epochs and write run.json.

    The LM states are cached with the steer's K candidates and soft-prompt setting, with the teacher's
    log-probabilities when the corpus's pairs have hidden contexts, and with the contrast's when the run
    pushes the teacher away from the pairs' contrasting contexts (--contrast-cfg)."""
    if (run_dir / RUN_FILE).exists():
        raise InputError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run")
    if epochs < 1:
        raise InputError("--epochs must be at least 1")
    path = find_bundle(bundle_name).resolve()
    encoder_ref, decoder_ref, encoder_dim = bundle_references(str(path))
    decoder_width = bundle_decoder_config(path).embedding_dim
    steer = replace(steer, latent_dim=encoder_dim, hidden_dim=decoder_width)
    corpus_dir, _, _ = cached_corpus(corpus_path, encoder_ref, decoder_ref, corpus_config, on_encode)
    corpus_meta = read_json(corpus_dir / "corpus.json")
    steps_per_epoch = math.ceil((corpus_meta["examples"] - corpus_meta["n_val"]) / train.batch_size)
    train.max_steps, train.eval_every, train.save_every = steps_per_epoch * epochs, steps_per_epoch, steps_per_epoch
    train.validate()
    teacher = bool(corpus_meta.get("contexts")) and steer.candidates > 0  # pairs with hidden contexts: cache the teacher too
    contrast = train.contrast_cfg > 0
    if contrast and not (teacher and train.teacher_weight > 0 and corpus_meta.get("contrasts")):
        raise InputError("--contrast-cfg needs pairs with a 'context' and a 'contrast', --teacher-weight > 0 and --candidates > 0")
    cache = StateCacheConfig(steer.candidates, steer.soft_prompt, cache_batch_size, teacher=teacher, contrast=contrast)
    identity = bundle_identity(path, cache.soft_prompt)
    states = corpus_dir / "lm-states" / states_key(identity, cache)
    spec = SteerRunSpec("steer", str(path), identity, str(corpus_dir), str(states), asdict(steer), asdict(train), asdict(cache))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_FILE, asdict(spec))
    return spec


def load_steer_run(run_dir: Path) -> SteerRunSpec:
    if not is_steer_run(run_dir):
        raise InputError(f"{run_dir} holds no steer run ({RUN_FILE} missing or of another kind)")
    return config_from_dict(SteerRunSpec, read_json(run_dir / RUN_FILE), str(run_dir / RUN_FILE))


def steer_trainer(run_dir: Path, spec: SteerRunSpec, on_cache: Callable[[int, int], None] | None = None) -> SteerTrainer:
    """The trainer of a steer run, caching the LM states first if they are not cached yet."""
    bundle = _bundle_of(spec)
    corpus = load_corpus(Path(spec.corpus))
    cache = spec.cache_config
    info = {"bundle": spec.bundle, "identity": spec.identity, "decoder": assets.describe(bundle.decoder.config.reference)}
    soft_prompts = _soft_prompts(bundle, corpus)
    states = load_states(cache_states(Path(spec.states), corpus, bundle.decoder, cache, soft_prompts, info, on_cache))
    config = spec.steer_config
    torch.manual_seed(spec.train_config.seed)
    return SteerTrainer(run_dir, LatentSteer(config), bundle.decoder.model.get_output_embeddings(), states, corpus, bundle.stats,
                        bundle.prompt_generator.config.inference_alpha2, spec.train_config)


def _bundle_of(spec: SteerRunSpec) -> Bundle:
    path = Path(spec.bundle)
    if bundle_identity(path, spec.cache_config.soft_prompt) != spec.identity:
        raise BundleError(f"bundle {path} has changed since this steer run started (its decoder, encoder or prompt generator differ)")
    bundle = load_bundle(path, default_device())
    steer = spec.steer_config
    width = bundle.decoder.model.get_output_embeddings().in_features
    if (steer.hidden_dim, steer.latent_dim) != (width, bundle.encoder.config.embedding_dim):
        raise InputError(f"the steer is sized for hidden {steer.hidden_dim} and latent {steer.latent_dim}; the bundle has {width} and {bundle.encoder.config.embedding_dim}")
    return bundle


def _soft_prompts(bundle: Bundle, corpus: LatentCorpus) -> Callable[[torch.Tensor], torch.Tensor]:
    """rows -> the soft prompts (B, k, E) the bundle writes for those rows' continuations, re-noised as at generation."""

    @torch.no_grad()
    def soft_prompts(rows: torch.Tensor) -> torch.Tensor:
        device = bundle.stats.mean.device
        x = bundle.stats.to_latent(corpus.continuation_embeddings[rows].to(device))
        alpha2 = torch.full((len(rows),), bundle.prompt_generator.config.inference_alpha2, device=device)
        noisy = diffuse(x, RecordRNG(rows.tolist(), "renoise", device).randn(x.shape[1]), alpha2)
        return bundle.prompt_generator(noisy, alpha2)

    return soft_prompts


def export_steer(run_dir: Path, out: Path, overwrite: bool = False, half: bool = False, strength: float | None = None,
                 guidance_scale: float | None = None) -> Path:
    """Write the run's best steer into the bundle `out`, which must hold the decoder it was trained for;
    `strength` replaces the run's default strength, `guidance_scale` the default guidance scale while it is on."""
    spec = load_steer_run(run_dir)
    for name, flag, value in (("strength", "--steer-strength", strength), ("guidance_scale", "--steer-guidance", guidance_scale)):
        if value is None:
            continue
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{flag} must be a finite number >= 0")
        spec = replace(spec, model={**spec.model, name: value})
    out = find_bundle(out)
    if bundle_identity(out, spec.cache_config.soft_prompt) != spec.identity:
        raise InputError(f"{run_dir} trained a steer for {spec.bundle}; {out} has another decoder, encoder or prompt generator")
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise BundleError(f"{run_dir} has no checkpoint yet; train it first")
    steer = LatentSteer(spec.steer_config)
    steer.load_state_dict({k.removeprefix("best."): v.float() for k, v in checkpoint.extra.items() if k.startswith("best.")})
    target = add_steer(out, steer.half() if half else steer, overwrite=overwrite)
    card = _without_steer_section((out / "README.md").read_text(encoding="utf-8"))
    write_model_card(out, card.rstrip() + "\n\n" + _card_section(run_dir, spec, checkpoint.extra))
    return target


def _without_steer_section(card: str) -> str:
    """The model card without the section an earlier export of a steer wrote (replaced, not repeated)."""
    head, found, rest = card.partition("\n## steer\n")
    if not found:
        return card
    _, heading, tail = rest.partition("\n## ")
    return head + ("\n" + heading + tail if heading else "")


def _card_section(run_dir: Path, spec: SteerRunSpec, extra: dict) -> str:
    metrics = last_metrics(run_dir)
    config = spec.steer_config
    shown = ", ".join(f"{k[4:]} {v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("val_") and isinstance(v, float))
    return "\n".join([
        "## steer", "",
        f"- trained with `dglm train-steer` on {spec.corpus}: best validation loss {extra['best_loss'].item():.4f} at step {int(extra['best_step'])}",
        f"- K = {config.candidates} candidates, rank {config.rank}, default strength {config.strength:g}"
        f"{f', default guidance scale {config.guidance_scale:g}' if config.guidance_scale is not None else ''}, soft prompt {'on' if config.soft_prompt else 'off'}",
        f"- last validation (nats per token over the candidates): {shown or 'none'}", "",
    ])
