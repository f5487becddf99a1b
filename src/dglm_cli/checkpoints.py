"""Training-run checkpoints: resumable state, written so that a kill mid-save never loses the last good one.

<run>/checkpoints/step-000500/  weights.safetensors (head), ema.safetensors, optimizer.safetensors +
                                optimizer.json, extra.safetensors, lm/ (fine-tuned LM, if any)
<run>/checkpoints/latest.json   {"step": 500, "dir": "step-000500"}, replaced atomically after the
                                directory is complete; older checkpoint directories are then removed.
Like bundles, checkpoints hold only safetensors and JSON.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from dglm_cli.errors import BundleError
from dglm_cli.files import read_json, read_tensors, staged_dir, write_json, write_tensors

KEEP = 2  # checkpoint directories kept


@dataclass
class Checkpoint:
    step: int
    directory: Path
    weights: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict
    extra: dict[str, torch.Tensor]
    lm: dict[str, torch.Tensor] | None


def save_checkpoint(run_dir: Path, step: int, weights, ema, optimizer: dict, extra, lm=None) -> Path:
    root = run_dir / "checkpoints"
    name = f"step-{step:07d}"
    final = root / name
    with staged_dir(final) as staging:
        write_tensors(staging / "weights.safetensors", weights)
        write_tensors(staging / "ema.safetensors", ema)
        tensors, structure = flatten_optimizer_state(optimizer)
        write_tensors(staging / "optimizer.safetensors", tensors)
        write_json(staging / "optimizer.json", structure)
        write_tensors(staging / "extra.safetensors", extra or {"none": torch.zeros(0)})
        if lm is not None:
            write_tensors(staging / "lm.safetensors", lm)
        _fsync_dir(staging)
    write_json(root / "latest.json", {"step": step, "dir": name})
    _prune(root, keep={name})
    return final


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    root = run_dir / "checkpoints"
    if not (root / "latest.json").exists():
        return None
    latest = read_json(root / "latest.json")
    directory = root / latest["dir"]
    if not directory.is_dir():
        raise BundleError(f"{root / 'latest.json'} points to a missing checkpoint {latest['dir']}")
    optimizer = unflatten_optimizer_state(read_tensors(directory / "optimizer.safetensors"), read_json(directory / "optimizer.json"))
    extra = read_tensors(directory / "extra.safetensors")
    lm_path = directory / "lm.safetensors"
    return Checkpoint(
        step=latest["step"],
        directory=directory,
        weights=read_tensors(directory / "weights.safetensors"),
        ema=read_tensors(directory / "ema.safetensors"),
        optimizer=optimizer,
        extra={k: v for k, v in extra.items() if k != "none"},
        lm=read_tensors(lm_path) if lm_path.exists() else None,
    )


def flatten_optimizer_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors, JSON structure); no pickle needed."""
    tensors, per_param = {}, {}
    for index, values in state["state"].items():
        entry = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
                entry[key] = {"tensor": f"{index}.{key}"}
            else:
                entry[key] = value
        per_param[str(index)] = entry
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    state = {}
    for index, entry in structure["state"].items():
        state[int(index)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v for k, v in entry.items()}
    return {"state": state, "param_groups": structure["param_groups"]}


def _prune(root: Path, keep: set[str]) -> None:
    directories = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in directories[:-KEEP]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):  # staging left by a killed save
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
