"""Scoring records in batches and summarising them per group (attribute rates, perplexity, distinct-n)."""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from dglm_cli import metrics
from dglm_cli._version import __version__
from dglm_cli.scoring.perplexity import PerplexityScorer
from dglm_cli.scoring.reader import _MISSING, Item, get_field

MAX_DISAGREEMENT = 0.25  # warn when guide and an independent scorer disagree on more than this share
DISTINCT_NS = (1, 2, 3)
EMPTY = "empty_continuation"


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
