"""Labeled data obtainable without a model hub: the VADER ground truth (Hutto & Gilbert, ICWSM 2014).

The human-rated sentences ship inside the source distribution of `vaderSentiment==3.3.2` (MIT),
in additional_resources/hutto_ICWSM_2014.tar.gz. `vader_ground_truth` downloads that sdist with pip,
checks the sha256 of the sdist, of the inner archive and of each extracted file, and caches the four
`*_GroundTruth.txt` files under DGLM_HOME/data/vader. Lines are `id<TAB>mean valence in [-4, 4]<TAB>text`.
"""

import hashlib
import io
import random
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dglm_cli.errors import AssetError, InputError
from dglm_cli.fetch import pip_download
from dglm_cli.files import write_bytes
from dglm_cli.paths import dglm_home

VADER_REQUIREMENT = "vadersentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
VADER_ARCHIVE_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
VADER_FILES = {  # domain -> (file inside hutto_ICWSM_2014/, its sha256)
    "movie": ("movieReviewSnippets_GroundTruth.txt", "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
    "tweet": ("tweets_GroundTruth.txt", "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
}


@dataclass(frozen=True)
class VaderRow:
    text: str
    valence: float  # mean human rating in [-4, 4]
    domain: str  # movie, tweet, amazon or nyt


def vader_ground_truth(domains: list[str] | None = None, cache_dir: Path | None = None) -> list[VaderRow]:
    """The rated sentences of the given domains (default: all four), downloading them on first use."""
    domains = list(VADER_FILES) if domains is None else domains
    unknown = sorted(set(domains) - set(VADER_FILES))
    if unknown:
        raise InputError(f"unknown VADER domain {unknown[0]!r}; choose from {', '.join(VADER_FILES)}")
    directory = cache_dir or dglm_home() / "data" / "vader"
    if not all((directory / VADER_FILES[d][0]).is_file() for d in domains):
        _extract_ground_truth(directory)
    return [row for domain in domains for row in _parse(directory / VADER_FILES[domain][0], domain)]


def held_out_split(rows: list[VaderRow], seed: int, fraction: float = 0.1) -> tuple[list[VaderRow], list[VaderRow]]:
    """(held out, train): the rows shuffled by `seed`, the first `fraction` of them held out."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    held_out = int(len(shuffled) * fraction)
    return shuffled[:held_out], shuffled[held_out:]


def _parse(path: Path, domain: str) -> list[VaderRow]:
    data = path.read_bytes()
    _check_sha256(data, VADER_FILES[domain][1], path.name)
    rows = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[2].strip():
            rows.append(VaderRow(parts[2].strip(), float(parts[1]), domain))
    return rows


def _extract_ground_truth(directory: Path) -> None:
    with tempfile.TemporaryDirectory() as download:
        sdist = pip_download(VADER_REQUIREMENT, Path(download), sdist=True).read_bytes()
    _check_sha256(sdist, VADER_SDIST_SHA256, VADER_SDIST)
    with tarfile.open(fileobj=io.BytesIO(sdist)) as outer:
        archive = outer.extractfile(VADER_ARCHIVE).read()
    _check_sha256(archive, VADER_ARCHIVE_SHA256, "hutto_ICWSM_2014.tar.gz")
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as inner:
        for name, digest in VADER_FILES.values():
            data = inner.extractfile(f"hutto_ICWSM_2014/{name}").read()
            _check_sha256(data, digest, name)
            write_bytes(directory / name, data)


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise AssetError(f"sha256 mismatch for {what}: expected {expected}, got {actual}")
