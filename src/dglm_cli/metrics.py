"""Text statistics for evaluating generations: pure functions, no models.

Definitions (all on whitespace tokens, `text.split()`, case and punctuation kept as written):

- distinct-n of a set of texts = |unique n-grams| / |n-grams|, where both counts run over the n-grams
  of every text in the set (n-grams never span two texts). `dglm score` computes it per prompt over
  that prompt's samples and averages over prompts, the protocol of the DGLM paper; the paper divides
  by the number of words, here the denominator is the number of n-grams, so 1.0 means no n-gram repeats.
- repetition rate of one text = 1 − |unique n-grams| / |n-grams| within that text (seq-rep-n of
  Welleck et al. 2019): the share of its n-grams that repeat an n-gram seen earlier in the same text.
  0 for a text without repeats; "a b a b a b" has bigrams ab, ba, ab, ba, ab, so 1 − 2/5 = 0.6.
- length = number of whitespace tokens.

Functions return None where a quantity is undefined (no n-grams, no values) instead of 0 or NaN, so
an empty continuation never passes for a perfectly diverse one.
"""

import math
import statistics
from collections.abc import Iterable, Sequence

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval
REPETITION_N = 2


def words(text: str) -> list[str]:
    return text.split()


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique n-grams / all n-grams, pooled over `texts`; None when they hold no n-gram."""
    unique, total = ngram_counts(texts, n)
    return len(unique) / total if total else None


def ngram_counts(texts: Iterable[str], n: int) -> tuple[set[tuple[str, ...]], int]:
    """(the set of distinct n-grams, the number of n-grams) over `texts`."""
    unique: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        grams = ngrams(words(text), n)
        unique.update(grams)
        total += len(grams)
    return unique, total


def repetition_rate(text: str, n: int = REPETITION_N) -> float | None:
    """Share of the text's n-grams that repeat an earlier one; None when it has no n-gram."""
    grams = ngrams(words(text), n)
    return 1 - len(set(grams)) / len(grams) if grams else None


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion (95% by default); None when trials == 0."""
    if trials == 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, free of rounding noise
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None
