"""`dglm score` and `dglm sweep` through typer's CliRunner and a real shell pipeline of two subprocesses."""

import csv
import json
import shlex
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dglm_cli.cli import app

GUIDED = {"attrs": [{"name": "positive", "classifier": "tiny-sentiment", "label": "positive", "weight": 1.0, "avoid": False}],
          "scale": 5.0, "cfg": 1.0, "steps": 3, "sampler": "ddpm"}
UNGUIDED = {**GUIDED, "scale": 0.0}
RECORDS = [
    {"id": "a0", "prompt_id": "0", "prompt": "The restaurant on the corner", "continuation": " serves wonderful soup, I loved it.", "guidance": GUIDED},
    {"id": "a1", "prompt_id": "0", "prompt": "The restaurant on the corner", "continuation": " is awful and the food was cold.", "guidance": GUIDED},
    {"id": "b0", "prompt_id": "1", "prompt": "The train was late", "continuation": "", "guidance": GUIDED},
    {"id": "c0", "prompt_id": "0", "prompt": "The restaurant on the corner", "continuation": " opened in 1990.", "guidance": UNGUIDED},
]


def dglm(*args, input=None):
    return subprocess.run([sys.executable, "-m", "dglm_cli", *map(str, args)], input=input, capture_output=True, text=True, timeout=300)


def invoke(*args, input=None):
    return CliRunner().invoke(app, list(map(str, args)), input=input)


@pytest.fixture(scope="module")
def ppl_dir(tmp_path_factory):
    from dglm_cli.tiny import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("ppl") / "tiny-gpt2", "gpt2", seed=2)


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "generated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return path


def check_summary(summary: dict, ppl_dir) -> None:
    assert summary["records"] == 4 and summary["empty"] == 1 and summary["skipped"] == 0
    assert summary["group_by"] == "guidance"
    scorers = {s["name"]: s for s in summary["scorers"]}
    assert scorers["perplexity"]["model"] == str(ppl_dir) and scorers["perplexity"]["weights_sha256"]
    assert scorers["vader"]["version"] == "3.3.2" and scorers["clf:tiny-sentiment"]["labels"] == ["negative", "positive"]
    guided, unguided = summary["groups"]
    assert guided["group"] == "tiny-sentiment:positive s=5 cfg=1 ddpm×3" and guided["records"] == 3 and guided["empty"] == 1
    assert unguided["group"] == "tiny-sentiment:positive s=0 cfg=1 ddpm×3" and unguided["records"] == 1
    assert guided["perplexity"]["records"] == 2 and guided["perplexity"]["mean"] > 1
    assert guided["perplexity"]["median"] == pytest.approx(guided["perplexity"]["mean"])  # two values
    for key in ("distinct_1", "distinct_2", "distinct_3", "repetition", "mean_length"):
        assert key in guided
    assert guided["mean_length"] == pytest.approx((6 + 7 + 0) / 3)
    vader = guided["attributes"]["vader"]["positive"]
    assert vader["count"] == 1 and vader["rate"] == pytest.approx(1 / 3) and vader["low"] < 1 / 3 < vader["high"]
    assert guided["agreement"]["vader"]["compared"] == 3 and guided["targets"] == ["tiny-sentiment:positive"]


def test_json_summary_end_to_end(records_file, ppl_dir, tiny_bundle):
    result = invoke("score", records_file, "--ppl-model", ppl_dir, "--bundle", tiny_bundle, "--json", "-q")
    assert result.exit_code == 0, result.output
    check_summary(json.loads(result.stdout), ppl_dir)
    assert "attribute rates" in result.stderr and "vader" in result.stderr  # the table goes to stderr


def test_scored_records_to_a_file_and_to_stdout(records_file, ppl_dir, tmp_path):
    out = tmp_path / "scored" / "out.jsonl"
    assert invoke("score", records_file, "--ppl-model", ppl_dir, "-o", out, "-q").exit_code == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["a0", "a1", "b0", "c0"]
    assert scored[2]["flags"] == ["empty_continuation"] and scored[2]["scores"]["perplexity"] is None
    assert scored[0]["scores"]["perplexity"] > 1 and scored[0]["scores"]["vader"]["label"] == "positive"
    assert not list(out.parent.glob(".*.tmp"))
    result = invoke("score", records_file, "--no-ppl", "--records", "--limit", "2", "-q")
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 2 and json.loads(lines[1])["scores"]["perplexity"] is None


def test_other_field_names_and_group_by(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text('{"output": {"text": "good good"}, "model": "a"}\n{"output": {"text": "bad"}, "model": "b"}\n')
    result = invoke("score", path, "--no-ppl", "--text-field", "output.text", "--prompt-field", "", "--group-by", "model", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [g["group"] for g in summary["groups"]] == ["model=a", "model=b"]
    assert summary["groups"][0]["distinct_1"] == 0.5


def test_generate_piped_into_score(tiny_bundle, ppl_dir):
    """The real-subprocess test: `dglm generate ... | dglm score -` in bash, with pipefail."""
    python = shlex.quote(sys.executable)
    generate = f"{python} -m dglm_cli generate --bundle {shlex.quote(str(tiny_bundle))} --prompt 'The train was' --prompt 'I loved' --attr positive -n 2 --steps 3 --max-new-tokens 6 --mc-samples 4 -q"
    score = f"{python} -m dglm_cli score - --ppl-model {shlex.quote(str(ppl_dir))} --bundle {shlex.quote(str(tiny_bundle))} --json -q"
    result = subprocess.run(f"set -o pipefail; {generate} | {score}", shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "dglm score: 4 records" in result.stderr
    summary = json.loads(result.stdout)
    (group,) = summary["groups"]
    assert summary["input"] == "-" and group["records"] == 4 and group["targets"] == ["tiny-sentiment:positive"]
    assert group["agreement"]["vader"]["compared"] == 4  # the guiding classifier came from --bundle


@pytest.mark.parametrize("bad_line,message", [
    ("{not json", ":3: not valid JSON"),
    ('{"prompt": "p"}', ":3: no string field 'continuation'"),
])
def test_bad_line_is_one_error_line_or_skipped_with_a_count(records_file, bad_line, message):
    lines = records_file.read_text().splitlines()
    records_file.write_text("\n".join([*lines[:2], bad_line, *lines[2:]]) + "\n")
    result = invoke("score", records_file, "--no-ppl", "-q")
    assert result.exit_code != 0 and result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("dglm: error:") and message in result.stderr and "Traceback" not in result.stderr
    result = invoke("score", records_file, "--no-ppl", "--skip-bad", "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 1 and json.loads(result.stdout)["records"] == 4
    assert "skipped 1 bad line(s)" in result.stderr


@pytest.mark.parametrize("args,message", [
    (["--classifier", "no-such"], "unknown classifier 'no-such'"),
    (["--scorer", "hf:someone/not-cached"], "cannot load scorer hf:someone/not-cached"),
    (["--scorer", "hf:/nonexistent/model"], "cannot load scorer hf:/nonexistent/model"),
    (["--ppl-model", "/nonexistent/lm"], "cannot load the perplexity model"),
    (["--records", "--json"], "both write to stdout"),
])
def test_unusable_scorers_are_one_error_line(records_file, args, message):
    result = invoke("score", records_file, *args, "-q")
    assert result.exit_code != 0
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_missing_file_and_empty_input(tmp_path):
    assert "file not found" in invoke("score", tmp_path / "nope.jsonl", "--no-ppl", "-q").stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = invoke("score", empty, "--no-ppl", "-o", tmp_path / "scored.jsonl", "-q")
    assert result.exit_code != 0 and "no records to score" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]  # no output, no temporary file left


def test_sweep_writes_a_csv_and_a_png(tiny_bundle, ppl_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The service was\nI loved\n")
    out = tmp_path / "sweep"
    result = invoke(
        "sweep", "--prompts", prompts, "--attr", "tiny-sentiment:positive", "--scales", "2,8", "--bundle", tiny_bundle,
        "-n", 3, "--steps", 3, "--mc-samples", 4, "--max-new-tokens", 6, "--ppl-model", ppl_dir, "--out-dir", out, "-q",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / "sweep.csv"), str(out / "sweep.png")]
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["scale"]) for r in rows] == [0.0, 2.0, 8.0]  # the unguided point is always there
    assert all(r["records"] == "6" and r["judge"] == "vader" and float(r["ppl_mean"]) > 1 for r in rows)
    assert all(float(r["rate_low"]) <= float(r["rate"]) <= float(r["rate_high"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attribute"] == "tiny-sentiment:positive" and len(summary["rows"]) == 3
    assert len((out / "records.jsonl").read_text().splitlines()) == 18
    import matplotlib.image

    image = matplotlib.image.imread(out / "sweep.png")
    assert image.shape[0] > 300 and image.shape[1] > 400 and image[..., :3].std() > 0.05  # a real, non-blank picture
    assert "rate judged by vader" in result.stderr


def test_sweep_rejects_bad_scales_and_unknown_attributes(tiny_bundle, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n")
    result = invoke("sweep", "--prompts", prompts, "--attr", "positive", "--scales", "1,x", "--bundle", tiny_bundle, "-q")
    assert result.exit_code != 0 and "--scales" in result.stderr
    result = invoke("sweep", "--prompts", prompts, "--attr", "formal", "--bundle", tiny_bundle, "--no-ppl", "-q")
    assert result.exit_code != 0 and "unknown attribute 'formal'" in result.stderr and result.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_default_perplexity_model_separates_text_from_gibberish(tmp_path, monkeypatch):
    from dglm_cli import fetch
    from dglm_cli.errors import AssetError

    monkeypatch.delenv("DGLM_HOME")  # the developer's cache, where `dglm fetch smollm2-135m` puts the model
    try:
        fetch.resolve_named("smollm2-135m", download=False)
    except AssetError:
        pytest.skip("the default perplexity model is not cached: run `dglm fetch smollm2-135m`")
    rows = [
        ("The train was late", " again this morning, so I missed the start of the meeting."),
        ("We walked along the river", " and watched the sun go down behind the hills."),
        ("The train was late", " ouR zq plk the the the banana seven quickly purple."),
    ]
    path = tmp_path / "real.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "continuation": c}) + "\n" for p, c in rows))
    result = invoke("score", path, "--records", "-q")
    assert result.exit_code == 0, result.output
    ppl = [json.loads(line)["scores"]["perplexity"] for line in result.stdout.splitlines()]
    assert ppl[0] < 60 and ppl[1] < 60 and ppl[2] > 1000
