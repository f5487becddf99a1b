"""Low-rank adapters: zero-initialised = the plain LM; merged into the weights = the wrapped model."""

import pytest
import torch

from dglm_cli.adapters import adaptable_layers, adapter_state, add_adapters, load_adapter_state, merge_adapters
from dglm_cli.tiny import tiny_lm

IDS = torch.tensor([[5, 17, 3, 42, 8, 9]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_fresh_adapters_leave_the_model_unchanged_and_merge_exactly(kind):
    model, _ = tiny_lm(kind)
    plain = logits(model)
    layers = adaptable_layers(model)
    assert layers and model.get_output_embeddings() not in [model.get_submodule(n) for n in layers]
    add_adapters(model, rank=4)
    assert torch.allclose(logits(model), plain, atol=1e-6)
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.endswith((".down", ".up")))
    for name, p in model.named_parameters():
        if name.endswith(".up"):
            torch.nn.init.normal_(p, std=0.05)
    wrapped = logits(model)
    state = adapter_state(model)
    assert not torch.allclose(wrapped, plain, atol=1e-3)

    fresh, _ = tiny_lm(kind)
    merge_adapters(fresh, state)
    assert torch.allclose(logits(fresh), wrapped, atol=1e-5)

    reloaded, _ = tiny_lm(kind)
    add_adapters(reloaded, rank=4)
    load_adapter_state(reloaded, state)
    assert torch.allclose(logits(reloaded), wrapped, atol=1e-6)


def test_adapters_of_another_model_do_not_merge():
    gpt2, _ = tiny_lm("gpt2")
    add_adapters(gpt2, rank=2)
    llama, _ = tiny_lm("llama")
    with pytest.raises(KeyError):
        merge_adapters(llama, adapter_state(gpt2))
