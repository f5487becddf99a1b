"""Pipeline.propose: the diffusion stage alone, as benchmarks/diffusion.py measures it."""

from dataclasses import replace

import torch

from dglm_cli.datasets import VaderRow, held_out_split
from dglm_cli.pipeline import GenerationSettings

PREFIXES = ["The film was", "My order arrived", "The council said", "Our waiter"]
SETTINGS = GenerationSettings(steps=8, mc_samples=4)


def _probability(pipeline, proposals, target) -> torch.Tensor:
    embeddings = pipeline.bundle.stats.to_embedding(proposals)
    return target.classifier.log_probs(embeddings)[:, target.label_index].exp()


def test_proposals_are_reproducible_latents_of_unit_norm_embeddings(tiny_pipeline):
    seeds = list(range(len(PREFIXES)))
    first = tiny_pipeline.propose(PREFIXES, seeds, [], SETTINGS)
    assert first.shape == (len(PREFIXES), tiny_pipeline.bundle.stats.mean.shape[0])
    norms = tiny_pipeline.bundle.stats.to_embedding(first).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert torch.equal(first, tiny_pipeline.propose(PREFIXES, seeds, [], SETTINGS))
    # a record's proposal depends on its own seed only, not on its batch (up to float rounding)
    torch.testing.assert_close(first[1:2], tiny_pipeline.propose(PREFIXES[1:2], seeds[1:2], [], SETTINGS))


def test_guided_proposals_raise_the_target_probability(tiny_pipeline):
    seeds = list(range(len(PREFIXES)))
    (target,) = tiny_pipeline.targets(["tiny-sentiment:positive"])
    unguided = tiny_pipeline.propose(PREFIXES, seeds, [], SETTINGS)
    assert torch.equal(unguided, tiny_pipeline.propose(PREFIXES, seeds, [target], replace(SETTINGS, guidance_scale=0.0)))
    for gradient in ("full", "fast"):
        guided = tiny_pipeline.propose(PREFIXES, seeds, [target], replace(SETTINGS, guidance_scale=20.0, guidance_gradient=gradient))
        assert _probability(tiny_pipeline, guided, target).mean() > _probability(tiny_pipeline, unguided, target).mean()


def test_held_out_split_is_seeded_disjoint_and_complete():
    rows = [VaderRow(f"sentence {i}", 0.0, "movie") for i in range(50)]
    held_out, train = held_out_split(rows, seed=3)
    assert (len(held_out), len(train)) == (5, 45)
    assert sorted(held_out + train, key=lambda r: r.text) == sorted(rows, key=lambda r: r.text)
    assert held_out_split(rows, seed=3) == (held_out, train)
    assert held_out_split(rows, seed=4)[0] != held_out


def test_generate_is_decode_of_propose(tiny_pipeline):
    settings = replace(SETTINGS, max_new_tokens=5, seed=7)
    seeds = [7 + i for i in range(len(PREFIXES))]  # record i gets seed + i
    proposals = tiny_pipeline.propose(PREFIXES, seeds, [], settings)
    records = tiny_pipeline.generate(PREFIXES, settings=settings)
    assert tiny_pipeline.decode(PREFIXES, seeds, proposals, settings) == [r["continuation"] for r in records]
