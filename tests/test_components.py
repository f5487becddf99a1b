"""Denoiser, prompt generator, classifier and soft-prompted decoder: shapes, parity and save/load."""

import pytest
import torch

from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder, sample_top_p
from dglm_cli.denoiser import Denoiser, DenoiserConfig
from dglm_cli.loaders import load_classifier, load_module, save_classifier, save_module
from dglm_cli.prompt_generator import PromptGenerator, PromptGeneratorConfig
from dglm_cli.rng import RecordRNG
from dglm_cli.tiny import tiny_lm

DENOISER = DenoiserConfig(latent_dim=24, dim=32, depth=4, dim_head=16, num_tokens=4)


@pytest.fixture(params=["gpt2", "llama"])
def decoder(request):
    model, tokenizer = tiny_lm(request.param)
    return SoftPromptDecoder(model, tokenizer, DecoderConfig({"kind": "path", "path": "x"}, model.config.hidden_size))


def test_denoiser_shapes_and_null_context():
    torch.manual_seed(0)
    model = Denoiser(DENOISER)
    z, alpha2, context = torch.randn(3, 24), torch.rand(3), torch.randn(3, 24)
    assert model(z, alpha2, context).shape == (3, 24)
    null = model.null_context.expand(3, -1)
    assert torch.equal(model(z, alpha2, None), model(z, alpha2, null))


def test_classifier_free_guidance_weight_one_is_conditional():
    torch.manual_seed(0)
    model = Denoiser(DENOISER).eval()
    z, alpha2, context = torch.randn(2, 24), torch.rand(2), torch.randn(2, 24)
    conditional, unconditional = model(z, alpha2, context), model(z, alpha2, None)
    assert torch.equal(model.denoise_fn(context, 1.0)(z, alpha2), conditional)
    expected = 3.0 * conditional - 2.0 * unconditional
    assert torch.allclose(model.denoise_fn(context, 3.0)(z, alpha2), expected, atol=1e-5)


@pytest.mark.parametrize("module", [
    lambda: Denoiser(DENOISER),
    lambda: PromptGenerator(PromptGeneratorConfig(latent_dim=24, lm_dim=40, prompt_length=3, dim=32, depth=2, dim_head=16)),
])
def test_module_save_load_round_trip(tmp_path, module):
    torch.manual_seed(0)
    original = module().eval()
    for p in original.parameters():  # zero-initialised modulations would hide a loading bug
        torch.nn.init.normal_(p, std=0.1)
    save_module(tmp_path / "m", original)
    loaded = load_module(tmp_path / "m", type(original), type(original.config))
    z, alpha2 = torch.randn(2, 24), torch.rand(2)
    args = (z, alpha2, torch.randn(2, 24)) if isinstance(original, Denoiser) else (z, alpha2)
    assert torch.equal(original(*args), loaded(*args))
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))


def test_prompt_generator_shape_and_empty_prompt():
    generator = PromptGenerator(PromptGeneratorConfig(latent_dim=24, lm_dim=40, prompt_length=6, dim=32, depth=1, dim_head=16))
    assert generator(torch.randn(2, 24), torch.rand(2)).shape == (2, 6, 40)
    empty = PromptGenerator(PromptGeneratorConfig(latent_dim=24, lm_dim=40, prompt_length=0, dim=32, depth=1, dim_head=16))
    assert empty(torch.randn(2, 24), torch.rand(2)).shape == (2, 0, 40)


@pytest.mark.parametrize("labels", [["neg", "pos"], ["a", "b", "c", "d"]])
def test_classifier_round_trip_and_probabilities(tmp_path, labels):
    classifier = LinearClassifier(ClassifierConfig(labels=labels, embedding_dim=6))
    torch.nn.init.normal_(classifier.weight)
    embeddings = torch.nn.functional.normalize(torch.randn(5, 6), dim=-1)
    probs = classifier(embeddings)
    assert probs.shape == (5, len(labels)) and torch.allclose(probs.sum(-1), torch.ones(5))
    save_classifier(tmp_path / "c", classifier)
    assert torch.equal(load_classifier(tmp_path / "c")(embeddings), probs)


def test_soft_prompt_of_length_zero_is_the_plain_lm(decoder):
    prefixes = decoder.tokenize(["The cat sat", "We walked along the river and"])
    continuations = decoder.tokenize([" on the mat.", " watched"])
    batch = decoder.assemble(prefixes, torch.zeros(2, 0, decoder.config.embedding_dim), continuations)
    logits = decoder.logits(batch)
    for row, (prefix, cont) in enumerate(zip(prefixes, continuations)):
        ids = torch.tensor([prefix + cont])
        plain = decoder.model(input_ids=ids).logits[0]
        assert torch.allclose(logits[row, : ids.shape[1]], plain, atol=1e-5)


def test_continuation_loss_scores_only_the_continuation(decoder):
    prefix, cont = decoder.tokenize(["The train was late"]), decoder.tokenize([" again this morning."])
    soft = torch.randn(1, 3, decoder.config.embedding_dim)
    nll, count = decoder.continuation_nll(prefix, soft, cont)
    loss = nll / count
    batch = decoder.assemble(prefix, soft, cont)
    logits = decoder.logits(batch)[0]
    start = len(prefix[0]) + 3
    expected = torch.nn.functional.cross_entropy(logits[start - 1 : start - 1 + len(cont[0])], torch.tensor(cont[0]))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_greedy_generation_matches_transformers_generate(decoder):
    """The KV-cached loop with left padding equals HF generate on each unpadded prompt."""
    texts = ["The", "Prices of coffee and tea rose"]
    soft = torch.zeros(2, 0, decoder.config.embedding_dim)
    ours = decoder.generate(texts, soft, RecordRNG([0, 1], "tokens"), max_new_tokens=6, temperature=0)
    for text, continuation in zip(texts, ours):
        ids = torch.tensor([decoder.tokenize([text])[0]])
        reference = decoder.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
            pad_token_id=decoder.tokenizer.pad_token_id, eos_token_id=decoder.stop_ids,
        )[0, ids.shape[1]:]
        assert continuation == decoder._decode(reference.tolist())


def test_sampling_is_reproducible_and_batch_independent(decoder):
    soft = torch.randn(3, 2, decoder.config.embedding_dim)
    texts = ["The cat", "A truly awful", "Our team won"]
    first = decoder.generate(texts, soft, RecordRNG([5, 6, 7], "tokens"), max_new_tokens=8)
    assert first == decoder.generate(texts, soft, RecordRNG([5, 6, 7], "tokens"), max_new_tokens=8)
    alone = decoder.generate(texts[1:2], soft[1:2], RecordRNG([6], "tokens"), max_new_tokens=8)
    assert alone == first[1:2]


def test_reweight_sees_each_step_and_steers_the_draw(decoder):
    soft = torch.zeros(2, 0, decoder.config.embedding_dim)
    texts, forced = ["The train was", "We walked"], decoder.tokenize([" river"])[0][0]
    seen = []

    def force(generated, logits):
        seen.append(generated.shape)
        return torch.full_like(logits, float("-inf")).index_fill(1, torch.tensor([forced]), 0.0)

    out = decoder.generate(texts, soft, RecordRNG([0, 1], "tokens"), max_new_tokens=3, reweight=force)
    assert out == [decoder._decode([forced] * 3)] * 2
    assert seen == [(2, 0), (2, 1), (2, 2)]


def test_decoder_cfg_halves_follow_the_soft_prompted_lm_and_the_plain_lm(decoder):
    """The stacked batch tracks both LMs over several steps: cfg just above 1 keeps the soft-prompted
    LM's greedy choices (the unguided path), cfg = 0 the plain LM's."""
    soft = torch.randn(3, 2, decoder.config.embedding_dim)
    texts, seeds = ["The cat", "", "Prices of coffee and tea rose"], [3, 4, 5]

    def run(soft, cfg):
        return decoder.generate(texts, soft, RecordRNG(seeds, "tokens"), max_new_tokens=6, temperature=0, cfg=cfg)

    assert run(soft, 1.0 + 1e-6) == run(soft, 1.0)
    assert run(soft, 0.0) == run(soft[:, :0], 1.0)


def test_decoder_cfg_extrapolates_from_the_plain_lm(decoder):
    """With cfg = 3 the first token is the argmax of log p(·|x) + 3 (log p(·|x, soft) − log p(·|x))."""
    soft = torch.randn(2, 2, decoder.config.embedding_dim)
    texts = ["The train was", "We walked"]
    prefix_ids = decoder.tokenize(texts)
    with torch.no_grad():
        conditional = decoder.logits(decoder.assemble(prefix_ids, soft, left_pad=True), 1)[:, -1].log_softmax(-1)
        plain = decoder.logits(decoder.assemble(prefix_ids, soft[:, :0], left_pad=True), 1)[:, -1].log_softmax(-1)
    expected = (plain + 3 * (conditional - plain)).argmax(dim=-1)
    out = decoder.generate(texts, soft, RecordRNG([0, 1], "tokens"), max_new_tokens=1, temperature=0, cfg=3.0)
    assert out == [decoder._decode([token]) for token in expected.tolist()]


def test_decoder_cfg_on_a_hidden_context_follows_the_unconditional_prefixes(decoder):
    """With `unconditional_prefixes` the second half reads those prefixes: cfg = 0 gives their plain
    LM's greedy choices, cfg just above 1 the hinted prefixes' own (k = 0: no soft prompt at all)."""
    hinted, plain = ["Great news. The cat", "Bad news. Prices rose"], ["The cat", "Prices rose"]
    empty, seeds = torch.zeros(2, 0, decoder.config.embedding_dim), [3, 4]

    def run(prefixes, cfg, unconditional=None):
        return decoder.generate(prefixes, empty, RecordRNG(seeds, "tokens"), max_new_tokens=6, temperature=0, cfg=cfg,
                                unconditional_prefixes=unconditional)

    assert run(hinted, 0.0, plain) == run(plain, 1.0)
    assert run(hinted, 1.0 + 1e-6, plain) == run(hinted, 1.0)


def test_nucleus_from_the_top_candidates_matches_a_full_sort():
    logits = torch.randn(256, 1000) * torch.linspace(0.5, 8, 256)[:, None]  # flat to peaked rows
    seeds = list(range(256))
    few = sample_top_p(logits, RecordRNG(seeds, "tokens"), 0.9, 1.0, candidates=20)
    everything = sample_top_p(logits, RecordRNG(seeds, "tokens"), 0.9, 1.0, candidates=1000)
    assert torch.equal(few, everything)


def test_top_p_one_draws_from_the_whole_vocabulary_by_inverse_cdf():
    logits = torch.randn(64, 300) * 3
    seeds = list(range(64))
    tokens = sample_top_p(logits, RecordRNG(seeds, "tokens"), 1.0, 1.0)
    uniform = RecordRNG(seeds, "tokens").rand(1)  # (B, 1): the draw sample_top_p makes
    probs, order = logits.softmax(dim=-1).sort(dim=-1, descending=True)
    expected = order.gather(1, torch.searchsorted(probs.cumsum(dim=-1), uniform * probs.sum(dim=-1, keepdim=True)))
    assert torch.equal(tokens, expected.squeeze(1))


def test_continuation_loss_of_a_padded_batch_matches_each_row_alone(decoder):
    prefixes = decoder.tokenize(["The train was late", "A"])
    continuations = decoder.tokenize([" again.", " long story about the weather that day"])
    soft = torch.randn(2, 3, decoder.config.embedding_dim)
    nll, count = decoder.continuation_nll(prefixes, soft, continuations)
    for row in range(2):
        alone, alone_count = decoder.continuation_nll(prefixes[row : row + 1], soft[row : row + 1], continuations[row : row + 1])
        assert torch.allclose(nll[row], alone[0], atol=1e-4) and count[row] == alone_count[0] == len(continuations[row])


def test_bag_of_words_loss_mixes_the_soft_positions_predictions(decoder):
    import math

    prefixes = decoder.tokenize(["The cat sat", ""])
    continuations = decoder.tokenize([" on the mat.", " a longer continuation than the first"])
    soft = torch.randn(2, 3, decoder.config.embedding_dim)
    nll, count, bow = decoder.continuation_losses(prefixes, soft, continuations, bag_of_words=True)
    assert torch.allclose(nll, decoder.continuation_nll(prefixes, soft, continuations)[0])
    for row in range(2):
        logits = decoder.logits(decoder.assemble(prefixes[row : row + 1], soft[row : row + 1], continuations[row : row + 1]))[0]
        start = len(prefixes[row])
        mixture = torch.logsumexp(logits[start : start + 3].log_softmax(-1), dim=0) - math.log(3)
        assert torch.allclose(bow[row], -mixture[torch.tensor(continuations[row])].mean(), atol=1e-5)
