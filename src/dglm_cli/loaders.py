"""Model loading: the only module that loads or saves models.

Two kinds of model pass through here:

- dglm's own components (denoiser, prompt generator, classifiers, steer, latent statistics): a
  config.json (the component's config dataclass) beside a model.safetensors (its state dict).
- third-party models, given by a model reference (dglm_cli.assets, resolved to local files by
  dglm_cli.fetch): sentence-transformers encoders, Hugging Face causal LMs and tokenizers, and
  text-classification models for scoring. transformers and sentence-transformers are imported here,
  inside the functions; elsewhere in the library only at the asset edge (fetch dequantizes the GGUF
  decoder) and by tiny.py, which builds random models (tests/test_layering.py holds that).

Every failure a user can cause is a one-line AssetError (cannot load) or BundleError (file and config
disagree).
"""

from pathlib import Path

import torch

from dglm_cli import assets, fetch
from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.config import config_from_dict, config_to_dict
from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder
from dglm_cli.encoder import EncoderConfig, LatentStats, SentenceEncoder
from dglm_cli.errors import AssetError, BundleError
from dglm_cli.files import first_line, read_json, read_tensors, write_json, write_tensors
from dglm_cli.steer import LatentSteer, SteerConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------- dglm components


def save_module(directory: Path, module: torch.nn.Module) -> None:
    """config.json (the module's config dataclass) + model.safetensors (its state dict)."""
    write_json(directory / CONFIG, config_to_dict(module.config))
    write_tensors(directory / WEIGHTS, module.state_dict())


def load_module(directory: Path, module_cls, config_cls, device: str | torch.device = "cpu"):
    config = config_from_dict(config_cls, read_json(directory / CONFIG), where=str(directory / CONFIG))
    try:
        module = module_cls(config)
    except ValueError as error:
        raise BundleError(f"{directory / CONFIG}: {error}") from None
    state = read_tensors(directory / WEIGHTS)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise BundleError(f"{directory / WEIGHTS} does not match its config: {' '.join(first[:2])}") from None
    return module.to(device).eval()


def save_classifier(directory: Path, classifier: LinearClassifier) -> None:
    save_module(directory, classifier)


def load_classifier(directory: Path, device: str | torch.device = "cpu") -> LinearClassifier:
    return load_module(directory, LinearClassifier, ClassifierConfig, device)


def load_steer(directory: Path, device: str | torch.device = "cpu") -> LatentSteer:
    """The latent steer (dglm_cli.steer) saved in `directory`."""
    return load_module(directory, LatentSteer, SteerConfig, device)


def save_stats(path: Path, stats: LatentStats) -> None:
    write_tensors(path, {"mean": stats.mean, "std": stats.std})


def load_stats(path: Path, device: str | torch.device = "cpu") -> LatentStats:
    tensors = read_tensors(path)
    if set(tensors) != {"mean", "std"} or tensors["mean"].shape != tensors["std"].shape:
        raise BundleError(f"{path}: expected tensors 'mean' and 'std' of one shape")
    return LatentStats(tensors["mean"], tensors["std"]).to(device)


# ---------------------------------------------------------------- encoders (sentence-transformers)


def load_encoder(config: EncoderConfig, base: Path | None, device: str | torch.device) -> SentenceEncoder:
    model = _sentence_transformer(config.reference, base, device)
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    dim = _embedding_dim(model)
    if dim != config.embedding_dim:
        raise BundleError(f"encoder {assets.describe(config.reference)} gives {dim}-d embeddings, bundle expects {config.embedding_dim}")
    return SentenceEncoder(model.eval(), config)


def load_encoder_reference(reference: dict, device: str | torch.device) -> SentenceEncoder:
    """A standalone encoder (path, hub or package reference) whose dimension is read from the model."""
    model = _sentence_transformer(reference, None, device)
    return SentenceEncoder(model.eval(), EncoderConfig(reference, _embedding_dim(model)))


def save_encoder_model(directory: Path, model) -> None:
    """A sentence-transformers model saved as its own directory (safetensors weights)."""
    model.save(str(directory))


def _sentence_transformer(reference: dict, base: Path | None, device: str | torch.device):
    name, revision = fetch.resolve(reference, base)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(name, revision=revision, device=str(device))
    except (OSError, ValueError) as error:
        raise AssetError(f"cannot load encoder {assets.describe(reference)}: {first_line(error)}") from None


def _embedding_dim(model) -> int:
    get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return get_dimension()


# ---------------------------------------------------------------- language models (transformers)


def load_lm(reference: dict, base: Path | None, device: str | torch.device, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of a Hugging Face causal LM."""
    name, revision = fetch.resolve(reference, base)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=dtype)
    except (OSError, ValueError) as error:
        raise AssetError(f"cannot load decoder {assets.describe(reference)}: {first_line(error)}") from None
    return model.to(device).eval(), tokenizer


def load_tokenizer(reference: dict, base: Path | None = None):
    name, revision = fetch.resolve(reference, base)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as error:
        raise AssetError(f"cannot load the tokenizer of {assets.describe(reference)}: {first_line(error)}") from None


def save_lm(directory: Path, model, tokenizer) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def load_decoder(config: DecoderConfig, base: Path | None, device: str | torch.device, adapter: dict | None = None) -> SoftPromptDecoder:
    """The soft-prompted decoder of `config`, with `adapter` (low-rank adapter tensors of a fine-tuned
    decoder, read by the bundle from decoder/adapter.safetensors) merged into its weights."""
    model, tokenizer = load_lm(config.reference, base, device)
    width = model.get_input_embeddings().embedding_dim
    if width != config.embedding_dim:
        raise BundleError(f"decoder {assets.describe(config.reference)} has width {width}, bundle expects {config.embedding_dim}")
    if config.adapter_rank:
        _merge_adapter(model, config, adapter or {})
    model.requires_grad_(False)
    return SoftPromptDecoder(model, tokenizer, config)


ADAPTER_NAME = "decoder/adapter.safetensors"  # where bundles keep it; used in messages


def _merge_adapter(model, config: DecoderConfig, state: dict) -> None:
    from dglm_cli.adapters import adapter_rank, merge_adapters

    if adapter_rank(state) != config.adapter_rank:
        raise BundleError(f"{ADAPTER_NAME} has rank {adapter_rank(state)}, decoder/config.json says {config.adapter_rank}")
    try:
        merge_adapters(model, state)
    except (KeyError, RuntimeError) as error:
        raise BundleError(f"{ADAPTER_NAME} does not fit decoder {assets.describe(config.reference)}: {first_line(error)}") from None


def load_text_classifier(target: str, what: str):
    """(model, tokenizer) of a Hugging Face text-classification model (a directory or a Hub id);
    `what` names it in the one-line error."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForSequenceClassification.from_pretrained(target)
    except (OSError, ValueError, KeyError) as error:
        raise AssetError(f"cannot load {what}: {first_line(error)}") from None
    return model, tokenizer


def quiet_transformers() -> None:
    """Silence transformers' advice and progress bars (dglm reports progress itself)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
