"""File plumbing: the only module that writes files atomically, hashes them, and reads or writes JSON
and safetensors.

Every write goes through a temporary sibling and a rename (`os.replace`), so a crash or a kill never
leaves half a file or half a directory behind:

  write_text / write_json / write_tensors   one file
  atomic_file(path)                         an open text/binary file that replaces `path` on success
  staged_dir(target)                        a temporary sibling directory renamed onto `target` on success

This module stays light: torch and safetensors are imported inside the tensor functions only, so the
CLI's `--help` and the asset layer never pay for them.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dglm_cli import strict_json
from dglm_cli.errors import BundleError

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------- hashing and messages


def hash_file(path: Path, digest=None) -> str:
    """Hex digest of a file read in 1 MiB blocks (sha256 unless another hashlib object is given)."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return hash_file(path)


def first_line(error: Exception) -> str:
    """The first non-blank line of an exception's message, or its type name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# ---------------------------------------------------------------- atomic writes


@contextmanager
def atomic_file(path: Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """An open temporary file beside `path` that replaces it when the block ends without an error
    (and is removed when it raises). `kwargs` go to open(), e.g. encoding="utf-8"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, **kwargs)
    try:
        with file:
            yield file
        os.replace(file.name, path)
    except BaseException:
        Path(file.name).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write text through a temporary file and a rename, so a crash never leaves half a file."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


@contextmanager
def staged_dir(target: Path, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling directory of `target`, renamed onto it when the block ends without an error
    (and removed when it raises). With replace=False an existing `target` is kept and the staged copy
    dropped (another process finished the same work first)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists() and not replace:
            shutil.rmtree(staging, ignore_errors=True)
        else:
            replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(staging: Path, path: Path) -> None:
    """Rename a finished directory onto `path`, moving an existing one aside first and removing it after."""
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, path)


# ---------------------------------------------------------------- JSON and tensors


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"corrupt JSON in {path}: {error}") from None


def write_json(path: Path, data: dict) -> None:
    write_text(Path(path), strict_json.dumps(data, indent=2) + "\n")


def write_tensors(path: Path, tensors: "dict[str, torch.Tensor]", metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    seen, plain = set(), {}
    for key, value in tensors.items():
        value = value.detach().contiguous().cpu()
        plain[key] = value.clone() if value.data_ptr() in seen else value  # tied weights share storage
        seen.add(value.data_ptr())
    save_file(plain, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def read_tensors(path: Path) -> "dict[str, torch.Tensor]":
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise BundleError(f"missing file: {path}") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise BundleError(f"corrupt weights in {path}: {error}") from None
