"""Label scorers: VADER, saved dglm classifiers (on their own encoder), Hugging Face text classifiers."""

import json
from importlib import metadata
from pathlib import Path
from typing import Protocol

import torch

from dglm_cli import assets
from dglm_cli.bundle import MANIFEST, find_bundle
from dglm_cli.classifier import LinearClassifier
from dglm_cli.classifier_store import store_dir
from dglm_cli.encoder import EncoderConfig, SentenceEncoder
from dglm_cli.errors import AssetError, BundleError, InputError
from dglm_cli.files import read_json, sha256_file
from dglm_cli.loaders import CONFIG, WEIGHTS, load_classifier, load_encoder, load_text_classifier
from dglm_cli.scoring.perplexity import weights_fingerprint

VADER_THRESHOLD = 0.05


# ---------------------------------------------------------------- label scorers


class LabelScorer(Protocol):
    name: str
    labels: list[str]
    independent: bool  # judges in a feature space other than the guidance's

    def info(self) -> dict: ...

    def score(self, texts: list[str]) -> list[dict]:
        """One {"label": top label, ...details} per text."""


class VaderScorer:
    name = "vader"
    labels = ["negative", "neutral", "positive"]
    independent = True

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def info(self) -> dict:
        return {
            "name": self.name,
            "package": "vaderSentiment",
            "version": metadata.version("vaderSentiment"),
            "settings": {"label_from": "compound", "positive_at_least": VADER_THRESHOLD, "negative_at_most": -VADER_THRESHOLD},
        }

    def score(self, texts: list[str]) -> list[dict]:
        return [self._one(self.analyzer.polarity_scores(text)) for text in texts]

    @staticmethod
    def _one(polarity: dict) -> dict:
        compound = polarity["compound"]
        label = "positive" if compound >= VADER_THRESHOLD else "negative" if compound <= -VADER_THRESHOLD else "neutral"
        return {"label": label, "compound": compound, "pos": polarity["pos"], "neu": polarity["neu"], "neg": polarity["neg"]}


class ClassifierScorer:
    """A dglm linear classifier; `name` is clf:NAME so it never collides with other scorers."""

    independent = False

    def __init__(self, name: str, classifier: LinearClassifier, encoder: SentenceEncoder, source: str, weights_sha256: str | None = None):
        self.classifier_name = name
        self.name = f"clf:{name}"
        self.classifier = classifier
        self.encoder = encoder
        self.source = source
        self.weights_sha256 = weights_sha256
        self.labels = list(classifier.labels)

    def info(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "weights_sha256": self.weights_sha256,
            "labels": self.labels,
            "encoder": assets.describe(self.encoder.config.reference),
            "metrics": self.classifier.config.metrics,
        }

    @torch.no_grad()
    def score(self, texts: list[str]) -> list[dict]:
        embeddings = self.encoder.encode(texts).to(self.classifier.weight.device)  # (B, D)
        probs = self.classifier(embeddings).tolist()  # (B, C)
        return [_label_probs(self.labels, row) for row in probs]


class HFScorer:
    independent = True

    def __init__(self, spec: str, model, tokenizer, batch_size: int = 16):
        self.name = spec
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 512]
        self.max_length = min(int(v) for v in limits if v)
        self.multi_label = model.config.problem_type == "multi_label_classification"

    def info(self) -> dict:
        return {
            "name": self.name,
            "model": self.name.removeprefix("hf:"),
            "revision": getattr(self.model.config, "_commit_hash", None),
            "weights_sha256": weights_fingerprint(str(self.model.config._name_or_path)),
            "labels": self.labels,
            "transformers": metadata.version("transformers"),
            "settings": {"max_length": self.max_length, "activation": "sigmoid" if self.multi_label else "softmax"},
        }

    @torch.no_grad()
    def score(self, texts: list[str]) -> list[dict]:
        results = []
        for start in range(0, len(texts), self.batch_size):
            # an empty string can tokenise to nothing; one space keeps every row non-empty
            chunk = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            logits = self.model(**batch.to(self.model.device)).logits.float()  # (B, C)
            probs = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
            results += [_label_probs(self.labels, row) for row in probs.tolist()]
        return results


def _label_probs(labels: list[str], probs: list[float]) -> dict:
    top = max(range(len(labels)), key=lambda i: probs[i])
    return {"label": labels[top], "probs": dict(zip(labels, probs))}


def load_hf_scorer(spec: str, device, batch_size: int = 16) -> HFScorer:
    """`hf:PATH_OR_ID` -> a loaded text-classification scorer; any failure is one AssetError line."""
    target = spec.removeprefix("hf:")
    if not spec.startswith("hf:") or not target:
        raise InputError(f"unknown scorer {spec!r}; use hf:PATH_OR_ID (VADER is always on)")
    model, tokenizer = load_text_classifier(target, f"scorer {spec}")
    architectures = model.config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise AssetError(f"scorer {spec} is not a text-classification model (architectures: {', '.join(architectures) or 'unknown'})")
    if model.config.num_labels < 2:
        raise AssetError(f"scorer {spec} has a single output (regression); dglm needs labelled classes")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise AssetError(f"scorer {spec}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return HFScorer(spec, model.to(device).eval(), tokenizer, batch_size)



# ---------------------------------------------------------------- dglm classifiers


def classifier_dir(name_or_path: str) -> Path:
    """A saved classifier by name (DGLM_HOME/classifiers/NAME) or by its directory."""
    path = Path(name_or_path).expanduser()
    if (path / CONFIG).is_file():
        return path
    store = store_dir()
    if "/" not in name_or_path and (store / name_or_path / CONFIG).is_file():
        return store / name_or_path
    saved = sorted(d.name for d in store.glob("*") if (d / CONFIG).is_file()) if store.is_dir() else []
    raise InputError(f"unknown classifier {name_or_path!r}; saved classifiers: {', '.join(saved) or 'none'} (in {store})")


def classifier_encoder(config, directory: Path) -> tuple[EncoderConfig, Path]:
    """The encoder a classifier reads, and the base for its embedded paths.

    `config.encoder` is either {"reference": {...}, "bundle": ..., ...} or a bare reference ({"kind": ...});
    a classifier inside a bundle that records neither uses the bundle's encoder.
    """
    encoder = config.encoder or {}
    if "reference" in encoder:  # as `dglm train-classifier` writes it; "bundle" anchors embedded paths
        base = Path(encoder["bundle"]) if encoder.get("bundle") else directory
        return EncoderConfig(encoder["reference"], encoder.get("embedding_dim", config.embedding_dim), encoder.get("max_seq_length")), base
    if "kind" in encoder:
        return EncoderConfig(encoder, config.embedding_dim), directory
    bundle = directory.parent.parent
    if (bundle / MANIFEST).is_file():
        data = read_json(bundle / "encoder" / CONFIG)
        return EncoderConfig(data["reference"], data["embedding_dim"], data.get("max_seq_length")), bundle
    raise BundleError(f"classifier {directory} does not say which encoder it reads (no 'encoder' in its config.json)")


class EncoderCache:
    """Loads each encoder once, however many classifiers read it."""

    def __init__(self, device):
        self.device = device
        self.loaded: dict[str, SentenceEncoder] = {}

    def get(self, config: EncoderConfig, base: Path) -> SentenceEncoder:
        reference = config.reference
        key = json.dumps([reference, str(base) if reference.get("kind") == "embedded" else None], sort_keys=True)
        if key not in self.loaded:
            self.loaded[key] = load_encoder(config, base, self.device)
        return self.loaded[key]


def load_classifier_scorer(name_or_path: str, encoders: EncoderCache) -> ClassifierScorer:
    directory = classifier_dir(name_or_path)
    classifier = load_classifier(directory, encoders.device)
    encoder = encoders.get(*classifier_encoder(classifier.config, directory))
    if encoder.config.embedding_dim != classifier.config.embedding_dim:
        raise BundleError(f"classifier {directory.name} reads {classifier.config.embedding_dim}-d embeddings, its encoder gives {encoder.config.embedding_dim}")
    return ClassifierScorer(directory.name, classifier, encoder, str(directory), sha256_file(directory / WEIGHTS))


def bundle_classifier_scorers(bundle: str, encoders: EncoderCache) -> list[ClassifierScorer]:
    """Every classifier that travels with a bundle (the guiding classifiers of its records)."""
    path = find_bundle(bundle)
    return [load_classifier_scorer(str(d), encoders) for d in sorted((path / "classifiers").glob("*")) if (d / CONFIG).is_file()]
