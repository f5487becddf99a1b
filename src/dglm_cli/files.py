"""Small file and message helpers shared by modules that must stay light (no torch import)."""

import hashlib
from pathlib import Path


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
