"""Where dglm keeps its own files (classifiers, converted decoders, caches), and where installed packages are."""

import importlib.util
import os
from pathlib import Path

from dglm_cli.errors import AssetError


def dglm_home() -> Path:
    """`DGLM_HOME`, or the platform's user cache directory (e.g. ~/.cache/dglm)."""
    if env := os.environ.get("DGLM_HOME"):
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dglm", appauthor=False))


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"the Python package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])
