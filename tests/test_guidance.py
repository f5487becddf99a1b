"""Classifier guidance on a toy latent problem with an exact denoiser."""

import torch

from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.encoder import LatentStats
from dglm_cli.guidance import AttributeTarget, aggregate_losses, classifier_guidance
from dglm_cli.rng import RecordRNG
from dglm_cli.sampler import sample

DIM = 8
SEEDS = list(range(64))


def exact_denoiser(z, alpha2):
    """Data x ~ N(0, I): E[x | z_t] = α z_t, so the exact v-prediction is 0."""
    return torch.zeros_like(z)


def axis_classifier(axis: int, labels=("negative", "positive"), strength=6.0) -> LinearClassifier:
    classifier = LinearClassifier(ClassifierConfig(labels=list(labels), embedding_dim=DIM))
    with torch.no_grad():
        classifier.weight[0, axis] = strength
    return classifier


def run(targets, scale, aggregate="lgd", gradient="full"):
    stats = LatentStats(torch.zeros(DIM), torch.ones(DIM))
    denoise = classifier_guidance(
        exact_denoiser, targets, scale, stats.to_embedding, RecordRNG(SEEDS, "guidance"), 16, aggregate, gradient
    )
    z = RecordRNG(SEEDS, "init").randn(DIM)
    return stats.to_embedding(sample(denoise, z, steps=25, rng=RecordRNG(SEEDS, "sampler")))


def probability(classifier, embeddings, label):
    return classifier(embeddings)[:, classifier.labels.index(label)].mean().item()


def test_scale_zero_is_bit_identical_to_unguided():
    target = AttributeTarget("axis", axis_classifier(0), "positive")
    assert torch.equal(run([target], 0.0), run([], 5.0))


def test_guidance_raises_the_target_probability():
    classifier = axis_classifier(0)
    unguided = probability(classifier, run([], 0.0), "positive")
    guided = probability(classifier, run([AttributeTarget("axis", classifier, "positive")], 3.0), "positive")
    assert 0.3 < unguided < 0.7
    assert guided > unguided + 0.25


def test_fast_gradient_is_exact_for_standard_gaussian_latents():
    """For x ~ N(0, I) the denoiser's Jacobian ∂x̂/∂z_t is exactly α·I, so both gradients agree."""
    target = AttributeTarget("axis", axis_classifier(0), "positive")
    full, fast = run([target], 3.0), run([target], 3.0, gradient="fast")
    assert torch.allclose(full, fast, atol=1e-5)


def test_fast_gradient_skips_the_backward_pass_through_the_denoiser():
    calls = []

    def denoiser(z, alpha2):
        calls.append(z.requires_grad)
        return torch.zeros_like(z)

    stats = LatentStats(torch.zeros(DIM), torch.ones(DIM))
    target = AttributeTarget("axis", axis_classifier(0), "positive")
    guided = classifier_guidance(denoiser, [target], 3.0, stats.to_embedding, RecordRNG(SEEDS, "guidance"), 4, gradient="fast")
    guided(torch.randn(len(SEEDS), DIM), torch.full((len(SEEDS),), 0.5))
    assert calls == [False]


def test_avoid_pushes_away_and_harmonic_aggregate_also_guides():
    classifier = axis_classifier(0)
    unguided = probability(classifier, run([], 0.0), "positive")
    avoided = probability(classifier, run([AttributeTarget("axis", classifier, "positive", avoid=True)], 3.0), "positive")
    harmonic = probability(classifier, run([AttributeTarget("axis", classifier, "positive")], 3.0, "harmonic"), "positive")
    assert avoided < unguided - 0.25
    assert harmonic > unguided + 0.25


def test_several_attributes_compose_with_weights():
    first, second = axis_classifier(0), axis_classifier(1)
    both = run([AttributeTarget("a", first, "positive"), AttributeTarget("b", second, "negative")], 3.0)
    assert probability(first, both, "positive") > 0.75
    assert probability(second, both, "negative") > 0.75
    heavy_first = run([AttributeTarget("a", first, "positive", 4.0), AttributeTarget("b", second, "negative", 0.25)], 3.0)
    assert probability(first, heavy_first, "positive") > probability(first, both, "positive")
    assert probability(second, heavy_first, "negative") < probability(second, both, "negative")


def test_multiclass_target():
    classifier = LinearClassifier(ClassifierConfig(labels=["a", "b", "c"], embedding_dim=DIM))
    with torch.no_grad():
        classifier.weight[:, :3] = 6 * torch.eye(3)
    unguided = probability(classifier, run([], 0.0), "c")
    guided = probability(classifier, run([AttributeTarget("abc", classifier, "c")], 3.0), "c")
    assert guided > unguided + 0.25


def test_aggregates_bracket_the_mean_loss():
    losses = torch.tensor([[0.1, 2.0, 5.0]])
    mean_probability_loss = -torch.log(torch.exp(-losses).mean())
    assert torch.allclose(aggregate_losses(losses, "lgd"), mean_probability_loss)
    assert aggregate_losses(losses, "lgd") < losses.mean() < aggregate_losses(losses, "harmonic")
