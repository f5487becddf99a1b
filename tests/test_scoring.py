"""Scorers and summaries: perplexity against a direct transformers computation, VADER against the
library, dglm and Hugging Face classifiers against their own forward passes, record reading errors."""

import io
import json
import math

import pytest
import torch

from dglm_cli import scoring
from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.errors import AssetError, InputError
from dglm_cli.loaders import save_classifier
from dglm_cli.tiny import save_tiny_lm, tiny_lm


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    """A tiny random LM with its weight matrices scaled up: a near-uniform model would hide a wrong
    boundary or start token inside the 0.5% tolerance; this one does not (checked below)."""
    model, tokenizer = tiny_lm(request.param, seed=1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.mul_(8)
    return model, tokenizer


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("ppl") / "tiny-gpt2", "gpt2", seed=1)


def reference_perplexity(model, tokenizer, prompt, continuation):
    """exp(mean NLL) of the continuation's tokens, straight from transformers' own loss."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    full_ids = tokenizer(prompt + continuation, add_special_tokens=False).input_ids
    assert full_ids[: len(prompt_ids)] == prompt_ids  # the examples below split on a token boundary
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.tensor([[start, *full_ids]])
    labels = input_ids.clone()
    labels[0, : 1 + len(prompt_ids)] = -100
    with torch.no_grad():
        return math.exp(model(input_ids=input_ids, labels=labels).loss.item())


PAIRS = [
    ("The train was late", " again this morning."),
    ("We walked along the river", " and watched the sun go down."),
    ("", "The book is dull, long and badly written."),
    ("Stocks fell sharply after the announcement on Monday. Prices of coffee", " rose."),
]


def test_perplexity_matches_transformers_within_half_a_percent(lm):
    model, tokenizer = lm
    scorer = scoring.PerplexityScorer(model, tokenizer, {"kind": "path", "path": "tiny"}, batch_size=3)
    results = scorer.score([p for p, _ in PAIRS], [c for _, c in PAIRS])  # batched with padding
    for (prompt, continuation), result in zip(PAIRS, results):
        expected = reference_perplexity(model, tokenizer, prompt, continuation)
        assert result["perplexity"] == pytest.approx(expected, rel=0.005)
        assert result["tokens"] == len(tokenizer(prompt + continuation, add_special_tokens=False).input_ids) - len(tokenizer(prompt, add_special_tokens=False).input_ids)


def test_the_tolerance_would_catch_a_wrong_start_token(lm):
    model, tokenizer = lm
    scorer = scoring.PerplexityScorer(model, tokenizer, {"kind": "path", "path": "tiny"})
    scorer.start_id = tokenizer.pad_token_id
    prompt, continuation = PAIRS[2]
    wrong = scorer.score([prompt], [continuation])[0]["perplexity"]
    assert wrong != pytest.approx(reference_perplexity(model, tokenizer, prompt, continuation), rel=0.005)


def test_a_token_merged_across_the_boundary_belongs_to_the_continuation(lm):
    _, tokenizer = lm
    ids, first = scoring.joint_tokens(tokenizer, "The tra", "in was late")
    assert ids == tokenizer("The train was late", add_special_tokens=False).input_ids
    continuation = tokenizer.decode(ids[first:])
    assert continuation.endswith("in was late") and len(continuation) > len("in was late")  # 'ain' is scored whole
    assert "The tra".startswith(tokenizer.decode(ids[:first]))


def test_empty_continuation_has_no_perplexity_and_long_input_keeps_the_end(lm):
    model, tokenizer = lm
    scorer = scoring.PerplexityScorer(model, tokenizer, {"kind": "path", "path": "tiny"})
    assert scorer.score(["The train was late"], [""]) == [None]
    long_prompt = "We walked along the river. " * 60  # longer than the 256-position context
    (result,) = scorer.score([long_prompt], [" The end."])
    assert result["tokens"] > 0 and math.isfinite(result["perplexity"])


def test_vader_equals_the_library():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    texts = ["The movie was wonderful and moving.", "A truly awful, boring film.", "The meeting is at 5pm.", ""]
    library = SentimentIntensityAnalyzer()
    results = scoring.VaderScorer().score(texts)
    for text, result in zip(texts, results):
        expected = library.polarity_scores(text)
        assert {k: result[k] for k in ("compound", "pos", "neu", "neg")} == {"compound": expected["compound"], "pos": expected["pos"], "neu": expected["neu"], "neg": expected["neg"]}
    assert [r["label"] for r in results] == ["positive", "negative", "neutral", "neutral"]
    assert scoring.VaderScorer().info()["version"] == "3.3.2"


# ---------------------------------------------------------------- reading


def reader(text: str, **options):
    return scoring.RecordReader(io.BytesIO(text.encode()), "in.jsonl", **options)


def test_reader_maps_fields_and_skips_blank_lines():
    lines = '{"prompt": "p", "continuation": "c"}\n\n{"out": {"text": "t"}, "input": "q"}\n'
    items = list(reader(lines.split("\n\n")[0] + "\n"))
    assert (items[0].line, items[0].prompt, items[0].text) == (1, "p", "c")
    (item,) = list(reader("\n" + lines.split("\n\n")[1], text_field="out.text", prompt_field="input"))
    assert (item.line, item.prompt, item.text) == (2, "q", "t")
    (item,) = list(reader('{"text": "only text"}\n', text_field="text", prompt_field=""))
    assert item.prompt == ""


@pytest.mark.parametrize("line,message", [
    ("not json", "in.jsonl:2: not valid JSON"),
    ("[1, 2]", "in.jsonl:2: expected a JSON object"),
    ('{"prompt": "p"}', "in.jsonl:2: no string field 'continuation'"),
    ('{"continuation": "c"}', "in.jsonl:2: no string field 'prompt'"),
    ('{"prompt": "p", "continuation": 3}', "in.jsonl:2: no string field 'continuation'"),
])
def test_bad_lines_name_their_number_or_are_counted(line, message):
    text = '{"prompt": "p", "continuation": "c"}\n' + line + '\n{"prompt": "p", "continuation": "d"}\n'
    with pytest.raises(InputError, match=message):
        list(reader(text))
    tolerant = reader(text, skip_bad=True)
    assert [i.text for i in tolerant] == ["c", "d"]
    assert len(tolerant.skipped) == 1 and tolerant.skipped[0].startswith(message)


def test_non_utf8_line_is_named():
    stream = scoring.RecordReader(io.BytesIO(b'{"prompt": "p", "continuation": "\xff"}\n'), "x")
    with pytest.raises(InputError, match="x:1: not UTF-8"):
        list(stream)


# ---------------------------------------------------------------- classifiers


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from dglm_cli.tiny import tiny_sentence_encoder

    path = tmp_path_factory.mktemp("encoder") / "tiny-encoder"
    tiny_sentence_encoder().save(str(path))
    return path


def save_random_classifier(directory, encoder: dict, seed=0):
    torch.manual_seed(seed)
    classifier = LinearClassifier(ClassifierConfig(labels=["negative", "positive"], embedding_dim=32, encoder=encoder))
    torch.nn.init.normal_(classifier.weight, std=3.0)
    save_classifier(directory, classifier)
    return classifier


@pytest.mark.parametrize("form", ["bare", "wrapped"])
def test_saved_classifier_scores_like_its_own_forward(form, encoder_dir, tiny_encoder, monkeypatch, tmp_path):
    from dglm_cli.paths import dglm_home

    reference = {"kind": "path", "path": str(encoder_dir)}
    encoder = reference if form == "bare" else {"reference": reference, "identity": "x", "description": "tiny"}
    classifier = save_random_classifier(dglm_home() / "classifiers" / "mood", encoder)
    scorer = scoring.load_classifier_scorer("mood", scoring.EncoderCache("cpu"))
    texts = ["I loved every minute of this wonderful film.", "The train was late again this morning."]
    results = scorer.score(texts)
    with torch.no_grad():
        expected = classifier(scorer.encoder.encode(texts))
    assert scorer.name == "clf:mood" and scorer.labels == ["negative", "positive"]
    for result, row in zip(results, expected.tolist()):
        assert result["probs"]["positive"] == pytest.approx(row[1], abs=1e-6)
        assert result["label"] == ("positive" if row[1] > 0.5 else "negative")


def test_bundle_classifier_reads_the_bundle_encoder(tiny_bundle, tiny_pipeline):
    (scorer,) = scoring.bundle_classifier_scorers(str(tiny_bundle), scoring.EncoderCache("cpu"))
    texts = ["What a terrible, boring waste of time.", "Our team won the final match!"]
    with torch.no_grad():
        expected = tiny_pipeline.bundle.classifiers["tiny-sentiment"](tiny_pipeline.bundle.encoder.encode(texts))
    assert [r["probs"]["positive"] for r in scorer.score(texts)] == pytest.approx(expected[:, 1].tolist(), abs=1e-6)


def test_unknown_classifier_lists_the_saved_ones(encoder_dir):
    from dglm_cli.paths import dglm_home

    save_random_classifier(dglm_home() / "classifiers" / "formality", {"kind": "path", "path": str(encoder_dir)})
    with pytest.raises(InputError, match="unknown classifier 'nope'; saved classifiers: formality"):
        scoring.classifier_dir("nope")


# ---------------------------------------------------------------- Hugging Face scorers


@pytest.fixture(scope="module")
def hf_classifier_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from dglm_cli.tiny import tiny_bpe_tokenizer

    tokenizer = tiny_bpe_tokenizer()
    torch.manual_seed(3)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=128, num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("hf") / "tiny-sentiment-model"
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hf_scorer_matches_a_direct_forward(hf_classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = scoring.load_hf_scorer(f"hf:{hf_classifier_dir}", "cpu", batch_size=2)
    texts = ["I loved every minute.", "The service was slow and the food was cold.", "Fine.", ""]
    results = scorer.score(texts)
    model = AutoModelForSequenceClassification.from_pretrained(hf_classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_classifier_dir)
    for text, result in zip(texts[:3], results):
        with torch.no_grad():
            probs = model(**tokenizer([text], return_tensors="pt")).logits.softmax(-1)[0]
        assert result["probs"]["POSITIVE"] == pytest.approx(probs[1].item(), abs=1e-5)
    assert scorer.labels == ["NEGATIVE", "POSITIVE"] and set(results[3]["probs"]) == {"NEGATIVE", "POSITIVE"}
    assert scorer.info()["weights_sha256"]


def test_hf_scorer_that_cannot_load_is_one_asset_error(gpt2_dir, tmp_path):
    with pytest.raises(AssetError, match="cannot load scorer hf:"):
        scoring.load_hf_scorer(f"hf:{tmp_path / 'missing'}", "cpu")
    with pytest.raises(AssetError, match="cannot load scorer hf:someone/not-cached"):
        scoring.load_hf_scorer("hf:someone/not-cached", "cpu")  # HF_HUB_OFFLINE=1 in the tests
    with pytest.raises(AssetError, match="not a text-classification model"):
        scoring.load_hf_scorer(f"hf:{gpt2_dir}", "cpu")
    with pytest.raises(InputError, match="unknown scorer"):
        scoring.load_hf_scorer("perspective", "cpu")


# ---------------------------------------------------------------- summaries


def always_positive_guide(tiny_encoder) -> scoring.ClassifierScorer:
    classifier = LinearClassifier(ClassifierConfig(labels=["negative", "positive"], embedding_dim=32))
    with torch.no_grad():
        classifier.bias.fill_(10.0)  # p(positive) = sigmoid(10) whatever the text
    return scoring.ClassifierScorer("guide", classifier, tiny_encoder, "test")


def record(prompt_id, text, scale=5.0):
    attrs = [{"name": "positive", "classifier": "guide", "label": "positive", "weight": 1.0, "avoid": False}]
    return {"prompt_id": prompt_id, "prompt": f"prompt {prompt_id}", "continuation": text,
            "guidance": {"attrs": attrs, "scale": scale, "cfg": 1.0, "steps": 3, "sampler": "ddpm"}}


def test_group_summary_agreement_and_warning(tiny_encoder):
    records = [
        record("a", "What a terrible, awful, boring film."), record("a", "What a terrible day."),
        record("b", "I loved this wonderful film."), record("b", ""),
        record("a", "I loved it.", scale=0.0),
    ]
    items = [scoring.Item(i, r, r["prompt"], r["continuation"]) for i, r in enumerate(records, 1)]
    scorers = scoring.Scoring(None, [always_positive_guide(tiny_encoder), scoring.VaderScorer()])
    evaluation = scoring.Evaluation(max_disagreement=0.25)
    scored = []
    scoring.run(items, scorers, evaluation, batch_size=2, on_record=scored.append)
    summary = evaluation.summary(scorers.info(), scorers.labelers)
    guided, unguided = summary["groups"]
    assert guided["group"] == "guide:positive s=5 cfg=1 ddpm×3" and guided["records"] == 4 and unguided["records"] == 1
    assert guided["empty"] == 1 and scored[3]["flags"] == ["empty_continuation"]
    # VADER: negative, negative, positive, neutral; the guide says positive for all four -> 1 of 4 agree
    assert guided["agreement"]["vader"]["agree"] == 1 and guided["agreement"]["vader"]["compared"] == 4
    assert guided["attributes"]["vader"]["positive"]["rate"] == 0.25
    assert guided["attributes"]["clf:guide"]["positive"]["count"] == 4
    assert any("disagree on 75% of 4 records" in w for w in summary["warnings"])
    # distinct-1 is computed per prompt over its samples ("a": two continuations, "b": one non-empty), then averaged
    a_words = "What a terrible, awful, boring film. What a terrible day.".split()
    b_words = "I loved this wonderful film.".split()
    expected = (len(set(a_words)) / len(a_words) + len(set(b_words)) / len(b_words)) / 2
    assert guided["distinct_1"] == pytest.approx(expected)
    assert guided["mean_length"] == pytest.approx((6 + 4 + 5 + 0) / 4)
    assert guided["perplexity"] == {"mean": None, "median": None, "records": 0}


def test_group_by_a_field():
    evaluation = scoring.Evaluation(group_by="meta.bundle")
    scorers = scoring.Scoring(None, [scoring.VaderScorer()])
    rows = [{"prompt": "p", "continuation": "good", "meta": {"bundle": "x"}}, {"prompt": "p", "continuation": "bad"}]
    scoring.run([scoring.Item(i, r, "p", r["continuation"]) for i, r in enumerate(rows)], scorers, evaluation, 8)
    names = [g["group"] for g in evaluation.summary([], scorers.labelers)["groups"]]
    assert names == ["meta.bundle=x", "meta.bundle: (missing)"]
    json.dumps(evaluation.summary(scorers.info(), scorers.labelers))  # the summary is plain JSON
