"""Saved classifiers under DGLM_HOME/classifiers/<name>/ (config.json + model.safetensors, via loaders.py).

Each label of a saved classifier is an attribute for `dglm generate --attr`, usable with any bundle
whose encoder is the one the classifier was trained on (compared by encoder identity).
"""

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from dglm_cli.assets import EncoderRef
from dglm_cli.bundle import Bundle, add_classifier, bundle_encoder_config, encoder_identity, find_bundle
from dglm_cli.classifier import LinearClassifier
from dglm_cli.errors import BundleError, InputError
from dglm_cli.files import read_json, staged_dir
from dglm_cli.loaders import CONFIG, load_classifier, save_classifier
from dglm_cli.paths import dglm_home

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class SavedClassifier:
    name: str
    path: Path
    config: dict  # config.json as stored (labels, embedding_dim, encoder, metrics, info)

    @property
    def labels(self) -> list[str]:
        return self.config.get("labels", [])

    @property
    def encoder(self) -> EncoderRef:
        return EncoderRef.from_dict(self.config.get("encoder"))

    @property
    def encoder_identity(self) -> str | None:
        return self.encoder.identity


def store_dir() -> Path:
    return dglm_home() / "classifiers"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InputError(f"invalid classifier name {name!r}: use letters, digits, '.', '_' or '-' (no ':' or '/'), starting with a letter or digit")
    return name


def exists(name: str) -> bool:
    return (store_dir() / check_name(name) / CONFIG).is_file()


def check_free(name: str, force: bool = False) -> None:
    """Refuse a name that would overwrite a saved classifier, unless forced."""
    if exists(name) and not force:
        raise InputError(f"a classifier named {name!r} already exists (use --force to replace it, or choose another --name)")


def save(name: str, classifier: LinearClassifier, force: bool = False) -> Path:
    """Write into a temporary sibling directory, then rename it into place."""
    check_free(name, force)
    target = store_dir() / name
    with staged_dir(target) as staging:
        save_classifier(staging, classifier)
    return target


def list_saved() -> list[SavedClassifier]:
    directory = store_dir()
    if not directory.is_dir():
        return []
    return [
        SavedClassifier(d.name, d, read_json(d / CONFIG))
        for d in sorted(directory.iterdir())
        if d.is_dir() and NAME.fullmatch(d.name) and (d / CONFIG).is_file()
    ]


def get(name: str) -> SavedClassifier:
    if not exists(name):
        names = ", ".join(c.name for c in list_saved()) or "none (train one with `dglm train-classifier`)"
        raise InputError(f"no saved classifier named {name!r}; saved: {names}")
    path = store_dir() / name
    return SavedClassifier(name, path, read_json(path / CONFIG))


def load(name: str, device: str = "cpu") -> LinearClassifier:
    return load_classifier(get(name).path, device)


def remove(name: str) -> Path:
    path = get(name).path
    shutil.rmtree(path)
    return path


def export(name: str, bundle: str | Path, as_name: str | None = None, force: bool = False) -> Path:
    """Copy a saved classifier into a bundle (refused if it was trained on another encoder)."""
    saved = get(name)
    path = find_bundle(bundle)
    reason = incompatibility(saved, encoder_identity(bundle_encoder_config(path).reference, path), path)
    if reason:
        raise BundleError(reason)
    return add_classifier(path, check_name(as_name or name), load_classifier(saved.path), overwrite=force)


def incompatibility(saved: SavedClassifier, bundle_identity: str, bundle_path: Path) -> str | None:
    """Why `saved` cannot read a bundle's embeddings, or None if it can."""
    if saved.encoder_identity == bundle_identity:
        return None
    trained_on = saved.encoder.description or saved.encoder_identity or "an unknown encoder"
    return (
        f"classifier {saved.name!r} was trained on encoder {trained_on} ({saved.encoder_identity}), but bundle "
        f"{bundle_path.name} uses {bundle_identity}; retrain it with `dglm train-classifier DATA --bundle {bundle_path}`"
    )


def guidance_classifiers(bundle: Bundle, device: str = "cpu") -> tuple[dict[str, LinearClassifier], dict[str, tuple[list[str], str]]]:
    """Classifiers usable with `bundle`: its own plus the compatible saved ones (a saved one wins a name clash).

    Also returns the saved classifiers that are refused, as name -> (labels, reason).
    """
    identity = encoder_identity(bundle.encoder.config.reference, bundle.path)
    usable = dict(bundle.classifiers)
    refused = {}
    for saved in list_saved():
        reason = incompatibility(saved, identity, bundle.path)
        if reason:
            refused[saved.name] = (saved.labels, reason)
        else:
            usable[saved.name] = _load_saved(saved, device)
    return usable, refused


def _load_saved(saved: SavedClassifier, device: str) -> LinearClassifier:
    try:
        return load_classifier(saved.path, device)
    except BundleError as error:
        raise BundleError(f"saved classifier {saved.name!r} is unreadable ({error}); remove it with `dglm classifiers rm {saved.name}`") from None
