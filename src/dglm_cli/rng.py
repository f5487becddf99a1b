"""Per-record random streams, so that every generated record is reproducible from its own seed.

Each record owns a seed. Every random draw of the pipeline (initial noise, sampler noise, Monte-Carlo
guidance samples, re-noising, token sampling) comes from a generator derived from that seed and a named
stream, so that one stream's consumption never shifts another's: guided and unguided runs with the same
seed share their sampler noise, and a record's draws do not depend on the other records of its batch.
"""

import hashlib

import torch


def stream_seed(seed: int, stream: str) -> int:
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class RecordRNG:
    """One CPU torch.Generator per record for one named stream; draws are stacked along the batch axis.

    Draws happen on the CPU and move to `device`, so the same seed gives the same noise on every device.
    """

    def __init__(self, seeds: list[int], stream: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(stream_seed(seed, stream)) for seed in seeds]

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, *shape) standard normal, row b drawn from record b's generator."""
        rows = [torch.randn(shape, generator=g, dtype=dtype) for g in self.generators]
        return torch.stack(rows).to(self.device)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(B, *shape) uniform on [0, 1)."""
        rows = [torch.rand(shape, generator=g, dtype=dtype) for g in self.generators]
        return torch.stack(rows).to(self.device)
