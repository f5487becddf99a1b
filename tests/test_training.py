"""Training both heads on tiny models: corpus, losses, checkpoints, resume after SIGKILL, export, DDP."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from dglm_cli.cli import app
from dglm_cli.corpus import CorpusConfig, Pair, build_corpus, chunk_tokens, load_corpus, read_documents, save_corpus, split_chunks
from dglm_cli.errors import InputError
from dglm_cli.files import read_tensors, sha256_file
from dglm_cli.tiny import SENTENCES, bag_of_words_encoder, save_tiny_lm, tiny_lm, tiny_sentence_encoder

WORDS = "red green blue cat dog bird river tree stone cloud rain sun moon star fish boat".split()
TINY = ["--preset", "tiny", "--batch-size", "16", "--warmup", "5"]


def invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return result


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def validations(run_dir, key):
    return [m[key] for m in metrics(run_dir) if key in m]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = random.Random(0)
    path.write_text("\n".join(f"{rng.choice(SENTENCES)} {rng.choice(SENTENCES)}" for _ in range(200)) + "\n")
    return path


@pytest.fixture(scope="module")
def soup(tmp_path_factory):
    """Word-soup documents, a bag-of-words encoder and a tiny GPT-2: the continuation is unpredictable
    from its prefix, and its latent says exactly which words it holds."""
    root = tmp_path_factory.mktemp("soup")
    rng = random.Random(1)
    (root / "soup.txt").write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(800)) + "\n")
    bag_of_words_encoder(WORDS).save(str(root / "bow"))
    save_tiny_lm(root / "lm", "gpt2")
    return root


@pytest.fixture(scope="module")
def diffusion_run(tiny_bundle, corpus_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "diffusion"
    invoke("train-diffusion", corpus_file, "--run", run, "--bundle", tiny_bundle, *TINY,
           "--max-steps", "40", "--eval-every", "20", "--save-every", "20", "--lr", "3e-3", "-q")
    return run


def test_chunks_and_random_splits():
    chunks = chunk_tokens([list(range(10)), list(range(3))], max_tokens=4, min_tokens=2)
    assert chunks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2]]
    pairs = split_chunks(chunks * 50, splits=2, generator=torch.Generator().manual_seed(0))
    assert len(pairs) == 400
    assert all(prefix + cont == chunk and cont for (prefix, cont), chunk in zip(pairs, [c for c in chunks * 50 for _ in range(2)]))
    assert {len(p) for p, _ in pairs} >= {0, 1, 2, 3}  # empty prefixes happen, as in the paper


def test_corpus_cache_round_trip(tmp_path, tiny_encoder):
    _, tokenizer = tiny_lm("gpt2")
    corpus = build_corpus(SENTENCES * 3, tokenizer, tiny_encoder, CorpusConfig(max_tokens=16, val_size=5))
    save_corpus(tmp_path / "c", corpus, {"source": "test"})
    loaded = load_corpus(tmp_path / "c")
    assert loaded.prefix_ids == corpus.prefix_ids and loaded.continuation_ids == corpus.continuation_ids
    assert torch.equal(loaded.continuation_embeddings, corpus.continuation_embeddings)
    assert torch.equal(loaded.stats.std, corpus.stats.std) and loaded.n_val == 5
    text = tokenizer.decode(corpus.continuation_ids[0])
    assert torch.allclose(tiny_encoder.encode([text]), corpus.continuation_embeddings[:1], atol=1e-6)


def test_explicit_pairs_are_kept_as_split(tmp_path, tiny_encoder):
    _, tokenizer = tiny_lm("gpt2")
    path = tmp_path / "pairs.jsonl"
    pair = {"prefix": "The cat", "continuation": " sat on the warm mat" * 8}
    path.write_text("\n".join([json.dumps({"text": s}) for s in SENTENCES] + [json.dumps(pair)]) + "\n")
    documents = read_documents(path)
    assert documents[:-1] == SENTENCES and documents[-1] == Pair(pair["prefix"], pair["continuation"])
    corpus = build_corpus(documents, tokenizer, tiny_encoder, CorpusConfig(max_tokens=16, val_size=1))
    prefix = tokenizer(pair["prefix"], add_special_tokens=False).input_ids
    continuation = tokenizer(pair["continuation"], add_special_tokens=False).input_ids[:16]
    rows = [i for i, ids in enumerate(corpus.prefix_ids) if ids == prefix and corpus.continuation_ids[i] == continuation]
    assert len(rows) == 1  # the pair, split where it was given and cut to --max-tokens
    text = tokenizer.decode(continuation)
    assert torch.allclose(tiny_encoder.encode([text]), corpus.continuation_embeddings[rows], atol=1e-6)
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"prefix": "no continuation"}) + "\n")
    with pytest.raises(InputError, match=r"pairs.jsonl:2: no string field 'text' \(or 'prefix' and 'continuation'\)"):
        read_documents(path)


def test_diffusion_training_reduces_validation_loss(diffusion_run):
    losses = validations(diffusion_run, "val_loss")
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert all(-1 <= c <= 1 for c in validations(diffusion_run, "val_cosine"))
    assert json.loads((diffusion_run / "checkpoints" / "latest.json").read_text())["step"] == 40
    files = {p.name for p in (diffusion_run / "checkpoints").rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith((".pt", ".bin", ".pkl"))]


def test_decoder_soft_prompt_carries_the_latent(soup, tmp_path):
    run = tmp_path / "decoder"
    invoke("train-decoder", soup / "soup.txt", "--run", run, "--encoder", soup / "bow", "--decoder", soup / "lm", *TINY,
           "--max-steps", "300", "--eval-every", "150", "--save-every", "300", "--lr", "3e-3", "--train-lm", "--lm-lr", "3e-3", "-q")
    true, shuffled = validations(run, "val_true_latent"), validations(run, "val_shuffled_latent")
    assert true[-1] < true[0] - 1.0  # it learned
    assert true[-1] < shuffled[-1] - 0.05  # and the latent steers it


def test_adapter_fine_tuning_ships_only_the_adapters(soup, tmp_path):
    from dglm_cli.adapters import adapter_state
    from dglm_cli.bundle import load_bundle
    from dglm_cli.runs import build_trainer, load_run

    models = ["--encoder", soup / "bow", "--decoder", soup / "lm", *TINY]
    run = tmp_path / "decoder"
    invoke("train-decoder", soup / "soup.txt", "--run", run, *models, "--max-steps", "150", "--eval-every", "75",
           "--save-every", "75", "--lr", "3e-3", "--lora-rank", "8", "--lm-lr", "1e-2", "-q")
    # a random tiny LM cannot learn the soup's words through adapters alone (its embeddings and head stay
    # frozen), so this checks that the adapters train and travel; steering is tested with --train-lm above
    true = validations(run, "val_true_latent")
    assert true[-1] < true[0] - 0.3

    invoke("train-decoder", soup / "soup.txt", "--run", tmp_path / "next", *models, "--max-steps", "2", "--eval-every", "2",
           "--lora-rank", "8", "--bag-of-words-weight", "0.5", "--init-from", run, "-q")
    assert "bag_of_words_loss" in metrics(tmp_path / "next")[1]
    assert validations(tmp_path / "next", "val_true_latent")[0] == pytest.approx(true[-1], abs=0.05)  # it starts where `run` ended

    resumed = build_trainer(run, load_run(run))
    assert resumed.resume()  # the adapters come back with the run
    saved = read_tensors(run / "checkpoints" / "step-0000150" / "lm.safetensors")
    assert any(k.endswith(".up") and v.abs().sum() > 0 for k, v in saved.items())
    assert all(torch.equal(v, saved[k]) for k, v in adapter_state(resumed.decoder.model).items())

    invoke("train-diffusion", soup / "soup.txt", "--run", tmp_path / "diffusion", *models, "--max-steps", "2", "-q")
    out = tmp_path / "bundle"
    invoke("export", tmp_path / "diffusion", run, "--out", out, "--half")
    files = json.loads((out / "dglm.json").read_text())["files"]
    assert "decoder/adapter.safetensors" in files
    assert files["decoder/lm/model.safetensors"] == sha256_file(soup / "lm" / "model.safetensors")  # the base LM, unchanged
    assert json.loads((out / "decoder" / "config.json").read_text())["adapter_rank"] == 8
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():  # loading merges the adapters into the LM's weights
        merged, wrapped = load_bundle(out).decoder.model(input_ids=ids).logits, resumed.decoder.model(input_ids=ids).logits
    assert torch.allclose(merged, wrapped, atol=1e-2)  # float16 adapters (--half)
    assert read_tensors(out / "denoiser" / "model.safetensors")["null_context"].dtype == torch.float16

    # a bundle is a starting point too: a new run takes its prompt generator and adapters
    invoke("train-decoder", soup / "soup.txt", "--run", tmp_path / "from-bundle", *models, "--max-steps", "1", "--eval-every", "1",
           "--lora-rank", "8", "--init-from", out, "-q")
    assert validations(tmp_path / "from-bundle", "val_true_latent")[0] == pytest.approx(true[-1], abs=0.1)
    result = CliRunner().invoke(app, ["train-decoder", str(soup / "soup.txt"), "--run", str(tmp_path / "frozen"), *map(str, models),
                                      "--init-from", str(out)])
    assert result.exit_code == 2 and "has decoder adapters; train with --lora-rank 8" in result.output


def test_export_then_generate(diffusion_run, tiny_bundle, corpus_file, tmp_path):
    decoder_run = tmp_path / "decoder"
    invoke("train-decoder", corpus_file, "--run", decoder_run, "--bundle", tiny_bundle, *TINY, "--max-steps", "4", "--eval-every", "4", "-q")
    out = tmp_path / "bundle"
    result = invoke("export", diffusion_run, decoder_run, "--out", out)
    assert result.stdout.strip() == str(out)
    generated = invoke("generate", "--bundle", out, "-p", "The train was late", "-n", "2", "--steps", "3", "--max-new-tokens", "4", "-q")
    assert len([json.loads(line) for line in generated.stdout.splitlines()]) == 2


def test_export_takes_one_run_of_each_kind(diffusion_run, tmp_path):
    result = CliRunner().invoke(app, ["export", str(diffusion_run), str(diffusion_run), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "two diffusion runs given" in result.output  # a diffusion run alone: tests/test_steer.py


def test_resume_after_sigkill_equals_an_uninterrupted_run(tiny_bundle, corpus_file, tmp_path):
    args = ["train-diffusion", corpus_file, "--bundle", tiny_bundle, *TINY, "--max-steps", "24", "--eval-every", "8",
            "--save-every", "4", "--seed", "3", "-q"]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "dglm_cli", *map(str, args)]
    subprocess.run([*command, "--run", str(tmp_path / "straight")], check=True, env=env, capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--run", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not ((killed / "metrics.jsonl").exists() and len(metrics(killed)) >= 11):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(metrics(killed)) < 26, "the run finished before it could be killed"
    resumed = subprocess.run([*command, "--run", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    straight = [(m["step"], m.get("loss"), m.get("val_loss")) for m in metrics(tmp_path / "straight")]
    assert [(m["step"], m.get("loss"), m.get("val_loss")) for m in metrics(killed)] == straight


def test_resume_and_new_run_errors(diffusion_run, tmp_path):
    result = CliRunner().invoke(app, ["train-diffusion", "--run", str(tmp_path / "none"), "--resume"])
    assert result.exit_code != 0 and "holds no run" in result.output
    result = CliRunner().invoke(app, ["train-diffusion", "--run", str(tmp_path / "none")])
    assert result.exit_code != 0 and "give a CORPUS" in result.output
    result = CliRunner().invoke(app, ["train-decoder", "--run", str(diffusion_run), "--resume"])
    assert result.exit_code != 0 and "is a diffusion run, not a decoder run" in result.output
    result = CliRunner().invoke(app, ["train-diffusion", "whatever.txt", "--run", str(diffusion_run), "--precision", "fp16"])
    assert result.exit_code != 0 and "--precision must be one of auto, fp32, bf16" in result.output


def test_resume_with_more_steps_extends_the_run(tiny_bundle, corpus_file, tmp_path):
    run = tmp_path / "extend"
    invoke("train-diffusion", corpus_file, "--run", run, "--bundle", tiny_bundle, *TINY, "--max-steps", "3", "--eval-every", "3")
    invoke("train-diffusion", "--run", run, "--resume", "--max-steps", "5", "-q")
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2, 3, 4, 5]
    assert json.loads((run / "run.json").read_text())["train"]["max_steps"] == 5


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_t5_encoder_with_gpt2_and_llama_decoders(tmp_path, corpus_file, family):
    """The paper's pairing (a T5 sentence encoder, a GPT-2 decoder) and a Llama-family decoder."""
    tiny_sentence_encoder(family="t5").save(str(tmp_path / "t5"))
    save_tiny_lm(tmp_path / "lm", family)
    run = tmp_path / "run"
    invoke("train-decoder", corpus_file, "--run", run, "--encoder", tmp_path / "t5", "--decoder", tmp_path / "lm", *TINY,
           "--max-steps", "3", "--eval-every", "3", "-q")
    assert len(validations(run, "val_true_latent")) == 2  # step 0 and step 3


def test_time_budget_stops_and_checkpoints(tiny_bundle, corpus_file, tmp_path):
    run = tmp_path / "budget"
    invoke("train-diffusion", corpus_file, "--run", run, "--bundle", tiny_bundle, *TINY, "--max-steps", "100000",
           "--time-budget", "0.0001", "-q")
    step = json.loads((run / "checkpoints" / "latest.json").read_text())["step"]
    assert step == 1 and validations(run, "val_loss")


def test_accelerate_launch_two_processes(tiny_bundle, corpus_file, tmp_path):
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dglm_cli", "train-diffusion", str(corpus_file),
         "--run", str(run), "--bundle", str(tiny_bundle), *TINY, "--max-steps", "3", "--eval-every", "3", "-q"],
        capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2, 3]


def test_length_grouping_keeps_every_example_once_and_groups_lengths():
    from dglm_cli.training import group_by_length

    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    lengths = torch.randint(1, 64, (1000,), generator=torch.Generator().manual_seed(1))
    grouped = group_by_length(order, lengths[order], batch=10, generator=torch.Generator().manual_seed(2))
    assert sorted(grouped.tolist()) == list(range(1000))
    spread = [(lengths[b].max() - lengths[b].min()).item() for b in grouped.split(10)]
    assert sum(spread) / len(spread) < 5  # random batches of 10 would spread over ~50


def test_resume_before_the_first_checkpoint_starts_over_and_a_torn_metrics_tail_is_cut(tiny_bundle, corpus_file, tmp_path):
    run = tmp_path / "early"
    invoke("train-diffusion", corpus_file, "--run", run, "--bundle", tiny_bundle, *TINY, "--max-steps", "3", "--eval-every", "3")
    shutil.rmtree(run / "checkpoints")  # as if killed before its first checkpoint
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # and mid-line
    result = CliRunner().invoke(app, ["train-diffusion", "--run", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet: starting over at step 0" in " ".join(result.output.split())
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2, 3]  # no duplicate lines for the lost steps
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')  # a torn tail after a checkpoint
    invoke("train-diffusion", "--run", run, "--resume", "--max-steps", "5", "-q")
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2, 3, 4, 5]
