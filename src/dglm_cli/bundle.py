"""The bundle format: the one module that knows a bundle's layout, manifest and checks.

A bundle is one directory (design.md §3): dglm.json (manifest with format version and the sha256 of
every file), README.md (model card), encoder/, denoiser/, prompt_generator/, decoder/, classifiers/<name>/,
and optionally steer/ (the latent steer on the decoder's output; a bundle without one behaves as before).
Weights are safetensors and configs JSON; nothing in a bundle is executed or unpickled.
Components and third-party models are loaded and saved by dglm_cli.loaders, files are written by
dglm_cli.files; this module decides which file goes where and checks that they fit together.
"""

import datetime
import functools
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dglm_cli import assets
from dglm_cli._version import __version__
from dglm_cli.bundle_closure import check_closed, check_reference, inside
from dglm_cli.classifier import LinearClassifier
from dglm_cli.config import config_from_dict, config_to_dict
from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder
from dglm_cli.denoiser import Denoiser, DenoiserConfig
from dglm_cli.encoder import EncoderConfig, LatentStats, SentenceEncoder
from dglm_cli.errors import BundleError
from dglm_cli.files import read_json, read_tensors, sha256_file, staged_dir, write_json, write_tensors, write_text
from dglm_cli.loaders import (
    CONFIG,
    WEIGHTS,
    load_classifier,
    load_decoder,
    load_encoder,
    load_module,
    load_stats,
    load_steer,
    save_classifier,
    save_encoder_model,
    save_lm,
    save_module,
    save_stats,
)
from dglm_cli.paths import dglm_home
from dglm_cli.prompt_generator import PromptGenerator, PromptGeneratorConfig
from dglm_cli.steer import LatentSteer

FORMAT_VERSION = 1
MANIFEST = "dglm.json"
ADAPTER = "decoder/adapter.safetensors"  # low-rank adapters of a fine-tuned decoder (dglm_cli.adapters)
STEER = "steer"  # optional: the latent steer (dglm_cli.steer)


# ---------------------------------------------------------------- encoder identity


def encoder_identity(reference: dict, base: Path | None = None) -> str:
    """A stable id of the encoder behind a reference, so classifiers are only used on the embeddings they read.

    Hub, package and path references are identified by their description (with the revision); an
    encoder embedded in a bundle by the sha256 of its weights, as listed in the bundle manifest.
    """
    if reference.get("kind") != "embedded":
        return assets.describe(reference)
    if base is None:
        raise BundleError(f"embedded reference {reference} used outside a bundle")
    prefix = reference["path"].rstrip("/") + "/"
    files = read_manifest(base).get("files", {})
    weights = sorted((name, digest) for name, digest in files.items() if name.startswith(prefix) and name.endswith(".safetensors"))
    if not weights:
        raise BundleError(f"bundle {base}: the manifest lists no weights under {prefix}")
    digest = hashlib.sha256(json.dumps([d for _, d in weights]).encode()).hexdigest()
    return f"sha256:{digest}"


def bundle_encoder_config(path: Path) -> EncoderConfig:
    return config_from_dict(EncoderConfig, read_json(path / "encoder" / CONFIG), "encoder/config.json")


def bundle_decoder_config(path: Path) -> DecoderConfig:
    return config_from_dict(DecoderConfig, read_json(path / "decoder" / CONFIG), "decoder/config.json")


def bundle_model_configs(path: Path) -> tuple[EncoderConfig, DecoderConfig]:
    """A bundle's encoder and decoder configs, their model references checked to stay inside the bundle."""
    encoder_config = bundle_encoder_config(path)
    decoder_config = bundle_decoder_config(path)
    check_reference(path, encoder_config.reference, "encoder")
    check_reference(path, decoder_config.reference, "decoder")
    return encoder_config, decoder_config


# ---------------------------------------------------------------- bundles


@dataclass
class Bundle:
    path: Path
    manifest: dict
    encoder: SentenceEncoder
    stats: LatentStats
    denoiser: Denoiser
    prompt_generator: PromptGenerator
    decoder: SoftPromptDecoder
    classifiers: dict[str, LinearClassifier] = field(default_factory=dict)
    steer: LatentSteer | None = None

    @functools.cached_property
    def sha256(self) -> str:
        """Identifies the bundle's exact contents: the hash of its manifest, which lists every file's hash."""
        return sha256_file(self.path / MANIFEST)

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name


PACKAGED_BUNDLES = Path(__file__).parent / "bundles"  # bundles shipped inside the package (the default)


def find_bundle(name_or_path: str | Path) -> Path:
    """A bundle directory from a path, or a name under DGLM_HOME/bundles, or a bundle shipped with dglm."""
    candidates = [Path(name_or_path).expanduser()]
    if "/" not in str(name_or_path):
        candidates += [dglm_home() / "bundles" / str(name_or_path), PACKAGED_BUNDLES / str(name_or_path)]
    for candidate in candidates:
        if (candidate / MANIFEST).is_file():
            return candidate
        if candidate.is_dir():
            raise BundleError(f"{candidate} is not a dglm bundle (no {MANIFEST})")
    raise BundleError(f"bundle not found: {name_or_path} (give a bundle directory, or make one with `dglm bundle tiny DIR`)")


def read_manifest(path: Path) -> dict:
    manifest = read_json(path / MANIFEST)
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{path / MANIFEST} has no integer format_version")
    if version > FORMAT_VERSION:
        raise BundleError(f"bundle {path} has format_version {version}; this dglm ({__version__}) reads up to {FORMAT_VERSION}: upgrade dglm")
    return manifest


def verify_files(path: Path, manifest: dict) -> None:
    """Check the bundle is closed (dglm_cli.bundle_closure) and every listed file has its sha256."""
    for relative, expected in check_closed(path, manifest).items():
        file = inside(path, relative)
        if not file.is_file():
            raise BundleError(f"bundle {path} is missing {relative}")
        if sha256_file(file) != expected:
            raise BundleError(f"bundle {path}: checksum mismatch for {relative} (file is corrupt or was modified)")


def load_bundle(name_or_path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> Bundle:
    path = find_bundle(name_or_path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    else:
        check_closed(path, manifest)
    encoder_config, decoder_config = bundle_model_configs(path)
    stats = load_stats(path / "encoder" / "latent_stats.safetensors", device)
    denoiser = load_module(path / "denoiser", Denoiser, DenoiserConfig, device)
    prompt_generator = load_module(path / "prompt_generator", PromptGenerator, PromptGeneratorConfig, device)
    classifiers = {d.name: load_classifier(d, device) for d in sorted((path / "classifiers").glob("*")) if d.is_dir()}
    steer = load_steer(path / STEER, device) if (path / STEER).is_dir() else None
    _check_dimensions(encoder_config, decoder_config, stats, denoiser, prompt_generator, classifiers, steer)
    encoder = load_encoder(encoder_config, path, device)
    adapter = read_tensors(path / ADAPTER) if decoder_config.adapter_rank else None
    decoder = load_decoder(decoder_config, path, device, adapter)
    if steer is not None and steer.config.hidden_dim != (width := decoder.model.get_output_embeddings().in_features):
        raise BundleError(f"dimension mismatch: the steer reads {steer.config.hidden_dim}-d hidden states, the decoder's are {width}-d")
    return Bundle(path, manifest, encoder, stats, denoiser, prompt_generator, decoder, classifiers, steer)


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_decoder_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """A bundle's prompt-generator weights and its decoder's adapters (None if it has none), checked
    against the manifest: what a decoder run may start from instead of random weights."""
    manifest = read_manifest(path)
    verify_files(path, manifest)
    decoder_config = bundle_decoder_config(path)
    adapter = read_tensors(path / ADAPTER) if decoder_config.adapter_rank else None
    return read_tensors(path / "prompt_generator" / WEIGHTS), adapter


def _check_dimensions(encoder_config, decoder_config, stats, denoiser, prompt_generator, classifiers, steer=None) -> None:
    dim = encoder_config.embedding_dim
    checks = [
        ("latent stats", stats.mean.shape[0]),
        ("denoiser latent_dim", denoiser.config.latent_dim),
        ("prompt generator latent_dim", prompt_generator.config.latent_dim),
        *((f"classifier {name}", c.config.embedding_dim) for name, c in classifiers.items()),
        *((("steer latent_dim", steer.config.latent_dim),) if steer is not None else ()),
    ]
    for what, value in checks:
        if value != dim:
            raise BundleError(f"dimension mismatch: the encoder gives {dim}-d embeddings but the {what} is {value}")
    if prompt_generator.config.lm_dim != decoder_config.embedding_dim:
        raise BundleError(f"dimension mismatch: prompt generator writes {prompt_generator.config.lm_dim}-d soft prompts, decoder width is {decoder_config.embedding_dim}")


def save_bundle(
    path: Path,
    *,
    encoder_config: EncoderConfig,
    stats: LatentStats,
    denoiser: Denoiser,
    prompt_generator: PromptGenerator,
    decoder_config: DecoderConfig,
    classifiers: dict[str, LinearClassifier] | None = None,
    steer: LatentSteer | None = None,
    encoder_model=None,
    lm=None,
    adapter: dict[str, torch.Tensor] | None = None,
    copies: dict[str, Path] | None = None,
    card: str = "",
    info: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle into a temporary sibling directory, then rename it into place.

    `encoder_model` (a SentenceTransformer) and `lm` ((model, tokenizer)) are stored inside the bundle
    when given, `adapter` (low-rank adapter tensors, see dglm_cli.adapters) goes to decoder/adapter.safetensors,
    and `copies` maps bundle-relative directories to model directories copied in as they are;
    the configs' references must then be {"kind": "embedded", ...}.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path} already exists (use --force to replace it)")
    with staged_dir(path) as staging:
        write_json(staging / "encoder" / CONFIG, config_to_dict(encoder_config))
        save_stats(staging / "encoder" / "latent_stats.safetensors", stats)
        if encoder_model is not None:
            save_encoder_model(staging / encoder_config.reference["path"], encoder_model)
        save_module(staging / "denoiser", denoiser)
        save_module(staging / "prompt_generator", prompt_generator)
        write_json(staging / "decoder" / CONFIG, config_to_dict(decoder_config))
        if lm is not None:
            save_lm(staging / decoder_config.reference["path"], *lm)
        if adapter is not None:
            write_tensors(staging / ADAPTER, adapter)
        for relative, source in (copies or {}).items():
            shutil.copytree(source, staging / relative, ignore=shutil.ignore_patterns("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"))
        for name, classifier in (classifiers or {}).items():
            save_classifier(staging / "classifiers" / name, classifier)
        if steer is not None:
            save_module(staging / STEER, steer)
        write_text(staging / "README.md", card or "# dglm bundle\n")
        _write_manifest(staging, encoder_config, decoder_config, info or {}, path.name)
    return path


def _write_manifest(staging: Path, encoder_config, decoder_config, info: dict, name: str) -> None:
    files = {
        str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()
    }
    forbidden = [f for f in files if f.endswith((".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"))]
    if forbidden:
        raise BundleError(f"refusing to write pickled files into a bundle: {forbidden}")
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "dglm_version": __version__,
        "components": ["encoder", "denoiser", "prompt_generator", "decoder", "classifiers", *([STEER] if (staging / STEER).is_dir() else [])],
        "encoder": encoder_config.reference,
        "decoder": decoder_config.reference,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **info,
        "files": files,
    }
    write_json(staging / MANIFEST, manifest)


def write_model_card(path: Path, text: str) -> None:
    """Replace an existing bundle's README.md (model card) and its checksum in the manifest."""
    manifest = read_manifest(path)
    write_text(path / "README.md", text)
    write_json(path / MANIFEST, {**manifest, "files": {**manifest.get("files", {}), "README.md": sha256_file(path / "README.md")}})


def add_classifier(path: Path, name: str, classifier: LinearClassifier, overwrite: bool = False) -> Path:
    """Write a classifier into an existing bundle's classifiers/<name>/ and record its files in the manifest."""
    dim = bundle_encoder_config(path).embedding_dim
    if classifier.config.embedding_dim != dim:
        raise BundleError(f"dimension mismatch: classifier {name!r} reads {classifier.config.embedding_dim}-d embeddings, the bundle's encoder gives {dim}")
    return _add_component(path, f"classifiers/{name}", classifier, f"a classifier {name!r}", overwrite)


def add_steer(path: Path, steer: LatentSteer, overwrite: bool = False) -> Path:
    """Write a latent steer into an existing bundle's steer/ and record its files in the manifest."""
    dim = bundle_encoder_config(path).embedding_dim
    if steer.config.latent_dim != dim:
        raise BundleError(f"dimension mismatch: the steer reads {steer.config.latent_dim}-d latents, the bundle's encoder gives {dim}")
    return _add_component(path, STEER, steer, "a steer", overwrite)


def _add_component(path: Path, relative: str, module: torch.nn.Module, what: str, overwrite: bool) -> Path:
    """Stage a module's config and weights, rename them into place, and update the manifest's files and components."""
    manifest = read_manifest(path)
    target = path / relative
    if target.exists() and not overwrite:
        raise BundleError(f"bundle {path} already has {what} (use --force to replace it)")
    with staged_dir(target) as staging:
        save_module(staging, module)
    prefix = f"{relative}/"
    files = {k: v for k, v in manifest.get("files", {}).items() if not k.startswith(prefix)}
    files.update({str(p.relative_to(path)): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()})
    components = manifest.get("components", [])
    component = relative.split("/")[0]
    components = components if component in components else [*components, component]
    write_json(path / MANIFEST, {**manifest, "components": components, "files": dict(sorted(files.items()))})
    return target
