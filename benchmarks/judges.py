"""Sentiment judges for the benchmarks, each independent of the guiding classifier (a linear probe on
all-MiniLM-L6-v2 embeddings): VADER's lexicon, and a TF-IDF logistic regression on word n-grams.

The TF-IDF judge is trained on the build script's training split of the VADER sentences (valence > 0
against < 0, the guiding classifier's labels) and never sees the held-out prompts or sentences.
"""

from collections import Counter

from dglm_cli.datasets import held_out_split, vader_ground_truth
from dglm_cli.scoring import VaderScorer


def vader_rates(texts: list[str]) -> dict[str, float]:
    """The share of texts VADER labels positive, and negative."""
    counts = Counter(row["label"] for row in VaderScorer().score(texts))
    return {label: counts[label] / len(texts) for label in ("positive", "negative")}


class TfidfJudge:
    """p(positive) from word 1-2-grams; `rate` is the share of texts with p ≥ 0.5."""

    def __init__(self, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        _, train = held_out_split(vader_ground_truth(), seed)
        rated = [r for r in train if r.valence != 0]
        self.model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), LogisticRegression(C=10, max_iter=2000))
        self.model.fit([r.text for r in rated], [r.valence > 0 for r in rated])

    def rate(self, texts: list[str]) -> float:
        return float((self.model.predict_proba(texts)[:, 1] >= 0.5).mean())
