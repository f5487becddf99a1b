"""Where dglm keeps its own files (classifiers, converted decoders, caches)."""

import os
from pathlib import Path


def dglm_home() -> Path:
    """`DGLM_HOME`, or the platform's user cache directory (e.g. ~/.cache/dglm)."""
    if env := os.environ.get("DGLM_HOME"):
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dglm", appauthor=False))
