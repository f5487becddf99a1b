"""`dglm generate` through typer's CliRunner and through real subprocesses."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dglm_cli.cli import app

FAST = ["--steps", "3", "--max-new-tokens", "5"]
SCHEMA = {"id", "prompt_id", "sample", "prompt", "continuation", "guidance", "seed", "meta"}
META = {"dglm_version", "bundle", "bundle_sha256", "encoder", "decoder", "device", "top_p", "max_new_tokens"}


def dglm(*args, input=None):
    return subprocess.run([sys.executable, "-m", "dglm_cli", *map(str, args)], input=input, capture_output=True, text=True, timeout=300)


def invoke(*args, input=None):
    return CliRunner().invoke(app, list(map(str, args)), input=input)


def records(text):
    return [json.loads(line) for line in text.splitlines()]


def test_help_lists_commands_without_importing_torch():
    result = dglm("--help")
    assert result.returncode == 0 and "generate" in result.stdout and "bundle" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, dglm_cli.cli; print('torch' in sys.modules)"], capture_output=True, text=True
    )
    assert probe.stdout.strip() == "False"


def test_three_records_with_the_schema_reproducibly(tiny_bundle):
    first = dglm("generate", "--bundle", tiny_bundle, "--prompt", "The restaurant on the corner", "--num-samples", "3", "--seed", "7", *FAST)
    assert first.returncode == 0, first.stderr
    lines = records(first.stdout)
    assert len(lines) == 3
    for n, record in enumerate(lines):
        assert SCHEMA <= set(record) and META <= set(record["meta"])
        assert set(record["guidance"]) >= {"attrs", "scale", "cfg", "steps", "sampler"}
        assert record["sample"] == n and record["seed"] == 7 + n and record["prompt"] == "The restaurant on the corner"
    assert len({r["id"] for r in lines}) == 3
    second = dglm("generate", "--bundle", tiny_bundle, "--prompt", "The restaurant on the corner", "--num-samples", "3", "--seed", "7", *FAST)
    assert second.stdout == first.stdout


def test_a_record_is_reproducible_from_its_own_seed(tiny_bundle):
    full = records(invoke("generate", "--bundle", tiny_bundle, "-p", "Hello", "-n", "3", "--seed", "10", "--attr", "positive", *FAST).stdout)
    alone = records(invoke("generate", "--bundle", tiny_bundle, "-p", "Hello", "-n", "1", "--seed", full[2]["seed"], "--attr", "positive", *FAST).stdout)
    assert alone[0]["continuation"] == full[2]["continuation"]


def test_prompts_from_stdin_plain_and_jsonl(tiny_bundle):
    plain = invoke("generate", "--bundle", tiny_bundle, "--prompts", "-", *FAST, input="First prompt\n\nSecond prompt\n")
    assert plain.exit_code == 0, plain.output
    assert [r["prompt"] for r in records(plain.stdout)] == ["First prompt", "Second prompt"]
    jsonl = '{"id": "a", "prompt": "Alpha"}\n{"id": "b", "prompt": {"text": "Beta"}}\n'
    result = invoke("generate", "--bundle", tiny_bundle, "--prompts", "-", *FAST, input=jsonl)
    assert [(r["prompt_id"], r["prompt"]) for r in records(result.stdout)] == [("a", "Alpha"), ("b", "Beta")]


def test_output_resume_completes_without_duplicates(tiny_bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ["generate", "--bundle", tiny_bundle, "-p", "One", "-p", "Two", "-n", "3", "--batch-size", "4", "-o", out, *FAST]
    assert invoke(*args).exit_code == 0
    complete = out.read_text()
    lines = complete.splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:20])  # last record lost mid-write
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert out.read_text() == complete
    assert invoke(*args).exit_code == 0 and out.read_text() == complete  # nothing left to do


def test_guidance_settings_are_recorded(tiny_bundle):
    result = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "--attr", "tiny-sentiment:positive:2", "--avoid", "negative", "--guidance", "3", *FAST)
    guidance = records(result.stdout)[0]["guidance"]
    assert guidance["scale"] == 3.0 and guidance["steps"] == 3 and guidance["sampler"] == "ddpm"
    assert [(a["classifier"], a["label"], a["weight"], a["avoid"]) for a in guidance["attrs"]] == [
        ("tiny-sentiment", "positive", 2.0, False), ("tiny-sentiment", "negative", 1.0, True),
    ]


def test_decoder_cfg_is_recorded_and_changes_the_text(tiny_bundle):
    base = ["generate", "--bundle", tiny_bundle, "-p", "The restaurant on the corner", "-n", "2", "--steps", "3", "--max-new-tokens", "12"]
    plain, guided = records(invoke(*base).stdout), records(invoke(*base, "--decoder-cfg", "4").stdout)
    assert [r["meta"]["decoder_cfg"] for r in plain + guided] == [1.0, 1.0, 4.0, 4.0]
    assert [r["continuation"] for r in plain] != [r["continuation"] for r in guided]


@pytest.mark.parametrize("args, message", [
    (["--attr", "joyful"], "unknown attribute 'joyful'; available: tiny-sentiment:negative, tiny-sentiment:positive"),
    (["--attr", "positive:-1"], "weight must be positive"),
    (["--sampler", "euler"], "--sampler must be one of ddpm, ddim"),
    (["--decoder-cfg", "-1"], "--decoder-cfg must be >= 0"),
    (["--device", "cuda:7" if not __import__("torch").cuda.is_available() else "tpu"], "device"),
])
def test_bad_options_are_one_line(tiny_bundle, args, message):
    result = dglm("generate", "--bundle", tiny_bundle, "-p", "Hi", *FAST, *args)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_missing_bundle_and_bad_prompt_file(tmp_path):
    result = dglm("generate", "--bundle", tmp_path / "nope", "-p", "Hi")
    assert result.returncode != 0 and result.stderr.startswith("dglm: error: bundle not found")
    assert result.stderr.count("\n") == 1
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    result = dglm("generate", "--bundle", tmp_path / "nope", "--prompts", bad)
    assert result.returncode != 0 and f"{bad}:2: not valid JSON" in result.stderr
    assert invoke("generate").exit_code != 0


def test_output_file_that_is_not_records_is_left_alone(tiny_bundle, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("my precious notes\n")
    result = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "-o", out, *FAST)
    assert result.exit_code != 0 and out.read_text() == "my precious notes\n"


def test_a_reader_that_closes_the_pipe_ends_generate_quietly(tiny_bundle):
    """`dglm generate ... | head -c 1`: exit 0 and no traceback once the reader is gone."""
    generate = subprocess.Popen([sys.executable, "-m", "dglm_cli", "generate", "--bundle", str(tiny_bundle), "-p", "Hi", "-n", "64", *FAST, "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    generate.stdout.read(1)
    generate.stdout.close()  # the reader goes away while records are still being written
    stderr = generate.stderr.read().decode()
    assert generate.wait(timeout=300) == 0 and "Traceback" not in stderr, stderr


def test_bundle_tiny_and_info(tmp_path):
    result = invoke("bundle", "tiny", tmp_path / "b", "--decoder", "llama")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "b")
    assert invoke("bundle", "tiny", tmp_path / "b").exit_code != 0  # exists, no --force
    info = invoke("bundle", "info", tmp_path / "b", "--verify")
    assert info.exit_code == 0 and "tiny-sentiment" in info.stdout and "verified" in info.stdout


@pytest.mark.cuda
def test_generate_on_cuda(tiny_bundle, cuda_device):
    result = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "-n", "2", "--attr", "positive", "--device", cuda_device, *FAST)
    assert result.exit_code == 0, result.output
    assert [r["meta"]["device"] for r in records(result.stdout)] == ["cuda", "cuda"]


def test_numeric_prompt_ids_are_kept_and_seeds_append(tiny_bundle, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": 17, "prompt": "Alpha"}\n{"prompt": "Beta"}\n')
    result = invoke("generate", "--bundle", tiny_bundle, "-p", "Flag", "--prompts", prompts, *FAST)
    assert [r["prompt_id"] for r in records(result.stdout)] == ["0", "17", "2"]
    out = tmp_path / "out.jsonl"
    for seed in ("0", "1"):
        assert invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "-n", "2", "--seed", seed, "-o", out, *FAST).exit_code == 0
    written = records(out.read_text())
    assert [r["seed"] for r in written] == [0, 1, 1, 2] and len({r["id"] for r in written}) == 4
    assert written[1]["continuation"] == written[2]["continuation"]  # the same seed gives the same text


def test_output_that_is_a_directory_or_binary_is_one_line(tiny_bundle, tmp_path):
    assert "is not a file" in invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "-o", tmp_path, *FAST).output
    binary = tmp_path / "out.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage\n")
    result = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "-o", binary, *FAST)
    assert result.exit_code != 0 and "not UTF-8" in result.output


@pytest.mark.parametrize("command", ["generate", "sweep"])
def test_generation_option_defaults_are_the_api_defaults(command):
    """The CLI repeats GenerationSettings' defaults in its signatures; they must not drift apart."""
    import dataclasses

    import typer.main

    from dglm_cli.pipeline import GenerationSettings

    renamed = {"guidance_scale": "guidance", "renoise_alpha2": "renoise"}
    api = {renamed.get(f.name, f.name): f.default for f in dataclasses.fields(GenerationSettings)}
    cli = {p.name: p.default for p in typer.main.get_command(app).commands[command].params}
    shared = set(api) & set(cli) - {"num_samples", "batch_size"}  # sweep samples and batches more by design
    assert {"steps", "sampler", "cfg", "decoder_cfg", "top_p", "max_new_tokens", "mc_samples", "seed"} <= shared
    assert {name: cli[name] for name in shared} == {name: api[name] for name in shared}
