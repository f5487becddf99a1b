"""Low-rank adapters (LoRA, Hu et al. 2021): fine-tune a decoder and ship only a small delta.

Each adapted projection y = W x becomes y = W x + B (A x) with A (r, in) and B (out, r); B starts at
zero, so training starts from the plain LM. Training wraps the layers (`add_adapters`); a bundle keeps
A and B (`adapter_state`); loading folds B·A into W (`merge_adapters`), so generation costs nothing extra.
Adapted: every linear projection inside the model (nn.Linear, and GPT-2's Conv1D), not the output head.
"""

import math

import torch
from torch import nn


class LowRankAdapter(nn.Module):
    def __init__(self, base: nn.Module, rank: int):
        super().__init__()
        in_features, out_features = _in_out(base)
        self.base = base
        device = base.weight.device
        self.down = nn.Parameter(torch.randn(rank, in_features, device=device) / math.sqrt(in_features))  # A (r, in)
        self.up = nn.Parameter(torch.zeros(out_features, rank, device=device))  # B (out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.down), self.up)


def adaptable_layers(model: nn.Module) -> list[str]:
    """Names of the linear projections an adapter may wrap (the output head excluded)."""
    head = model.get_output_embeddings()
    return [name for name, module in model.named_modules() if _is_projection(module) and module is not head]


def add_adapters(model: nn.Module, rank: int) -> None:
    """Freeze `model` and wrap each adaptable projection in a trainable rank-`rank` adapter."""
    model.requires_grad_(False)
    for name in adaptable_layers(model):
        parent, child = _parent(model, name)
        setattr(parent, child, LowRankAdapter(getattr(parent, child), rank))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.down": A, "<layer>.up": B} of every adapter in `model`."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, LowRankAdapter):
            state[f"{name}.down"], state[f"{name}.up"] = module.down.detach(), module.up.detach()
    return state


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved A and B into the adapters of a model wrapped by `add_adapters`."""
    for name, module in model.named_modules():
        if isinstance(module, LowRankAdapter):
            module.down.data.copy_(state[f"{name}.down"])
            module.up.data.copy_(state[f"{name}.up"])


@torch.no_grad()
def merge_adapters(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """W += B·A for every adapter in `state`, on an unwrapped model. Unknown layer names raise KeyError."""
    modules = dict(model.named_modules())
    layers = sorted({key.rsplit(".", 1)[0] for key in state})
    for name in layers:
        base = modules[name]
        delta = state[f"{name}.up"].float() @ state[f"{name}.down"].float()  # (out, in)
        base.weight += (delta if isinstance(base, nn.Linear) else delta.T).to(base.weight.dtype)  # Conv1D stores (in, out)


def adapter_rank(state: dict[str, torch.Tensor]) -> int:
    return next(v.shape[0] for k, v in state.items() if k.endswith(".down"))


def _is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.weight.shape[0], module.weight.shape[1]  # transformers' Conv1D: weight (in, out)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, child = name.rpartition(".")
    return (model.get_submodule(path) if path else model), child
