"""The latent steer: parity with the plain LM, its loss against the full softmax, the state cache, runs."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dglm_cli.bundle import add_steer, load_bundle
from dglm_cli.cli import app
from dglm_cli.corpus import CorpusConfig, build_corpus, load_corpus, read_documents, save_corpus
from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder
from dglm_cli.lm_states import StateCacheConfig, cache_states, load_states
from dglm_cli.objectives import SteerObjective
from dglm_cli.pipeline import GenerationSettings, Pipeline
from dglm_cli.rng import RecordRNG
from dglm_cli.steer import BoundSteer, LatentSteer, SteerConfig, Teacher, candidate_losses, output_logits
from dglm_cli.tiny import ENCODER_DIM, SENTENCES, tiny_lm
from test_training import invoke, metrics, soup, validations  # noqa: F401  (soup is a fixture)

PROMPTS = ["The train was", "I loved every"]


def random_steer(hidden_dim: int, candidates: int = 8, seed: int = 0) -> LatentSteer:
    torch.manual_seed(seed)
    steer = LatentSteer(SteerConfig(latent_dim=ENCODER_DIM, hidden_dim=hidden_dim, candidates=candidates))
    for layer in (steer.out, steer.latent_shift):  # trained steers are not zero
        torch.nn.init.normal_(layer.weight, std=0.5)
    return steer.eval()


def decoder_of(family: str, tied: bool = True) -> SoftPromptDecoder:
    model, tokenizer = tiny_lm(family)
    if not tied:  # a separate output head, initialised away from the input embeddings
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.1)
        assert model.lm_head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    return SoftPromptDecoder(model, tokenizer, DecoderConfig({"kind": "path", "path": "tiny"}, model.config.hidden_size))


@pytest.fixture(params=["gpt2", "llama"])
def steered_bundle(request, tiny_bundle, tiny_llama_bundle, tmp_path):
    """A copy of a tiny bundle with a random steer, and the bundle it was copied from."""
    original = {"gpt2": tiny_bundle, "llama": tiny_llama_bundle}[request.param]
    copy = shutil.copytree(original, tmp_path / "steered")
    add_steer(copy, random_steer(load_bundle(original).decoder.config.embedding_dim))
    return copy, original


def continuations(bundle, **settings) -> list[str]:
    pipeline = Pipeline.from_bundle(bundle, "cpu")
    records = pipeline.generate(PROMPTS, settings=GenerationSettings(num_samples=2, steps=3, max_new_tokens=6, **settings))
    return [r["continuation"] for r in records]


def test_strength_zero_is_the_bundle_without_a_steer(steered_bundle):
    steered, original = steered_bundle
    plain = continuations(original)
    assert continuations(steered, steer=0.0) == plain  # bit for bit
    assert continuations(steered) != plain  # the bundle's default strength (1) steers
    record = next(Pipeline.from_bundle(steered, "cpu").generate(PROMPTS[:1], settings=GenerationSettings(steps=2, max_new_tokens=2)))
    assert record["meta"]["steer"] == 1.0


def test_a_steer_s_guidance_scale_is_the_default_while_it_is_on(steered_bundle):
    steered, original = steered_bundle
    steer = load_bundle(steered).steer
    steer.config.guidance_scale = 30.0
    add_steer(steered, steer, overwrite=True)
    pipeline = Pipeline.from_bundle(steered, "cpu")

    def scale(**settings) -> float:
        record = next(pipeline.generate(PROMPTS[:1], ["positive"], settings=GenerationSettings(steps=2, max_new_tokens=2, **settings)))
        return record["guidance"]["scale"]

    assert (scale(), scale(guidance_scale=5.0), scale(steer=0.0)) == (30.0, 5.0, 7.0)
    assert continuations(steered, steer=0.0) == continuations(original)  # the steer off is the bundle without it, scale included


@pytest.mark.parametrize("family,tied", [("gpt2", False), ("gpt2", True), ("llama", True)])
def test_hidden_states_are_the_input_of_the_output_layer(family, tied):
    decoder = decoder_of(family, tied)
    states = decoder.continuation_states([[5, 6], [7]], torch.zeros(2, 0, decoder.config.embedding_dim), [[8, 9, 10], [11]], candidates=4)
    assert states.hidden.shape == (4, decoder.config.embedding_dim) and states.targets.tolist() == [8, 9, 10, 11]
    with torch.no_grad():
        logits = decoder.model(input_ids=torch.tensor([[5, 6, 8, 9]])).logits[0, 1:]  # positions predicting 8, 9, 10
    head = decoder.model.get_output_embeddings()
    assert torch.allclose(output_logits(states.hidden[:3], head.weight, None), logits, atol=1e-4)
    assert torch.equal(states.candidates[:3], logits.topk(4, dim=-1).indices)


@pytest.mark.parametrize("family,tied", [("gpt2", False), ("llama", True)])
def test_candidate_loss_over_the_whole_vocabulary_is_the_full_softmax(family, tied):
    decoder = decoder_of(family, tied)
    vocabulary = decoder.model.config.vocab_size
    states = decoder.continuation_states([[5, 6], [7, 3]], torch.zeros(2, 0, decoder.config.embedding_dim), [[8, 9, 10], [11, 12]],
                                         candidates=vocabulary)
    steer = random_steer(decoder.config.embedding_dim)
    z = torch.randn(len(states.targets), ENCODER_DIM)
    weight = decoder.model.get_output_embeddings().weight.detach()
    with torch.no_grad():
        delta = steer(states.hidden, z)
        full = F.cross_entropy((states.hidden + delta) @ weight.T, states.targets, reduction="none")
        index = (states.candidates == states.targets[:, None]).int().argmax(dim=1)  # every token is a candidate
        base, shift = output_logits(torch.stack([states.hidden, delta]), weight, states.candidates)
        ce, _, _ = candidate_losses(base, shift, index)
        ce_vocabulary, _, _ = candidate_losses(*output_logits(torch.stack([states.hidden, delta]), weight, None), states.targets)
    assert torch.allclose(ce, full, atol=1e-4) and torch.allclose(ce_vocabulary, full, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
def test_the_objective_over_the_whole_vocabulary_matches_every_token_as_a_candidate(bias):
    """The whole-vocabulary path (one product W·(h + δ) with the gradient) gives the losses and gradients of the
    candidate path with all V tokens as candidates."""
    hidden_dim, vocabulary, tokens = 16, 50, 12
    torch.manual_seed(1)
    output_layer = torch.nn.Linear(hidden_dim, vocabulary, bias=bias)
    hidden, z = torch.randn(tokens, hidden_dim), torch.randn(tokens, ENCODER_DIM)
    target = torch.randint(0, vocabulary, (tokens,))
    everything = torch.arange(vocabulary).expand(tokens, vocabulary)
    results = []
    for candidates in (None, everything):
        objective = SteerObjective(random_steer(hidden_dim, candidates=0), output_layer)
        ce, kl, _ = objective(hidden, z, candidates, target)
        (ce.mean() + kl.mean()).backward()
        results.append((ce, kl, [p.grad for p in objective.steer.parameters()]))
    (ce, kl, grads), (ce_k, kl_k, grads_k) = results
    assert torch.allclose(ce, ce_k, atol=1e-5) and torch.allclose(kl, kl_k, atol=1e-5)
    assert all(torch.allclose(g, g_k, atol=1e-5) for g, g_k in zip(grads, grads_k, strict=True))


def test_bound_steer_keeps_the_mass_outside_its_candidates():
    decoder = decoder_of("llama")
    steer = random_steer(decoder.config.embedding_dim, candidates=5)
    hidden, logits = torch.randn(3, decoder.config.embedding_dim), torch.randn(3, decoder.model.config.vocab_size)
    steered = BoundSteer(steer, decoder.model.get_output_embeddings(), torch.randn(3, ENCODER_DIM), 2.0)(hidden, logits)
    top = logits.topk(5, dim=-1).indices
    outside = torch.ones_like(logits, dtype=torch.bool).scatter(1, top, False)
    assert torch.equal(steered[outside], logits[outside])  # untouched logits, and the same total mass on the candidates:
    assert torch.allclose(steered.gather(1, top).logsumexp(-1), logits.gather(1, top).logsumexp(-1))
    assert not torch.allclose(steered.gather(1, top), logits.gather(1, top))


def test_bound_steer_in_the_nucleus_re_ranks_only_the_tokens_plain_sampling_could_draw():
    decoder = decoder_of("llama")
    steer = random_steer(decoder.config.embedding_dim, candidates=12)
    hidden, logits = torch.randn(3, decoder.config.embedding_dim), 3 * torch.randn(3, decoder.model.config.vocab_size)
    steered = BoundSteer(steer, decoder.model.get_output_embeddings(), torch.randn(3, ENCODER_DIM), 2.0, top_p=0.6)(hidden, logits)
    order = logits.softmax(-1).sort(dim=-1, descending=True)
    nucleus = torch.zeros_like(logits, dtype=torch.bool).scatter(1, order.indices, order.values.cumsum(-1) - order.values < 0.6)
    nucleus &= torch.zeros_like(nucleus).scatter(1, logits.topk(12, dim=-1).indices, True)
    assert torch.equal(steered[~nucleus], logits[~nucleus])
    for row in range(3):
        inside = nucleus[row]
        assert torch.allclose(steered[row, inside].logsumexp(-1), logits[row, inside].logsumexp(-1))
        assert inside.sum() == 1 or not torch.allclose(steered[row, inside], logits[row, inside])
    steer.config.nucleus = False  # the whole top-K, as trained
    assert BoundSteer(steer, decoder.model.get_output_embeddings(), torch.zeros(3, ENCODER_DIM), 2.0, top_p=0.6).top_p == 1.0


@pytest.mark.parametrize("family,tied", [("gpt2", False), ("llama", True)])
def test_a_whole_vocabulary_steer_moving_the_hidden_state_writes_what_the_logits_path_writes(family, tied):
    decoder = decoder_of(family, tied)
    output_layer = decoder.model.get_output_embeddings()
    bound = BoundSteer(random_steer(decoder.config.embedding_dim, candidates=0), output_layer, torch.randn(3, ENCODER_DIM), 1.5)
    hidden = torch.randn(3, decoder.config.embedding_dim)
    assert bound.moves_hidden  # W·(h + s·δ) = W·h + s·W·δ:
    assert torch.allclose(output_layer(bound.shift(hidden)), bound(hidden, output_layer(hidden)), atol=1e-5)
    prompts, soft = ["The train was", "I loved every", "A quiet"], torch.zeros(3, 0, decoder.config.embedding_dim)

    def generate(steer) -> list[str]:
        return decoder.generate(prompts, soft, RecordRNG([1, 2, 3], "tokens"), max_new_tokens=8, steer=steer)

    through_logits = generate(lambda h, logits: bound(h, logits))  # a plain callable: the logits path
    assert generate(bound) == through_logits != generate(None)


def test_state_cache_round_trip_and_resume(tmp_path, tiny_encoder):
    decoder = decoder_of("gpt2")
    corpus = build_corpus(SENTENCES * 80, decoder.tokenizer, tiny_encoder, CorpusConfig(max_tokens=12, val_size=16))
    assert len(corpus) > 1024  # two shards
    config = StateCacheConfig(candidates=6, batch_size=64, precision="fp32")
    directory = cache_states(tmp_path / "states", corpus, decoder, config)
    states = load_states(directory)
    rows = torch.tensor([3, 1100])
    tokens, owner = states.tokens_of(rows)
    direct = decoder.continuation_states([corpus.prefix_ids[r] for r in rows.tolist()], torch.zeros(2, 0, decoder.config.embedding_dim),
                                         [corpus.continuation_ids[r] for r in rows.tolist()], candidates=6)
    assert owner.tolist() == [0] * len(corpus.continuation_ids[3]) + [1] * len(corpus.continuation_ids[1100])
    assert torch.equal(states.targets[tokens].long(), direct.targets) and torch.equal(states.candidates[tokens].long(), direct.candidates)
    assert torch.allclose(states.hidden[tokens].float(), direct.hidden, atol=2e-3)  # stored as float16
    meta = json.loads((directory / "states.json").read_text())
    assert meta["examples"] == len(corpus) and meta["tokens"] == len(states.targets) and meta["bytes"] > 0

    first = directory / "shard-00000.safetensors"  # an interrupted caching run: one shard written, no states.json
    (directory / "states.json").unlink()
    (directory / "shard-00001.safetensors").unlink()
    stamp = first.stat().st_mtime_ns
    load_states(cache_states(directory, corpus, decoder, config))
    assert first.stat().st_mtime_ns == stamp  # kept, not recomputed
    assert torch.equal(load_states(directory).targets, states.targets)


STEER_ARGS = ["--epochs", "4", "--batch-size", "32", "--val-size", "64", "--warmup", "5", "--lr", "3e-3", "--max-tokens", "8"]


@pytest.fixture(scope="module")
def soup_bundle(soup, tmp_path_factory):
    """A bundle of the soup's bag-of-words encoder and tiny GPT-2 (untrained heads), for steer runs."""
    root = tmp_path_factory.mktemp("soup-bundle")
    models = ["--encoder", soup / "bow", "--decoder", soup / "lm", "--preset", "tiny", "--max-steps", "1", "-q"]
    invoke("train-diffusion", soup / "soup.txt", "--run", root / "diffusion", *models)
    invoke("train-decoder", soup / "soup.txt", "--run", root / "decoder", *models)
    invoke("export", root / "diffusion", root / "decoder", "--out", root / "bundle")
    return root / "bundle"


def test_steer_run_reads_its_latent_and_exports_into_its_bundle(soup, soup_bundle, tmp_path):
    run = tmp_path / "steer"
    invoke("train-steer", soup / "soup.txt", "--bundle", soup_bundle, "--run", run, *STEER_ARGS, "--patience", "0", "-q")
    true, shuffled, none = (validations(run, f"val_{k}") for k in ("true_latent", "shuffled_latent", "no_steer"))
    assert true[0] == pytest.approx(none[0])  # the untrained steer is the plain LM
    assert true[-1] < none[-1] - 0.5 and true[-1] < shuffled[-1] - 0.3  # it learned, and from the latent
    bundle = shutil.copytree(soup_bundle, tmp_path / "bundle")
    invoke("export", run, "--out", bundle)
    assert load_bundle(bundle).steer is not None and "steer" in json.loads((bundle / "dglm.json").read_text())["components"]
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(bundle)])
    assert result.exit_code == 3 and "already has a steer (use --force to replace it)" in result.output
    invoke("export", run, "--out", bundle, "--force", "--steer-strength", "0.5", "--steer-guidance", "30")  # replaced, its card section too
    config = load_bundle(bundle).steer.config
    assert (config.strength, config.guidance_scale) == (0.5, 30.0) and (bundle / "README.md").read_text().count("## steer") == 1


def test_a_steer_over_the_whole_vocabulary_trains_and_generates(soup, soup_bundle, tmp_path):
    run = tmp_path / "steer"
    invoke("train-steer", soup / "soup.txt", "--bundle", soup_bundle, "--run", run, *STEER_ARGS, "--candidates", "0", "--patience", "0", "-q")
    true, none = validations(run, "val_true_latent"), validations(run, "val_no_steer")
    assert true[-1] < none[-1]  # the full softmax over every token learned
    bundle = shutil.copytree(soup_bundle, tmp_path / "bundle")
    invoke("export", run, "--out", bundle)
    assert load_bundle(bundle).steer.config.candidates == 0
    assert continuations(bundle) != continuations(bundle, steer=0.0)


def test_steer_errors(soup, soup_bundle, tiny_bundle, tmp_path):
    result = CliRunner().invoke(app, ["generate", "--bundle", str(tiny_bundle), "-p", "x", "--steer", "1"])
    assert result.exit_code == 2 and "has no steer (train one with `dglm train-steer`)" in result.output
    result = CliRunner().invoke(app, ["generate", "--bundle", str(tiny_bundle), "-p", "x", "--steer", "-1"])
    assert result.exit_code == 2 and "--steer must be >= 0" in result.output
    run = tmp_path / "steer"
    invoke("train-steer", soup / "soup.txt", "--bundle", soup_bundle, "--run", run, *STEER_ARGS, "--epochs", "1", "-q")
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tiny_bundle)])
    assert result.exit_code == 2 and "has another decoder, encoder or prompt generator" in result.output
    result = CliRunner().invoke(app, ["train-steer", str(soup / "soup.txt"), "--bundle", str(soup_bundle), "--run", str(run)])
    assert result.exit_code == 2 and "already holds a run" in result.output


def test_early_stopping_keeps_the_best_steer(soup, soup_bundle, tmp_path):
    run = tmp_path / "steer"
    invoke("train-steer", soup / "soup.txt", "--bundle", soup_bundle, "--run", run, *STEER_ARGS, "--epochs", "30", "--patience", "1",
           "--lr", "3e-2", "-q")
    losses = validations(run, "val_loss")[1:]  # after step 0
    assert len(losses) < 30 and losses[-1] >= min(losses)  # stopped at the first epoch without a better loss
    bundle = shutil.copytree(soup_bundle, tmp_path / "bundle")
    invoke("export", run, "--out", bundle)
    assert f"best validation loss {min(losses):.4f}" in (bundle / "README.md").read_text()


def test_steer_run_resumes_after_sigkill_as_if_uninterrupted(soup, soup_bundle, tmp_path):
    args = ["train-steer", soup / "soup.txt", "--bundle", soup_bundle, *STEER_ARGS, "--epochs", "6", "--patience", "0", "-q"]
    command = [sys.executable, "-m", "dglm_cli", *map(str, args)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    subprocess.run([*command, "--run", str(tmp_path / "straight")], check=True, env=env, capture_output=True, timeout=600)
    straight = [(m["step"], m.get("loss"), m.get("val_loss")) for m in metrics(tmp_path / "straight")]
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--run", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not ((killed / "metrics.jsonl").exists() and len(metrics(killed)) >= len(straight) // 2):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(metrics(killed)) < len(straight), "the run finished before it could be killed"
    resumed = subprocess.run([*command, "--run", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert [(m["step"], m.get("loss"), m.get("val_loss")) for m in metrics(killed)] == straight


def test_pairs_with_a_context_cache_the_teacher(tmp_path, tiny_encoder):
    decoder = decoder_of("llama")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prefix": s[:12], "continuation": s[12:], "context": SENTENCES[i - 1], "contrast": SENTENCES[i - 2]}) + "\n"
                            for i, s in enumerate(SENTENCES)))
    corpus = build_corpus(read_documents(path), decoder.tokenizer, tiny_encoder, CorpusConfig(max_tokens=8, val_size=2))
    assert corpus.teacher_prefix_ids is not None and all(corpus.teacher_prefix_ids) and all(corpus.contrast_prefix_ids)
    config = StateCacheConfig(candidates=5, precision="fp32", teacher=True, contrast=True)
    states = load_states(cache_states(tmp_path / "states", corpus, decoder, config))
    tokens, _ = states.tokens_of(torch.tensor([0]))
    for cached, prefixes in ((states.teacher, corpus.teacher_prefix_ids), (states.contrast, corpus.contrast_prefix_ids)):
        expected = decoder.continuation_log_probs(prefixes[:1], corpus.continuation_ids[:1], states.candidates[tokens].long())
        assert torch.allclose(cached[tokens].float(), expected, atol=2e-3)

    saved = tmp_path / "corpus"  # the corpus cache keeps both hidden contexts
    save_corpus(saved, corpus, {})
    assert load_corpus(saved).contrast_prefix_ids == corpus.contrast_prefix_ids


def test_the_teacher_is_amplified_against_the_base_and_pushed_from_its_contrast():
    base, shift, target = torch.randn(4, 5), torch.zeros(4, 5), torch.tensor([0, 1, -1, 4])
    teacher, contrast = torch.randn(4, 5), torch.randn(4, 5)
    _, _, same = candidate_losses(base, shift, target, Teacher(teacher, cfg=0.0))  # g = 0: the teacher is the base
    entropy = -(base.softmax(-1) * base.log_softmax(-1)).sum(-1)
    assert torch.allclose(same, entropy, atol=1e-5)
    _, _, plain = candidate_losses(base, shift, target, Teacher(teacher, cfg=2.0))
    _, _, off = candidate_losses(base, shift, target, Teacher(teacher, cfg=2.0, contrast=contrast, contrast_cfg=0.0))
    assert torch.equal(plain, off)  # g_c = 0: no contrast
    ref, t, c = base.log_softmax(-1), teacher.log_softmax(-1), contrast.log_softmax(-1)
    q = (ref + 2 * (t - ref) + 1.5 * (t - c)).softmax(-1)  # log q = log p + g·(log p_t − log p) + g_c·(log p_t − log p_c)
    _, _, pushed = candidate_losses(base, shift, target, Teacher(teacher, cfg=2.0, contrast=contrast, contrast_cfg=1.5))
    assert torch.allclose(pushed, -(q * ref).sum(-1), atol=1e-5)


def test_contrast_needs_pairs_with_one(soup, soup_bundle, tmp_path):
    result = CliRunner().invoke(app, ["train-steer", str(soup / "soup.txt"), "--bundle", str(soup_bundle), "--run", str(tmp_path / "steer"),
                                      "--contrast-cfg", "2", "-q"])
    assert result.exit_code == 2 and "--contrast-cfg needs pairs with a 'context' and a 'contrast'" in result.output
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prefix": "a", "continuation": "b", "contrast": "c"}) + "\n")
    result = CliRunner().invoke(app, ["train-steer", str(pairs), "--bundle", str(soup_bundle), "--run", str(tmp_path / "steer")])
    assert result.exit_code == 2 and "a 'contrast' needs a 'context'" in result.output


def test_a_diffusion_run_alone_exports_a_bundle_that_writes_with_the_plain_lm(soup, soup_bundle, tmp_path):
    plain = tmp_path / "plain"
    invoke("export", soup_bundle.parent / "diffusion", "--out", plain)
    bundle = load_bundle(plain)
    assert bundle.prompt_generator.config.prompt_length == 0 and "adapter" not in json.dumps(bundle.manifest.get("files", {}))
    pipeline = Pipeline.from_bundle(plain, "cpu")
    settings = GenerationSettings(steps=2, max_new_tokens=5, seed=3)
    record = next(pipeline.generate(["The train was"], settings=settings))
    rng = RecordRNG([record["seed"]], "tokens", "cpu")
    empty = torch.zeros(1, 0, bundle.decoder.config.embedding_dim)
    expected = bundle.decoder.generate(["The train was"], empty, rng, 5, settings.top_p, settings.temperature, settings.repetition_penalty)
    assert record["continuation"] == expected[0]  # no soft prompt: the LM's own sampling
    run = tmp_path / "steer"
    invoke("train-steer", soup / "soup.txt", "--bundle", plain, "--run", run, *STEER_ARGS, "--epochs", "1", "-q")
    invoke("export", run, "--out", plain)
    assert load_bundle(plain).steer is not None


def test_sweep_sweeps_the_steer(steered_bundle, tmp_path):
    steered, _ = steered_bundle
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The service was\n")
    out = tmp_path / "sweep"
    invoke("sweep", "--prompts", prompts, "--attr", "tiny-sentiment:positive", "--scales", "2", "--steers", "0,1.5", "--bundle", steered,
           "-n", 2, "--steps", 2, "--mc-samples", 2, "--max-new-tokens", 4, "--no-ppl", "--out-dir", out, "-q")
    with open(out / "sweep.csv", newline="") as f:
        rows = [(float(r["scale"]), float(r["steer"]), r["records"]) for r in csv.DictReader(f)]
    assert rows == [(0.0, 0.0, "2"), (2.0, 0.0, "2"), (0.0, 1.5, "2"), (2.0, 1.5, "2")]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["sweep"]["steer"] for r in records] == [0.0] * 4 + [1.5] * 4
    assert all(r["meta"].get("steer", 0.0) == r["sweep"]["steer"] for r in records)
    result = CliRunner().invoke(app, ["sweep", "--prompts", str(prompts), "--attr", "positive", "--steers", "1,nan", "--bundle", str(steered)])
    assert result.exit_code == 2 and "--steers must be a finite number, not nan" in result.output
