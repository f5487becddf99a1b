"""Run directories for `dglm train-diffusion` / `dglm train-decoder`, and `dglm export` of runs to a bundle.

`open_run` is the workflow of a training command: create a run (references, encoded corpus, model
config, run.json) or resume one, and build its trainer; `trainer.train(...)` then runs it.

<run>/run.json      kind, encoder and decoder references, corpus cache, model and training configs
<run>/metrics.jsonl one line per step (train loss, learning rate) and per validation
<run>/checkpoints/  see dglm_cli.checkpoints
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dglm_cli import assets
from dglm_cli.bundle import bundle_model_configs, find_bundle, save_bundle
from dglm_cli.checkpoints import load_checkpoint
from dglm_cli.config import config_from_dict
from dglm_cli.corpus import CorpusConfig, load_corpus_stats
from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder
from dglm_cli.denoiser import Denoiser, DenoiserConfig
from dglm_cli.devices import default_device
from dglm_cli.encoder import EncoderConfig
from dglm_cli.errors import BundleError, InputError
from dglm_cli.files import read_json, write_json
from dglm_cli.loaders import load_encoder_reference, load_lm, load_tokenizer
from dglm_cli.prompt_generator import PromptGenerator, PromptGeneratorConfig
from dglm_cli.training import TrainConfig

RUN_FILE = "run.json"

DENOISER_PRESETS = {
    "tiny": dict(dim=32, depth=2, dim_head=16, num_tokens=4),
    "small": dict(dim=256, depth=6, dim_head=64, num_tokens=16),
    "base": dict(dim=512, depth=8, dim_head=64, num_tokens=32),
    "paper": dict(dim=768, depth=12, dim_head=64, num_tokens=32),
}
PROMPT_GENERATOR_PRESETS = {
    "tiny": dict(dim=32, depth=1, dim_head=16, prompt_length=4),
    "small": dict(dim=256, depth=4, dim_head=64, prompt_length=8),
    "base": dict(dim=512, depth=6, dim_head=64, prompt_length=8),
    "paper": dict(dim=768, depth=6, dim_head=64, prompt_length=8),
}


@dataclass
class RunSpec:
    kind: str  # "diffusion" or "decoder"
    encoder: dict  # model references (see dglm_cli.assets); bundle-embedded models become absolute paths
    decoder: dict
    encoder_dim: int
    corpus: str  # corpus cache directory
    model: dict  # DenoiserConfig or PromptGeneratorConfig
    train: dict  # TrainConfig

    @property
    def train_config(self) -> TrainConfig:
        return config_from_dict(TrainConfig, self.train, RUN_FILE)

    def model_config(self):
        cls = DenoiserConfig if self.kind == "diffusion" else PromptGeneratorConfig
        return config_from_dict(cls, self.model, RUN_FILE)


def bundle_references(name_or_path: str) -> tuple[dict, dict, int]:
    """The encoder and decoder references of a bundle, with embedded models as absolute paths."""
    path = find_bundle(name_or_path)
    encoder, decoder = bundle_model_configs(path)
    return _absolute(encoder.reference, path), _absolute(decoder.reference, path), encoder.embedding_dim


def _absolute(reference: dict, base: Path) -> dict:
    if reference.get("kind") == "embedded":
        return {"kind": "path", "path": str((base / reference["path"]).resolve())}
    return reference


def model_config(kind: str, preset: str, encoder_dim: int, lm_dim: int = 0, lm_embedding_std: float = 1.0):
    presets = DENOISER_PRESETS if kind == "diffusion" else PROMPT_GENERATOR_PRESETS
    if preset not in presets:
        raise InputError(f"unknown --preset {preset!r}; choose from {', '.join(presets)}")
    if kind == "diffusion":
        return DenoiserConfig(latent_dim=encoder_dim, **presets[preset])
    return PromptGeneratorConfig(latent_dim=encoder_dim, lm_dim=lm_dim, output_scale=lm_embedding_std, **presets[preset])


def create_run(run_dir: Path, spec: RunSpec) -> RunSpec:
    """Write run.json for a new run; an existing run is never overwritten."""
    if (run_dir / RUN_FILE).exists():
        raise InputError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_FILE, asdict(spec))
    return spec


def resume_run(run_dir: Path, kind: str, max_steps: int | None = None) -> RunSpec:
    """The run to continue; a new `max_steps` extends (or shortens) it and is written back to run.json."""
    if not (run_dir / RUN_FILE).exists():
        raise InputError(f"--resume: {run_dir} holds no run ({RUN_FILE} missing)")
    spec = load_run(run_dir)
    if spec.kind != kind:
        raise InputError(f"--resume: {run_dir} is a {spec.kind} run, not a {kind} run")
    if max_steps is not None and max_steps != spec.train["max_steps"]:
        spec.train = {**spec.train, "max_steps": max_steps}
        write_json(run_dir / RUN_FILE, asdict(spec))
    return spec


def load_run(run_dir: Path) -> RunSpec:
    data = read_json(Path(run_dir) / RUN_FILE)
    return config_from_dict(RunSpec, data, str(Path(run_dir) / RUN_FILE))


def last_metrics(run_dir: Path) -> dict:
    """The latest value of every metric in metrics.jsonl."""
    latest = {}
    path = run_dir / "metrics.jsonl"
    if path.exists():
        from dglm_cli.training import metric_lines

        for _, metrics in metric_lines(path):
            latest.update(metrics)
    return latest


def export_bundle(run_dirs: list[Path], out: Path, overwrite: bool = False, device: str = "cpu", half: bool = False) -> Path:
    """EMA weights of one diffusion run and one decoder run -> a bundle that `dglm generate` loads.

    `half` stores the heads and adapters as float16 (they are loaded back into float32 modules)."""
    runs = {}
    for run_dir in map(Path, run_dirs):
        spec = load_run(run_dir)
        if spec.kind in runs:
            raise InputError(f"two {spec.kind} runs given ({runs[spec.kind][0]} and {run_dir}); export takes one of each")
        runs[spec.kind] = (run_dir, spec)
    if "diffusion" not in runs:
        raise InputError("export needs a diffusion run (and a decoder run, or a steer run added later)")
    diffusion_dir, diffusion = runs["diffusion"]
    encoder_config, copies = _embed_if_local(diffusion.encoder, "encoder/model", diffusion.encoder_dim)
    if "decoder" in runs:
        decoder_dir, decoder = runs["decoder"]
        if diffusion.encoder != decoder.encoder:
            raise InputError("the two runs use different encoders; train both heads on the same encoder")
        stats = _matching_stats(diffusion, decoder)
        prompt_generator = _ema_module(decoder_dir, PromptGenerator, decoder.model_config())
        lm, adapter, decoder_config, lm_copies = _decoder_part(decoder_dir, decoder, prompt_generator.config.lm_dim, device)
    else:
        stats = load_corpus_stats(Path(diffusion.corpus))
        prompt_generator, lm, adapter, decoder_config, lm_copies = _plain_decoder_part(diffusion)
    denoiser = _ema_module(diffusion_dir, Denoiser, diffusion.model_config())
    if half:
        denoiser, prompt_generator = denoiser.half(), prompt_generator.half()
        adapter = adapter and {k: v.half() for k, v in adapter.items()}
    info = {
        "kind": "trained",
        "training": {kind: {"steps": _steps(d), "metrics": last_metrics(d), "corpus": s.corpus} for kind, (d, s) in runs.items()},
    }
    card = _model_card(runs)
    return save_bundle(
        out, encoder_config=encoder_config, stats=stats, denoiser=denoiser, prompt_generator=prompt_generator,
        decoder_config=decoder_config, lm=lm, adapter=adapter, copies=copies | lm_copies, card=card, info=info, overwrite=overwrite,
    )


def _plain_decoder_part(diffusion: RunSpec):
    """Without a decoder run: the run's LM as it is, behind a prompt generator of length 0 (no soft prompt),
    so that the bundle writes plain LM text until a steer carries the latent into it."""
    decoder = load_training_decoder(diffusion.decoder)
    width, _ = embedding_shape(decoder)
    no_prompt = PromptGenerator(PromptGeneratorConfig(latent_dim=diffusion.encoder_dim, lm_dim=width, prompt_length=0, dim=32, depth=1,
                                                      dim_head=16)).eval()
    if diffusion.decoder.get("kind") == "path":
        embedded = DecoderConfig({"kind": "embedded", "path": "decoder/lm"}, width)
        return no_prompt, None, None, embedded, {"decoder/lm": Path(diffusion.decoder["path"])}
    return no_prompt, None, None, DecoderConfig(diffusion.decoder, width), {}


def _matching_stats(diffusion: RunSpec, decoder: RunSpec):
    first, second = load_corpus_stats(Path(diffusion.corpus)), load_corpus_stats(Path(decoder.corpus))
    if not (torch.allclose(first.mean, second.mean, atol=1e-4) and torch.allclose(first.std, second.std, atol=1e-4)):
        raise InputError("the two runs were trained with different latent statistics (different corpora); train both on one corpus")
    return first


def _ema_module(run_dir: Path, cls, config):
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise BundleError(f"{run_dir} has no checkpoint yet; train it first")
    module = cls(config).eval()
    module.load_state_dict({k: v.to(next(iter(module.state_dict().values())).dtype) for k, v in checkpoint.ema.items()})
    return module


def _steps(run_dir: Path) -> int:
    checkpoint = read_json(run_dir / "checkpoints" / "latest.json")
    return checkpoint["step"]


def _embed_if_local(reference: dict, relative: str, dim: int) -> tuple[EncoderConfig, dict[str, Path]]:
    if reference.get("kind") == "path":
        return EncoderConfig({"kind": "embedded", "path": relative}, dim), {relative: Path(reference["path"])}
    return EncoderConfig(reference, dim), {}


def _decoder_part(run_dir: Path, spec: RunSpec, lm_dim: int, device: str):
    """(fine-tuned (model, tokenizer) or None, adapter tensors or None, decoder config, directories to copy in)."""
    checkpoint = load_checkpoint(run_dir)
    if spec.train_config.train_lm:
        model, tokenizer = load_lm(spec.decoder, None, device)
        model.load_state_dict(checkpoint.lm)
        return (model, tokenizer), None, DecoderConfig({"kind": "embedded", "path": "decoder/lm"}, lm_dim, fine_tuned=True), {}
    rank = spec.train_config.lora_rank
    adapter = checkpoint.lm if rank else None
    if spec.decoder.get("kind") == "path":
        embedded = DecoderConfig({"kind": "embedded", "path": "decoder/lm"}, lm_dim, adapter_rank=rank)
        return None, adapter, embedded, {"decoder/lm": Path(spec.decoder["path"])}
    return None, adapter, DecoderConfig(spec.decoder, lm_dim, adapter_rank=rank), {}


def _model_card(runs: dict) -> str:
    commands = " and ".join(f"`dglm train-{kind}`" for kind in sorted(runs))
    lines = ["# dglm bundle", "", f"Trained with {commands}, exported with `dglm export`.", ""]
    for kind, (run_dir, spec) in sorted(runs.items()):
        metrics = last_metrics(run_dir)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("val_") and isinstance(v, float))
        lines += [f"## {kind}", "", f"- steps: {_steps(run_dir)}", f"- encoder: {assets.describe(spec.encoder)}",
                  f"- decoder: {assets.describe(spec.decoder)}", f"- validation: {shown or 'none'}", ""]
    return "\n".join(lines)


def cached_corpus(corpus_path, encoder_ref: dict, decoder_ref: dict, config, on_progress=None) -> tuple[Path, int, bool]:
    """(directory, embedding dim, built now) of the encoded corpus for these documents and models."""
    import time

    from dglm_cli.corpus import (
        build_corpus,
        corpus_key,
        load_corpus_stats,
        read_documents,
        save_corpus,
    )
    from dglm_cli.paths import dglm_home

    documents = read_documents(corpus_path)
    key = corpus_key(documents, assets.describe(decoder_ref), assets.describe(encoder_ref), config)
    directory = dglm_home() / "corpora" / key
    if (directory / "corpus.json").exists():
        return directory, load_corpus_stats(directory).mean.shape[0], False
    encoder = load_encoder_reference(encoder_ref, default_device())
    started = time.perf_counter()
    corpus = build_corpus(documents, load_tokenizer(decoder_ref), encoder, config, on_progress)
    info = {"documents": len(documents), "source": str(corpus_path), "encoder": encoder_ref, "decoder": decoder_ref,
            "config": asdict(config), "seconds": round(time.perf_counter() - started, 1)}
    save_corpus(directory, corpus, info)
    return directory, encoder.config.embedding_dim, True


def load_training_decoder(decoder_ref: dict) -> SoftPromptDecoder:
    """The decoder a prompt-generator run trains through; its config's width is read from the model."""
    model, tokenizer = load_lm(decoder_ref, None, default_device())
    return SoftPromptDecoder(model, tokenizer, DecoderConfig(decoder_ref, model.get_input_embeddings().embedding_dim))


def embedding_shape(decoder: SoftPromptDecoder) -> tuple[int, float]:
    """The decoder's embedding width and the std of its token embeddings (the soft vectors' target scale)."""
    weight = decoder.model.get_input_embeddings().weight
    return weight.shape[1], weight.float().std().item()


def build_trainer(run_dir: Path, spec: RunSpec, decoder: SoftPromptDecoder | None = None):
    """The trainer of a run; a decoder run loads its decoder unless one is given."""
    from dglm_cli.corpus import load_corpus
    from dglm_cli.training import DecoderTrainer, DiffusionTrainer

    corpus = load_corpus(Path(spec.corpus))
    torch.manual_seed(spec.train_config.seed)
    if spec.kind == "diffusion":
        return DiffusionTrainer(run_dir, Denoiser(spec.model_config()), corpus, spec.train_config)
    decoder = decoder or load_training_decoder(spec.decoder)
    return DecoderTrainer(run_dir, PromptGenerator(spec.model_config()), decoder, corpus, spec.train_config)


class _SingleProcess:
    """Stands in for accelerate's PartialState outside `accelerate launch`."""

    is_main_process = True

    @staticmethod
    def main_process_first():
        return nullcontext()


@dataclass
class OpenedRun:
    spec: RunSpec
    trainer: object  # DiffusionTrainer or DecoderTrainer
    resumed: bool  # the trainer continues from a checkpoint


def open_run(
    run_dir: Path,
    kind: str,
    config: TrainConfig,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    corpus: str | None = None,
    corpus_config: CorpusConfig | None = None,
    bundle: str | None = None,
    encoder: str | dict = assets.DEFAULT_ENCODER,
    decoder: str | dict = assets.DEFAULT_DECODER,
    preset: str = "small",
    init_from: Path | None = None,
    state=None,
    encode_corpus: Callable | None = None,
) -> OpenedRun:
    """A training run ready to train: created from a corpus, or resumed (then `max_steps` extends it).

    A new run takes its encoder and decoder from `bundle`, else from `encoder` and `decoder` (references,
    or as typed on the command line); `init_from` starts it from another run's weights. `state` is
    accelerate's PartialState under `accelerate launch` (only the main process writes). `encode_corpus`
    (corpus, encoder_ref, decoder_ref, corpus_config) -> (directory, embedding dim) replaces the plain
    `cached_corpus`, e.g. to show progress.
    """
    state = state or _SingleProcess()
    config.validate()
    decoder_model = None
    if resume:
        with state.main_process_first():  # the main process writes a changed --max-steps first
            spec = resume_run(run_dir, kind, max_steps if state.is_main_process else None)
    else:
        if corpus is None:
            raise InputError("give a CORPUS file ('-' for stdin), or --resume an existing run")
        if bundle:
            encoder_ref, decoder_ref, encoder_dim = bundle_references(bundle)
        else:
            encoder_ref = assets.parse_reference(encoder, what="--encoder") if isinstance(encoder, str) else encoder
            decoder_ref = assets.parse_reference(decoder, what="--decoder") if isinstance(decoder, str) else decoder
        encode_corpus = encode_corpus or (lambda *args: cached_corpus(*args)[:2])
        with state.main_process_first():
            corpus_dir, encoder_dim = encode_corpus(corpus, encoder_ref, decoder_ref, corpus_config or CorpusConfig())
        decoder_model = load_training_decoder(decoder_ref) if kind == "decoder" else None
        model = model_config(kind, preset, encoder_dim, *(embedding_shape(decoder_model) if decoder_model else ()))
        spec = RunSpec(kind, encoder_ref, decoder_ref, encoder_dim, str(corpus_dir), asdict(model), asdict(config))
        with state.main_process_first():  # only the main process writes run.json; the others read it
            spec = create_run(run_dir, spec) if state.is_main_process else load_run(run_dir)
    trainer = build_trainer(run_dir, spec, decoder_model)
    if init_from and not resume:
        trainer.initialize_from(init_from)
    resumed = bool(resume and trainer.resume())
    return OpenedRun(spec, trainer, resumed)
