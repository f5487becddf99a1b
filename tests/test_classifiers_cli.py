"""`dglm train-classifier`, `dglm classifiers ...` and guidance by name, on the tiny bundle's encoder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dglm_cli.cli import app

EXAMPLE = Path(__file__).parent.parent / "examples" / "reviews.csv"
FAST = ["--steps", "3", "--max-new-tokens", "4", "--mc-samples", "4"]
TOPICS = {
    "food": ["The soup was hot and the bread was fresh.", "We ate noodles with a spicy sauce.", "Her cake had three layers of cream.",
             "The chef grilled fish over charcoal.", "Fresh apples and pears filled the basket.", "The pasta needed more salt."],
    "travel": ["The train crossed the mountains at dawn.", "Our flight landed late in Lisbon.", "We rented bikes to tour the island.",
               "The ferry rocked in the grey harbour.", "He packed one bag for a month abroad.", "The hostel was close to the station."],
    "tech": ["The new phone has a bright screen.", "My laptop battery lasts ten hours.", "The update fixed the wifi driver.",
             "She wrote a script to back up the server.", "The chip runs cooler than the last one.", "The app syncs notes across devices."],
}


def invoke(*args, input=None):
    return CliRunner().invoke(app, list(map(str, args)), input=input)


def store() -> Path:
    return Path(os.environ["DGLM_HOME"]) / "classifiers"


def saved_names() -> list[str]:
    return sorted(p.name for p in store().iterdir()) if store().exists() else []


def write_topics(path: Path) -> Path:
    lines = ["label\ttext"] + [f"{label}\t{text}" for label, texts in TOPICS.items() for text in texts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(data, *args, bundle=None):
    return invoke("train-classifier", data, "--bundle", bundle, "--quiet", *args)


def records(text):
    return [json.loads(line) for line in text.splitlines()]


def test_train_list_show_rm(tiny_bundle):
    result = train(EXAMPLE, "--name", "reviews", bundle=tiny_bundle)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout and "ROC-AUC" in result.stdout
    assert saved_names() == ["reviews"]
    listing = invoke("classifiers", "list")
    assert listing.exit_code == 0 and "reviews" in listing.stdout and "negative,positive" in listing.stdout
    shown = json.loads(invoke("classifiers", "show", "reviews", "--json").stdout)
    assert shown["labels"] == ["negative", "positive"] and shown["embedding_dim"] == 32
    assert shown["encoder"]["identity"].startswith("sha256:") and len(shown["info"]["data_sha256"]) == 64
    assert shown["info"]["rows"] == {"read": 40, "used": 40, "train": 32, "test": 8}
    assert "held out" in invoke("classifiers", "show", "reviews").stdout
    assert invoke("classifiers", "rm", "reviews").exit_code == 0 and saved_names() == []
    gone = invoke("classifiers", "rm", "reviews")
    assert gone.exit_code != 0 and "no saved classifier named 'reviews'" in gone.stderr


def test_json_report_and_force(tiny_bundle, tmp_path):
    data = write_topics(tmp_path / "topics.tsv")
    first = train(data, "--json", "--C", "5", "--seed", "1", bundle=tiny_bundle)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["name"] == "topics" and report["labels"] == ["food", "tech", "travel"] and report["C"] == 5.0
    assert report["encoded"] == 18 and sum(map(sum, report["metrics"]["confusion_matrix"]["rows_true_columns_predicted"])) == report["rows"]["test"]
    assert any("very few rows" in w for w in report["warnings"])
    again = train(data, "--json", "--force", bundle=tiny_bundle)
    assert again.exit_code == 0 and json.loads(again.stdout)["encoded"] == 0  # every embedding from the cache


BAD_INPUTS = {
    "empty": ("empty.csv", b"", [], "is empty"),
    "header only": ("header.csv", b"text,label\n", [], "no data rows"),
    "misspelled column": ("cols.csv", b"text,label\nhi,a\nho,b\n", ["--label-col", "lable"], "columns: text, label"),
    "missing column": ("cols2.csv", b"words,kind,x\nhi,a,1\n", [], "columns: words, kind, x"),
    "single class": ("one.csv", b"text,label\nhi,a\nho,a\nhey,a\n", [], "single class"),
    "non-utf8": ("latin.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"), [], "line 2: not UTF-8"),
    "ragged": ("ragged.csv", b"text,label\nhi,a\nho,b,c\n", [], "line 3: 3 fields"),
    "bad jsonl": ("bad.jsonl", b'{"text": "hi", "label": "a"}\n{"text": "ho", "label": b}\n', [], "line 2: not valid JSON"),
    "empty label": ("nolabel.csv", b"text,label\nhi,a\nho,\nhey,b\n", [], "line 3: the label column 'label' is empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_saves_nothing(tiny_bundle, tmp_path, case):
    name, content, args, expected = BAD_INPUTS[case]
    (tmp_path / name).write_bytes(content)
    result = train(tmp_path / name, "--name", "bad", *args, bundle=tiny_bundle)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dglm: error:") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert saved_names() == []


def test_overwrite_needs_force(tiny_bundle):
    assert train(EXAMPLE, "--name", "reviews", bundle=tiny_bundle).exit_code == 0
    before = (store() / "reviews" / "model.safetensors").read_bytes()
    result = train(EXAMPLE, "--name", "reviews", "--C", "0.01", bundle=tiny_bundle)
    assert result.exit_code != 0 and result.stderr.count("\n") == 1 and "already exists (use --force" in result.stderr
    assert (store() / "reviews" / "model.safetensors").read_bytes() == before
    assert train(EXAMPLE, "--name", "reviews", "--C", "0.01", "--force", bundle=tiny_bundle).exit_code == 0
    assert (store() / "reviews" / "model.safetensors").read_bytes() != before


def test_bad_options(tiny_bundle):
    for args, expected in [
        (["--test-size", "1.5"], "--test-size"),
        (["--C", "0"], "--C must be positive"),
        (["--name", "a:b"], "invalid classifier name"),
        (["--format", "xml"], "--format"),
    ]:
        result = train(EXAMPLE, *args, bundle=tiny_bundle)
        assert result.exit_code != 0 and expected in result.stderr and "Traceback" not in result.output
    assert saved_names() == []


def test_multi_class_guidance_by_name_through_generate(tiny_bundle, tmp_path):
    assert train(write_topics(tmp_path / "topics.tsv"), "--name", "topic", bundle=tiny_bundle).exit_code == 0
    guided = invoke("generate", "--bundle", tiny_bundle, "-p", "On Monday", "--attr", "travel:3", "--avoid", "food",
                    "--guidance", "50", "--seed", "4", "-q", *FAST)
    assert guided.exit_code == 0, guided.output
    (record,) = records(guided.stdout)
    attrs = [(a["classifier"], a["label"], a["weight"], a["avoid"]) for a in record["guidance"]["attrs"]]
    assert attrs == [("topic", "travel", 3.0, False), ("topic", "food", 1.0, True)]
    plain = records(invoke("generate", "--bundle", tiny_bundle, "-p", "On Monday", "--seed", "4", "-q", *FAST).stdout)
    assert plain[0]["continuation"] != record["continuation"]


def test_names_resolve_across_the_bundle_and_the_store(tiny_bundle):
    assert train(EXAMPLE, "--name", "reviews", bundle=tiny_bundle).exit_code == 0
    ambiguous = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "--attr", "positive", *FAST)
    assert ambiguous.exit_code != 0 and "ambiguous: say which of tiny-sentiment:positive, reviews:positive" in ambiguous.stderr
    chosen = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "--attr", "reviews:positive", "-q", *FAST)
    assert chosen.exit_code == 0 and records(chosen.stdout)[0]["guidance"]["attrs"][0]["classifier"] == "reviews"
    unknown = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "--attr", "joyful", *FAST)
    assert unknown.exit_code != 0 and "unknown attribute 'joyful'; available: tiny-sentiment:negative" in unknown.stderr
    assert "reviews:positive" in unknown.stderr


def test_a_classifier_of_another_encoder_is_refused_with_the_reason(tiny_bundle, tmp_path):
    from dglm_cli.tiny import tiny_sentence_encoder

    other = tmp_path / "other-encoder"
    tiny_sentence_encoder(seed=1).save(str(other))
    result = invoke("train-classifier", write_topics(tmp_path / "topics.tsv"), "--encoder", other, "--name", "topic", "-q")
    assert result.exit_code == 0, result.output
    refused = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "--attr", "travel", *FAST)
    assert refused.exit_code != 0 and refused.stderr.count("\n") == 1
    assert f"classifier 'topic' was trained on encoder {other.resolve()}" in refused.stderr
    assert "retrain it with `dglm train-classifier DATA --bundle" in refused.stderr
    fine = invoke("generate", "--bundle", tiny_bundle, "-p", "Hi", "--attr", "positive", "-q", *FAST)
    assert fine.exit_code == 0 and records(fine.stdout)[0]["guidance"]["attrs"][0]["classifier"] == "tiny-sentiment"
    export = invoke("classifiers", "export", "topic", tiny_bundle)
    assert export.exit_code != 0 and "was trained on encoder" in export.stderr


def test_export_into_a_bundle(tiny_bundle, tmp_path):
    from dglm_cli.bundle import load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    assert train(write_topics(tmp_path / "topics.tsv"), "--name", "topic", bundle=tiny_bundle).exit_code == 0
    exported = invoke("classifiers", "export", "topic", bundle)
    assert exported.exit_code == 0, exported.output
    assert "classifiers tiny-sentiment, topic" in invoke("bundle", "info", bundle, "--verify").stdout
    assert load_bundle(bundle, verify=True).classifiers["topic"].labels == ["food", "tech", "travel"]
    again = invoke("classifiers", "export", "topic", bundle)
    assert again.exit_code != 0 and "already has a classifier 'topic'" in again.stderr
    assert invoke("classifiers", "rm", "topic").exit_code == 0
    travels = invoke("generate", "--bundle", bundle, "-p", "Hi", "--attr", "travel", "-q", *FAST)
    assert travels.exit_code == 0 and records(travels.stdout)[0]["guidance"]["attrs"][0]["classifier"] == "topic"


def test_subprocess_reads_stdin_and_names_the_classifier_after_the_label_column(tiny_bundle, tmp_path):
    jsonl = "".join(json.dumps({"text": t, "topic": label}) + "\n" for label, texts in TOPICS.items() for t in texts)
    result = subprocess.run(
        [sys.executable, "-m", "dglm_cli", "train-classifier", "-", "--bundle", str(tiny_bundle), "--json"],
        input=jsonl, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "topic" and "warning: very few rows" in result.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "dglm_cli", "train-classifier", "-", "--bundle", str(tiny_bundle), "--name", "x"],
        input="text,label\n", capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "no data rows" in bad.stderr


def test_export_into_a_bundle_that_has_no_classifiers_yet(tiny_bundle, tmp_path):
    bundle = tmp_path / "bare"
    shutil.copytree(tiny_bundle, bundle)
    shutil.rmtree(bundle / "classifiers")
    manifest = json.loads((bundle / "dglm.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("classifiers/")}
    (bundle / "dglm.json").write_text(json.dumps(manifest))
    assert train(write_topics(tmp_path / "topics.tsv"), "--name", "topic", bundle=bundle).exit_code == 0
    exported = invoke("classifiers", "export", "topic", bundle)
    assert exported.exit_code == 0, exported.output
    assert "classifiers topic" in invoke("bundle", "info", bundle, "--verify").stdout
