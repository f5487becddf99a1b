"""A bundle is closed: dglm reads only files inside its directory that its manifest lists with a digest.

- Every manifest key and every embedded model reference is a relative path with no `..` (checked
  before anything is opened, so a message never tells whether an outside file exists).
- No symbolic link in the bundle points outside it.
- Every file in the bundle (except dglm.json itself and top-level dot entries such as `.git` or
  `.gitattributes` that a Hub clone brings, which no loader reads) is listed in the manifest: an
  unlisted `pytorch_model.bin` beside (or instead of) `model.safetensors` is refused, not loaded.
- Only safetensors, JSON and the tokenizers' plain-text files are allowed; pickles never are.
- Models outside the bundle are referenced by Hub id, installed package or named asset (each verified
  by its own source), never by a bare filesystem path.
"""

import os
import re
from pathlib import Path, PurePosixPath

from dglm_cli.errors import BundleError

MANIFEST = "dglm.json"
READABLE_SUFFIXES = (".safetensors", ".json", ".txt", ".md", ".model", ".jinja")  # .txt/.model/.jinja: tokenizer vocab, sentencepiece, chat template
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def relative_key(root: Path, key: object, what: str = "the manifest") -> PurePosixPath:
    """A bundle-relative path from `what`, refused when it is absolute, empty or climbs out with `..`."""
    if not isinstance(key, str) or not key or "\\" in key or "\0" in key:
        raise BundleError(f"bundle {root}: {what} names an invalid path {key!r}")
    relative = PurePosixPath(key)
    if relative.is_absolute() or re.match(r"^[A-Za-z]:", key) or any(part in ("..", ".") for part in key.split("/")):
        raise BundleError(f"bundle {root}: {what} names a path outside the bundle: {key!r}")
    return relative


def inside(root: Path, key: object, what: str = "the manifest") -> Path:
    """root / key, checked to stay inside the bundle once symbolic links are followed."""
    path = Path(root) / relative_key(root, key, what)
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise BundleError(f"bundle {root}: {key} is a symbolic link out of the bundle")
    return path


def check_manifest_files(root: Path, manifest: dict) -> dict[str, str]:
    """The manifest's {relative path: sha256}, every key a safe path to an allowed kind of file."""
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise BundleError(f"bundle {root}: the manifest's 'files' is not an object")
    for key, digest in files.items():
        relative = relative_key(root, key)
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise BundleError(f"bundle {root}: the manifest's sha256 for {key} is not a sha256 digest")
        if relative.suffix.lower() not in READABLE_SUFFIXES:
            raise BundleError(f"bundle {root}: {key} is not a kind of file dglm loads (only safetensors, JSON and tokenizer text; never pickles)")
    return files


def check_closed(root: Path, manifest: dict) -> dict[str, str]:
    """Refuse a bundle with links out of it or files its manifest does not list; the manifest's files."""
    files = check_manifest_files(root, manifest)
    root = Path(root)
    real_root = root.resolve()
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        if here == root:  # dot-entries at the top (a loader's lock or cache) are not the bundle's
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            filenames = [f for f in filenames if not f.startswith(".")]
        for name in dirnames + filenames:
            path = here / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                raise BundleError(f"bundle {root}: {path.relative_to(root).as_posix()} is a symbolic link out of the bundle")
        for name in filenames:
            relative = (here / name).relative_to(root).as_posix()
            if relative != MANIFEST and relative not in files:
                raise BundleError(f"bundle {root}: {relative} is not listed in the manifest (dglm reads only files the manifest lists with their sha256)")
    return files


def check_reference(root: Path, reference: dict, what: str) -> None:
    """A model reference stored in a bundle: embedded ones stay inside it; no bare filesystem paths."""
    kind = reference.get("kind") if isinstance(reference, dict) else None
    if kind == "path":
        raise BundleError(
            f"bundle {root}: the {what} refers to a model outside the bundle by path ({reference.get('path')!r}); "
            "a bundle embeds its models or names them (Hub id, package, or named asset)"
        )
    if kind == "embedded":
        inside(root, reference.get("path"), f"the {what} reference")
