"""Train an attribute classifier: labeled rows -> cached embeddings -> logistic regression -> LinearClassifier.

scikit-learn's LogisticRegression (lbfgs; multinomial when there are more than two labels) is fitted
on unit-norm embeddings. The data is split once, stratified, into train and held-out test rows; the
regularisation C is chosen on a validation split of the train rows (lowest log-loss over a small
grid) unless given, the model is refitted on all train rows, and the held-out metrics describe that
model. The export keeps scikit-learn's class order, so the torch probabilities equal `predict_proba`.
"""

import datetime
import hashlib
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dglm_cli import assets
from dglm_cli.bundle import bundle_encoder_config, encoder_identity, find_bundle
from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.embedding_cache import EmbeddingCache, embed_texts
from dglm_cli.encoder import EncoderConfig, SentenceEncoder
from dglm_cli.errors import InputError
from dglm_cli.loaders import load_encoder, load_encoder_reference
from dglm_cli.tabular import LabeledRows
from dglm_cli.validation import is_number

DEFAULT_ENCODER, DEFAULT_ENCODER_DIM = assets.DEFAULT_ENCODER, assets.DEFAULT_ENCODER_DIM
C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
FALLBACK_C = 1.0  # when there are too few rows to hold out a validation split
FEW_ROWS_PER_LABEL = 10
IMBALANCE_RATIO = 3.0


@dataclass
class TrainingSettings:
    C: float | None = None  # None: chosen on a validation split from C_GRID
    balanced: bool = False  # class_weight="balanced"
    test_size: float = 0.2
    seed: int = 0
    max_iter: int = 2000

    def validate(self) -> None:
        if not 0 < self.test_size < 1:
            raise InputError(f"--test-size must be between 0 and 1 (a fraction of the rows), got {self.test_size}")
        if self.C is not None and not self.C > 0:
            raise InputError(f"--C must be positive, got {self.C}")


# ---------------------------------------------------------------- encoders


@dataclass
class EncoderSource:
    """Which encoder embeds the training texts: a reference (+ the bundle it sits in) and its identity."""

    reference: dict
    identity: str
    bundle: Path | None = None

    def load(self, device: str = "cpu") -> SentenceEncoder:
        if self.bundle is not None:
            return load_encoder(bundle_encoder_config(self.bundle), self.bundle, device)
        if self.reference == DEFAULT_ENCODER:
            return load_encoder(EncoderConfig(DEFAULT_ENCODER, DEFAULT_ENCODER_DIM), None, device)
        return load_encoder_reference(self.reference, device)

    def describe(self) -> dict:
        """What a classifier records about its encoder (ClassifierConfig.encoder, an assets.EncoderRef)."""
        if self.bundle is None:
            return assets.EncoderRef(self.reference, self.identity, assets.describe(self.reference)).to_dict()
        description = f"bundle {self.bundle.name} ({assets.describe(self.reference)})"
        return assets.EncoderRef(self.reference, self.identity, description, str(self.bundle)).to_dict()


def encoder_source(encoder: str | None = None, bundle: str | Path | None = None) -> EncoderSource:
    """The default encoder, `encoder` (a local sentence-transformers directory or org/name[@revision]), or a bundle's."""
    if encoder is not None and bundle is not None:
        raise InputError("give either --encoder or --bundle, not both")
    if bundle is not None:
        path = find_bundle(bundle)
        reference = bundle_encoder_config(path).reference
        return EncoderSource(reference, encoder_identity(reference, path), path)
    if encoder is None:
        return EncoderSource(DEFAULT_ENCODER, encoder_identity(DEFAULT_ENCODER))
    reference = assets.parse_reference(encoder, kinds=("path", "hub"), what="--encoder", missing_paths=False)
    return EncoderSource(reference, encoder_identity(reference))


# ---------------------------------------------------------------- data


@dataclass
class CleanRows:
    texts: list[str]
    labels: list[str]
    warnings: list[str] = field(default_factory=list)


def clean_rows(rows: LabeledRows) -> CleanRows:
    """Drop empty texts and duplicate rows, check the labels, and collect warnings about the data."""
    notes = []
    empty = [line for line, text in zip(rows.lines, rows.texts) if not text.strip()]
    if empty:
        notes.append(f"dropped {len(empty)} rows with empty text (line {_lines(empty)})")
    pairs = [(t, l) for t, l in zip(rows.texts, rows.labels) if t.strip()]
    unique = list(dict.fromkeys(pairs))
    if len(unique) < len(pairs):
        notes.append(f"dropped {len(pairs) - len(unique)} duplicate rows (same text and label)")
    conflicting = len({t for t, _ in unique}) < len(unique)
    if conflicting:
        notes.append(f"{len(unique) - len({t for t, _ in unique})} texts appear with more than one label")
    texts, labels = [t for t, _ in unique], [l for _, l in unique]
    notes += check_labels(labels, rows.label_col)
    return CleanRows(texts, labels, notes)


def check_labels(labels: list[str], label_col: str) -> list[str]:
    """Errors for unusable label sets; warnings for imbalance, rare labels and numeric labels."""
    counts = Counter(labels)
    if len(counts) < 2:
        only = next(iter(counts), "")
        raise InputError(f"the label column {label_col!r} has a single class ({only!r}); a classifier needs at least two labels")
    with_colon = [label for label in counts if ":" in label]
    if with_colon:
        raise InputError(f"label {with_colon[0]!r} contains ':', which --attr uses as a separator; rename it")
    rare = [label for label, n in counts.items() if n < 2]
    if rare:
        raise InputError(f"label {rare[0]!r} has only one row; every label needs at least 2 rows (ideally dozens)")
    notes = []
    few = sorted(label for label, n in counts.items() if n < FEW_ROWS_PER_LABEL)
    if few:
        notes.append(f"very few rows for {', '.join(f'{l!r} ({counts[l]})' for l in few)}: the metrics and the classifier will be unreliable")
    if max(counts.values()) > IMBALANCE_RATIO * min(counts.values()):
        notes.append(f"imbalanced classes ({', '.join(f'{l}: {n}' for l, n in counts.most_common())}); consider --balanced")
    numeric = [label for label in counts if is_number(label)]
    if numeric:
        notes.append(f"numeric labels ({', '.join(sorted(numeric))}) need a weight in --attr, e.g. NAME:{numeric[0]}:1; word labels are easier")
    return notes


def data_fingerprint(texts: list[str], labels: list[str]) -> str:
    digest = hashlib.sha256()
    for text, label in zip(texts, labels):
        digest.update(json.dumps([text, label], ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- fitting


@dataclass
class FitResult:
    model: object  # the fitted sklearn LogisticRegression
    C: float
    metrics: dict
    n_train: int
    n_test: int
    validation: dict[str, float]  # C -> validation log-loss (empty when C was given)
    warnings: list[str]


def fit(embeddings: np.ndarray, labels: list[str], settings: TrainingSettings) -> FitResult:
    """Split, choose C, fit on the train rows and evaluate on the held-out rows. embeddings: (n, D)."""
    from sklearn.model_selection import train_test_split

    x = embeddings.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)  # unit norm, (n, D)
    y = np.array(labels, dtype=object)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=_split_count(y, settings.test_size), stratify=y, random_state=settings.seed
    )
    notes: list[str] = []
    validation: dict[str, float] = {}
    C = settings.C
    if C is None:
        C, validation = choose_C(x_train, y_train, settings, notes)
    model = _fit_logistic(x_train, y_train, C, settings, notes)
    return FitResult(model, C, evaluate(model, x_test, y_test), len(y_train), len(y_test), validation, notes)


def choose_C(x: np.ndarray, y: np.ndarray, settings: TrainingSettings, notes: list[str]) -> tuple[float, dict[str, float]]:
    """The C of C_GRID with the lowest log-loss on a stratified validation split of the train rows."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    if min(Counter(y).values()) < 2:
        notes.append(f"too few rows to choose C on a validation split; using C={FALLBACK_C:g}")
        return FALLBACK_C, {}
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=_split_count(y, settings.test_size), stratify=y, random_state=settings.seed + 1
    )
    scores = {}
    for C in C_GRID:
        model = _fit_logistic(x_fit, y_fit, C, settings, [])
        scores[f"{C:g}"] = float(log_loss(y_val, model.predict_proba(x_val), labels=model.classes_))
    best = min(scores, key=scores.get)
    return float(best), scores


def _fit_logistic(x: np.ndarray, y: np.ndarray, C: float, settings: TrainingSettings, notes: list[str]):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    model = LogisticRegression(
        C=C, class_weight="balanced" if settings.balanced else None, max_iter=settings.max_iter, random_state=settings.seed
    )
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1):  # BLAS threads only slow these small fits
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"logistic regression did not converge in {settings.max_iter} iterations at C={C:g}")
    return model


def _split_count(y: np.ndarray, fraction: float) -> int:
    """Rows to hold out: the fraction, but at least one per label and leaving at least one per label."""
    n, k = len(y), len(set(y))
    return min(max(math.ceil(fraction * n), k), n - k)


def evaluate(model, x: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-label precision/recall, ROC-AUC (binary), confusion matrix (rows = true)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

    labels = list(model.classes_)
    probabilities = model.predict_proba(x)  # (n, C), columns in `labels` order
    predicted = np.array(labels, dtype=object)[probabilities.argmax(axis=1)]
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=labels, average="macro", zero_division=0)),
        "majority_baseline": max(Counter(y).values()) / len(y),
        "per_label": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": {"labels": labels, "rows_true_columns_predicted": confusion_matrix(y, predicted, labels=labels).tolist()},
    }
    if len(labels) == 2 and len(set(y)) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y == labels[1], probabilities[:, 1]))
    return metrics


def to_linear_classifier(model, config: ClassifierConfig) -> LinearClassifier:
    """Export a fitted LogisticRegression; `config.labels` must be its classes_ (binary: one row, for labels[1])."""
    classifier = LinearClassifier(config)
    with torch.no_grad():
        classifier.weight.copy_(torch.as_tensor(model.coef_, dtype=torch.float32))  # (1 or C, D)
        classifier.bias.copy_(torch.as_tensor(model.intercept_, dtype=torch.float32))  # (1 or C,)
    return classifier.eval()


# ---------------------------------------------------------------- the whole recipe


@dataclass
class TrainingReport:
    classifier: LinearClassifier
    warnings: list[str]
    encoded: int  # texts that were not in the embedding cache
    rows: dict[str, int]


def train_classifier(
    rows: LabeledRows,
    source: EncoderSource,
    settings: TrainingSettings | None = None,
    device: str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
    cache_root: Path | None = None,
) -> TrainingReport:
    """Clean the rows, embed them (through the cache), fit, evaluate and export a classifier."""
    settings = settings or TrainingSettings()
    settings.validate()
    data = clean_rows(rows)
    cache = EmbeddingCache(source.identity, cache_root)
    embeddings, encoded = embed_texts(data.texts, lambda: source.load(device), cache, on_progress=on_progress)  # (n, D)
    result = fit(embeddings.numpy(), data.labels, settings)
    counts = {"read": len(rows.texts), "used": len(data.texts), "train": result.n_train, "test": result.n_test}
    info = {
        "data_sha256": data_fingerprint(rows.texts, rows.labels),
        "data": {"source": rows.source, "format": rows.format, "text_col": rows.text_col, "label_col": rows.label_col},
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "C": result.C,
        "validation_log_loss": result.validation,
        "settings": asdict(settings),
        "rows": counts,
        "label_counts": dict(Counter(data.labels)),
    }
    config = ClassifierConfig(
        labels=[str(c) for c in result.model.classes_], embedding_dim=embeddings.shape[1],
        encoder=source.describe(), metrics=result.metrics, info=info,
    )
    return TrainingReport(to_linear_classifier(result.model, config), data.warnings + result.warnings, encoded, counts)


def _lines(numbers: list[int], shown: int = 5) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")

