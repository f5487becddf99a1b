"""Scoring generated text: perplexity, attribute scorers, and per-group summaries. No printing here.

Input is JSONL read one line at a time (`dglm generate` records, or any objects with a prompt and a
continuation field). Each record gets a `scores` block; a group summary (by guidance settings, or by
any field) accumulates as records stream past: memory holds the distinct n-grams and a few numbers
per record, never the records themselves.

Scorers:
- perplexity: conditional perplexity of the continuation given the prompt under a fixed causal LM,
  exp(mean NLL of the continuation's tokens). Prompt and continuation are tokenised as one string
  (the text the model would have seen); a token that covers any character of the continuation is a
  continuation token, so a merge across the boundary is scored, never dropped. The sequence starts
  with the tokenizer's BOS token (its EOS token when it has none, GPT-2's convention), so the first
  token of a continuation without a prompt is scored too. Sequences longer than the model's context
  keep their last tokens.
- vader: the VADER lexicon (vaderSentiment), label from the compound score with the thresholds its
  authors recommend (>= 0.05 positive, <= -0.05 negative, else neutral).
- clf:NAME: a saved dglm classifier on the embedding of its own encoder.
- hf:PATH_OR_ID: a Hugging Face sequence-classification model (softmax over its labels).
Label scorers judge the continuation alone, as the guidance does (it steers the continuation's embedding).
"""

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Protocol

import torch
import torch.nn.functional as F

from dglm_cli import assets, metrics
from dglm_cli._version import __version__
from dglm_cli.bundle import MANIFEST, find_bundle
from dglm_cli.classifier import LinearClassifier
from dglm_cli.classifier_store import store_dir
from dglm_cli.decoder import IGNORE_INDEX
from dglm_cli.encoder import EncoderConfig, SentenceEncoder
from dglm_cli.errors import AssetError, BundleError, InputError
from dglm_cli.files import read_json, sha256_file
from dglm_cli.loaders import CONFIG, WEIGHTS, load_classifier, load_encoder, load_lm, load_text_classifier
from dglm_cli.records import json_object

TEXT_FIELD = "continuation"
PROMPT_FIELD = "prompt"
DEFAULT_PPL_MODEL = assets.DEFAULT_DECODER
VADER_THRESHOLD = 0.05
MAX_DISAGREEMENT = 0.25  # warn when guide and an independent scorer disagree on more than this share
DISTINCT_NS = (1, 2, 3)
EMPTY = "empty_continuation"
_MISSING = object()


# ---------------------------------------------------------------- reading records


@dataclass
class Item:
    """One input record with the fields scoring needs; `line` is its 1-based line number."""

    line: int
    record: dict
    prompt: str
    text: str


def get_field(record: dict, name: str):
    """A field by dotted name (`guidance.scale`), or _MISSING."""
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


class RecordReader:
    """Streams Items from JSONL bytes; a bad line raises InputError naming it, or is counted with skip_bad."""

    def __init__(self, stream: IO[bytes], source: str, text_field: str = TEXT_FIELD,
                 prompt_field: str | None = PROMPT_FIELD, skip_bad: bool = False):
        self.stream = stream
        self.source = source
        self.text_field = text_field
        self.prompt_field = prompt_field or None
        self.skip_bad = skip_bad
        self.skipped: list[str] = []  # one message per skipped line

    def __iter__(self) -> Iterator[Item]:
        for number, raw in enumerate(self.stream, 1):
            if not raw.strip():
                continue
            try:
                yield self.parse(number, raw)
            except InputError as error:
                if not self.skip_bad:
                    raise
                self.skipped.append(str(error))

    def parse(self, number: int, raw: bytes) -> Item:
        where = f"{self.source}:{number}"
        try:
            record = json_object(raw.decode("utf-8"), where)
        except UnicodeDecodeError as error:
            raise InputError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        text = get_field(record, self.text_field)
        if not isinstance(text, str):
            raise InputError(f"{where}: no string field {self.text_field!r} (choose another with --text-field)")
        prompt = ""
        if self.prompt_field:
            prompt = get_field(record, self.prompt_field)
            if not isinstance(prompt, str):
                raise InputError(
                    f"{where}: no string field {self.prompt_field!r} (choose another with --prompt-field, "
                    "or --prompt-field '' to score without prompts)"
                )
        return Item(number, record, prompt, text)


# ---------------------------------------------------------------- perplexity


def joint_tokens(tokenizer, prompt: str, text: str) -> tuple[list[int], int]:
    """Ids of `prompt + text` tokenised as one string, and the index of its first continuation token.

    A token counts as continuation when it covers any character of `text`, so a token merged across
    the boundary belongs to the continuation.
    """
    full = prompt + text
    if tokenizer.is_fast:
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        first = next((i for i, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
        return ids, first
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    first = next((i for i, (a, b) in enumerate(zip(ids, prompt_ids)) if a != b), min(len(ids), len(prompt_ids)))
    return ids, first


class PerplexityScorer:
    name = "perplexity"

    def __init__(self, model, tokenizer, reference: dict, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.reference = reference
        self.batch_size = batch_size
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        config = model.config
        self.max_length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)

    def info(self) -> dict:
        name_or_path = str(getattr(self.model.config, "_name_or_path", ""))
        return {
            "name": self.name,
            "model": assets.describe(self.reference),
            "revision": getattr(self.model.config, "_commit_hash", None),
            "weights_sha256": weights_fingerprint(name_or_path),
            "transformers": metadata.version("transformers"),
            "settings": {
                "definition": "exp(mean NLL of continuation tokens | [BOS] + prompt), joint tokenisation",
                "start_token_id": self.start_id,
                "max_length": self.max_length,
                "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                "batch_size": self.batch_size,
            },
        }

    def sequence(self, prompt: str, text: str) -> tuple[list[int], int]:
        """[start] + joint tokens, cut to the context from the left; and the first scored position."""
        ids, first = joint_tokens(self.tokenizer, prompt, text)
        ids, first = [self.start_id, *ids], first + 1
        cut = max(0, len(ids) - self.max_length)
        return ids[cut:], max(first - cut, 1)

    @torch.no_grad()
    def score(self, prompts: list[str], texts: list[str]) -> list[dict | None]:
        """{"perplexity", "tokens"} per pair; None for a continuation with no tokens."""
        sequences = [self.sequence(p, t) for p, t in zip(prompts, texts)]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))  # less padding
        results: list[dict | None] = [None] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            sums, counts = self._nll([sequences[i] for i in chunk])
            for i, total, count in zip(chunk, sums.tolist(), counts.tolist()):
                if count:
                    results[i] = {"perplexity": math.exp(total / count), "tokens": count}
        return results

    def _nll(self, sequences: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL of the scored tokens (B,) and their counts (B,) for right-padded sequences."""
        width = max(len(ids) for ids, _ in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, (seq, first) in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, first : len(seq)] = torch.tensor(seq[first:], dtype=torch.long)
        device = self.model.device
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, L, V)
        targets = labels[:, 1:].to(device)  # token i is predicted at position i - 1
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, reduction="none")  # (B, L-1)
        return nll.sum(dim=1).cpu(), (targets != IGNORE_INDEX).sum(dim=1).cpu()


def ppl_reference(value: str | None) -> dict:
    """--ppl-model: a local directory, else a Hub id; nothing means the default decoder."""
    if value is None:
        return DEFAULT_PPL_MODEL
    return assets.parse_reference(value, kinds=("path", "hub"), what="--ppl-model", bare="hub")


def load_perplexity_scorer(reference: dict, device, batch_size: int = 16) -> PerplexityScorer:
    try:
        model, tokenizer = load_lm(reference, None, device)
    except (AssetError, BundleError) as error:
        raise AssetError(f"cannot load the perplexity model: {error}") from None
    return PerplexityScorer(model, tokenizer, reference, batch_size)


def weights_fingerprint(directory: str) -> str | None:
    """sha256 over the weight files of a local model directory (None for anything else)."""
    path = Path(directory)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


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


# ---------------------------------------------------------------- scoring records


@dataclass
class Scoring:
    perplexity: PerplexityScorer | None
    labelers: list = field(default_factory=list)  # LabelScorer instances

    def info(self) -> list[dict]:
        return ([self.perplexity.info()] if self.perplexity else []) + [s.info() for s in self.labelers]

    def score_batch(self, items: list[Item]) -> list[dict]:
        """The input records, each with `scores`, `agreement` and `flags` added."""
        texts = [item.text for item in items]
        ppl = self.perplexity.score([i.prompt for i in items], texts) if self.perplexity else [None] * len(items)
        verdicts = {s.name: s.score(texts) for s in self.labelers}
        return [self._scored(item, ppl[row], {name: v[row] for name, v in verdicts.items()}) for row, item in enumerate(items)]

    def _scored(self, item: Item, ppl: dict | None, verdicts: dict) -> dict:
        scores = {
            "length": len(metrics.words(item.text)),
            "repetition": metrics.repetition_rate(item.text),
            "perplexity": ppl["perplexity"] if ppl else None,
            "ppl_tokens": ppl["tokens"] if ppl else 0,
            **verdicts,
        }
        flags = [EMPTY] if not item.text.strip() else []
        return {**item.record, "scores": scores, "agreement": self.agreement(item.record, verdicts), "flags": flags}

    def agreement(self, record: dict, verdicts: dict) -> dict:
        """Per guided attribute: does the text have it, by the guiding classifier and by each independent scorer."""
        out = {}
        for attr in guided_attributes(record):
            guide = verdicts.get(f"clf:{attr['classifier']}")
            if guide is None:
                continue
            label = attr["label"]
            judged = {"guide": guide["label"] == label}
            for scorer in self.labelers:
                match = matching_label(scorer.labels, label)
                if scorer.independent and match:
                    judged[scorer.name] = verdicts[scorer.name]["label"] == match
            out[f"{attr['classifier']}:{label}"] = judged
        return out


def guided_attributes(record: dict) -> list[dict]:
    guidance = record.get("guidance")
    attrs = guidance.get("attrs") if isinstance(guidance, dict) else None
    return [a for a in attrs or [] if isinstance(a, dict) and "classifier" in a and "label" in a]


def matching_label(labels: list[str], label: str) -> str | None:
    """The scorer's own spelling of `label` (case-insensitive match), or None."""
    return next((own for own in labels if own.lower() == label.lower()), None)


def score_items(items: Iterable[Item], scoring: Scoring, batch_size: int) -> Iterator[tuple[Item, dict]]:
    """(item, scored record) pairs, scored `batch_size` at a time."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield from zip(batch, scoring.score_batch(batch))
            batch = []
    if batch:
        yield from zip(batch, scoring.score_batch(batch))


# ---------------------------------------------------------------- summaries


def guidance_label(guidance) -> str:
    """A short name for a guidance block: `tiny-sentiment:positive s=5 cfg=1 ddpm×50`."""
    if not isinstance(guidance, dict):
        return "no guidance recorded"
    parts = []
    for attr in guided_attributes({"guidance": guidance}):
        weight = attr.get("weight", 1)
        text = f"{'avoid ' if attr.get('avoid') else ''}{attr['classifier']}:{attr['label']}"
        parts.append(text + (f"×{_short(weight)}" if weight != 1 else ""))
    parts = [", ".join(parts) or "no attributes", f"s={_short(guidance.get('scale', 0))}"]
    if "cfg" in guidance:
        parts.append(f"cfg={_short(guidance['cfg'])}")
    if "sampler" in guidance:
        parts.append(f"{guidance['sampler']}×{guidance.get('steps', '?')}")
    return " ".join(parts)


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


@dataclass
class GroupStats:
    """Running totals for one group of scored records."""

    name: str
    key: object
    records: int = 0
    empty: int = 0
    perplexities: list = field(default_factory=list)
    repetitions: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    label_counts: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    agreement: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # scorer -> [agree, compared]
    targets: dict = field(default_factory=dict)  # "clf:label" -> None (ordered set)
    ngrams: dict = field(default_factory=lambda: defaultdict(lambda: {n: [set(), 0] for n in DISTINCT_NS}))

    def add(self, scored: dict, prompt_key: str, text: str) -> None:
        scores = scored["scores"]
        self.records += 1
        self.empty += EMPTY in scored["flags"]
        self.perplexities.append(scores["perplexity"])
        self.repetitions.append(scores["repetition"])
        self.lengths.append(scores["length"])
        for name, verdict in scores.items():
            if isinstance(verdict, dict) and "label" in verdict:
                self.label_counts[name][verdict["label"]] += 1
        for judged in scored["agreement"].values():
            for scorer, verdict in judged.items():
                if scorer != "guide":
                    self.agreement[scorer][0] += verdict == judged["guide"]
                    self.agreement[scorer][1] += 1
        for attr in guided_attributes(scored):
            self.targets.setdefault(f"{attr['classifier']}:{attr['label']}", None)
        words = metrics.words(text)
        for n, (unique, _) in self.ngrams[prompt_key].items():
            grams = metrics.ngrams(words, n)
            unique.update(grams)
            self.ngrams[prompt_key][n][1] += len(grams)

    def distinct(self, n: int) -> float | None:
        """Mean over prompts of distinct-n among that prompt's continuations (see dglm_cli.metrics)."""
        return metrics.mean(len(c[n][0]) / c[n][1] if c[n][1] else None for c in self.ngrams.values())

    def summary(self, scorers: list, max_disagreement: float) -> tuple[dict, list[str]]:
        warnings = []
        agreement = {}
        for scorer, (agree, compared) in self.agreement.items():
            low, high = metrics.wilson_interval(agree, compared)
            agreement[scorer] = {"agree": agree, "compared": compared, "share": agree / compared, "low": low, "high": high}
            if 1 - agree / compared > max_disagreement:
                warnings.append(
                    f"group {self.name!r}: the guiding classifier and {scorer} disagree on "
                    f"{1 - agree / compared:.0%} of {compared} records (more than {max_disagreement:.0%}); "
                    "the guidance may be exploiting its classifier, or the two measure different things"
                )
        summary = {
            "group": self.name,
            "key": self.key,
            "records": self.records,
            "empty": self.empty,
            "perplexity": {
                "mean": metrics.mean(self.perplexities),
                "median": metrics.median(self.perplexities),
                "records": sum(p is not None for p in self.perplexities),
            },
            **{f"distinct_{n}": self.distinct(n) for n in DISTINCT_NS},
            "repetition": metrics.mean(self.repetitions),
            "mean_length": metrics.mean(self.lengths),
            "targets": list(self.targets),
            "attributes": {s.name: self._rates(s.name, s.labels) for s in scorers if s.name in self.label_counts},
            "agreement": agreement,
        }
        return summary, warnings

    def _rates(self, scorer: str, labels: list[str]) -> dict:
        counts = self.label_counts[scorer]
        rates = {}
        for label in labels:
            low, high = metrics.wilson_interval(counts[label], self.records)
            rates[label] = {"rate": counts[label] / self.records, "low": low, "high": high, "count": counts[label]}
        return rates


class Evaluation:
    """Groups scored records as they stream past and summarises them."""

    def __init__(self, group_by: str | None = None, max_disagreement: float = MAX_DISAGREEMENT):
        self.group_by = group_by
        self.max_disagreement = max_disagreement
        self.groups: dict[str, GroupStats] = {}

    def add(self, item: Item, scored: dict) -> None:
        name, key = self.group_of(scored)
        if name not in self.groups:
            self.groups[name] = GroupStats(name, key)
        self.groups[name].add(scored, str(scored.get("prompt_id", item.prompt)), item.text)

    def group_of(self, record: dict) -> tuple[str, object]:
        if self.group_by is None:
            guidance = record.get("guidance")
            return guidance_label(guidance), guidance if isinstance(guidance, dict) else None
        value = get_field(record, self.group_by)
        if value is _MISSING:
            return f"{self.group_by}: (missing)", None
        return f"{self.group_by}={value if isinstance(value, str) else json.dumps(value)}", value

    def summary(self, scorers_info: list[dict], scorers: list, **extra) -> dict:
        groups, warnings = [], []
        for group in self.groups.values():
            summary, group_warnings = group.summary(scorers, self.max_disagreement)
            groups.append(summary)
            warnings += group_warnings
        return {
            "dglm_version": __version__,
            **extra,
            "records": sum(g.records for g in self.groups.values()),
            "empty": sum(g.empty for g in self.groups.values()),
            "group_by": self.group_by or "guidance",
            "scorers": scorers_info,
            "definitions": DEFINITIONS,
            "max_disagreement": self.max_disagreement,
            "groups": groups,
            "warnings": warnings,
        }


DEFINITIONS = {
    "perplexity": "exp(mean NLL of the continuation's tokens given [BOS] + prompt); mean and median over records with >= 1 token",
    "distinct_n": "unique / total whitespace n-grams among one prompt's continuations in the group, averaged over prompts",
    "repetition": f"1 - unique / total whitespace {metrics.REPETITION_N}-grams within a continuation, averaged over records that have one",
    "mean_length": "whitespace tokens per continuation",
    "attribute rate": "share of the group's records whose top label is the label; 95% Wilson interval",
    "agreement": "share of records where the guiding classifier and the scorer agree on whether the text has the guided label",
}


def run(items: Iterable[Item], scoring: Scoring, evaluation: Evaluation, batch_size: int,
        on_record: Callable[[dict], None] | None = None) -> None:
    """Score `items` in batches, feed every scored record to `evaluation` and to `on_record`."""
    for item, scored in score_items(items, scoring, batch_size):
        evaluation.add(item, scored)
        if on_record:
            on_record(scored)
