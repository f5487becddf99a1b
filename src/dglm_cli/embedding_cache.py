"""A disk cache of sentence embeddings keyed by (encoder identity, sha256 of the text).

Layout: DGLM_HOME/embeddings/<encoder-key>/index.json (the encoder identity and embedding dim) and
shard-*.safetensors files, each holding `sha256` (n, 32) uint8 text digests and `embeddings` (n, D)
float32. Shards are only ever added, each written to a temporary file and renamed, so concurrent or
interrupted runs never leave a partial shard and never lose another run's work.
"""

import hashlib
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

from dglm_cli.encoder import SentenceEncoder
from dglm_cli.errors import InputError
from dglm_cli.files import read_json, read_tensors, write_json, write_tensors
from dglm_cli.paths import dglm_home

SHARD_ROWS = 2048  # texts encoded between two shard writes (what an interrupted run keeps)


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def encoder_key(identity: str) -> str:
    """A directory name for an encoder identity: readable prefix + short hash (identities hold '/', '@', ':')."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", identity).strip("-.")[:48]
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


class EmbeddingCache:
    def __init__(self, identity: str, root: Path | None = None):
        self.identity = identity
        self.directory = (root or dglm_home() / "embeddings") / encoder_key(identity)

    def lookup(self, digests: list[bytes]) -> dict[bytes, torch.Tensor]:
        """The cached embeddings (D,) of those digests that are in the cache."""
        wanted = set(digests)
        found = {}
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            tensors = read_tensors(shard)
            for row, digest in enumerate(bytes(d) for d in tensors["sha256"].tolist()):
                if digest in wanted:
                    found[digest] = tensors["embeddings"][row]
        return found

    def add(self, digests: list[bytes], embeddings: torch.Tensor) -> None:
        """Store (n, D) embeddings of n texts given by their digests as one new shard."""
        self._check_index(embeddings.shape[1])
        hashes = torch.tensor([list(d) for d in digests], dtype=torch.uint8)  # (n, 32)
        shard = self.directory / f"shard-{uuid.uuid4().hex}.safetensors"
        write_tensors(shard, {"sha256": hashes, "embeddings": embeddings.float().cpu()})

    def _check_index(self, dim: int) -> None:
        index = self.directory / "index.json"
        if not index.exists():
            write_json(index, {"encoder": self.identity, "embedding_dim": dim})
            return
        stored = read_json(index)
        if stored.get("encoder") != self.identity or stored.get("embedding_dim") != dim:
            raise InputError(f"embedding cache {self.directory} belongs to another encoder ({stored.get('encoder')}, {stored.get('embedding_dim')}-d); delete it")


def embed_texts(
    texts: list[str],
    load_encoder: Callable[[], SentenceEncoder],
    cache: EmbeddingCache,
    batch_size: int = 64,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """(n, D) unit-norm embeddings of `texts` and how many texts had to be encoded.

    Only texts missing from the cache are encoded, and `load_encoder()` is called only if there are any. `on_progress(done, total)` follows
    the encoding.
    """
    digests = [text_digest(t) for t in texts]
    found = cache.lookup(digests)
    missing = {d: t for d, t in zip(digests, texts) if d not in found}  # unique missing texts
    if missing:
        found.update(_encode_missing(missing, load_encoder(), cache, batch_size, on_progress))
    return torch.stack([found[d] for d in digests]), len(missing)  # (n, D)


def _encode_missing(missing: dict[bytes, str], encoder: SentenceEncoder, cache: EmbeddingCache, batch_size: int, on_progress) -> dict[bytes, torch.Tensor]:
    order = sorted(missing, key=lambda d: len(missing[d]))  # similar lengths together: less padding
    encoded = {}
    for start in range(0, len(order), SHARD_ROWS):
        chunk = order[start : start + SHARD_ROWS]
        embeddings = encoder.encode([missing[d] for d in chunk], batch_size=batch_size).float().cpu()  # (n, D)
        cache.add(chunk, embeddings)
        encoded.update(zip(chunk, embeddings))
        if on_progress:
            on_progress(len(encoded), len(order))
    return encoded
